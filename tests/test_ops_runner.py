"""The eager runner with steps of operations: on the server where it can, else on the client."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from atom.api import Int, Str
from bson import ObjectId

from atomdb_migrate import (
    MigrationRegistry,
    MissingDowngradeError,
    StepFailedError,
    VersionedModel,
    load_migrations,
    ops,
    register_step,
)
from atomdb_migrate.documents import copy_document
from atomdb_migrate.runner import Runner, RunOptions


class Article(VersionedModel):
    __model__ = "test_ops_runner.Article"
    __version__ = 4

    title = Str()
    status = Str()
    views = Int()
    words = Int()
    slug = Str()


def register(registry: MigrationRegistry) -> None:
    register_step(Article, 0, 1, lambda d: d.update(heading=d.pop("name", "")))
    register_step(
        Article,
        1,
        2,
        operations=[
            ops.rename_field("heading", "title"),
            ops.move_field("meta.status", "status"),
            ops.add_field("views", 0),
        ],
    )
    register_step(Article, 2, 3, lambda d: d.update(slug=d["title"].lower().replace(" ", "-")))
    register_step(Article, 3, 4, operations=[ops.convert("words", int)])


def oid(i: int) -> ObjectId:
    return ObjectId(f"{i:024x}")


def legacy(n: int) -> list[dict[str, Any]]:
    """Documents at every version from 0 to 3."""
    docs: list[dict[str, Any]] = []
    for i in range(n):
        version = i % 4
        doc: dict[str, Any] = {"_id": oid(i), "__model__": Article.__model__, "words": str(i)}
        if version == 0:
            doc.update(name=f"Post {i}", meta={"status": "draft", "k": i})
        elif version == 1:
            doc.update(heading=f"Post {i}", meta={"status": "live"}, __version__="1")
        elif version == 2:
            doc.update(title=f"Post {i}", status="live", views=i, __version__="2")
        else:
            doc.update(title=f"Post {i}", status="live", views=i, slug=f"post-{i}", __version__="3")
        docs.append(doc)
    return docs


async def expected(docs: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: await Article.upgrade_state(copy_document(d)) for d in docs}


async def stored(db: Any) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d async for d in db[Article.__model__].find()}


async def test_steps_of_operations_run_on_the_server(
    db: Any, backend: str, registry: MigrationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    register(registry)
    docs = legacy(40)
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    with caplog.at_level(logging.INFO, "atomdb_migrate"):
        report = await Runner(db, RunOptions(batch_size=7)).upgrade(Article)

    assert await stored(db) == await expected(docs)
    assert report.migrated == 40 and report.pending == 40
    if backend == "mongomock":
        assert report.server_steps == {}
    else:
        # 1 -> 2 changed the documents at 1 and those the client took from 0;
        # 3 -> 4 every document.
        assert report.server_steps == {"1 -> 2": 20, "3 -> 4": 40}
    again = await Runner(db).upgrade(Article)
    assert again.pending == 0 and again.server_steps == {}


async def test_the_client_path_gives_the_same_documents(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    register(registry)
    docs = legacy(24)
    eager, client = db[Article.__model__], db["client_path"]
    await eager.insert_many([copy_document(d) for d in docs])
    await client.insert_many([copy_document(d) for d in docs])
    await Runner(db).upgrade(Article)
    runner = Runner(db, RunOptions(server_side=False))
    db_client = _Renamed(db, {Article.__model__: "client_path"})
    runner.database = db_client
    report = await runner.upgrade(Article)
    assert report.server_steps == {}
    assert [d async for d in eager.find().sort("_id")] == [
        d async for d in client.find().sort("_id")
    ]


class _Renamed:
    """A database whose collection names are mapped: runs a model on another collection."""

    def __init__(self, db: Any, names: dict[str, str]) -> None:
        self.db, self.names = db, names

    def __getitem__(self, name: str) -> Any:
        return self.db[self.names.get(name, name)]

    async def list_collection_names(self) -> list[str]:
        return list(await self.db.list_collection_names())


async def test_a_value_that_does_not_convert_stops_the_run_naming_it(
    db: Any, registry: MigrationRegistry
) -> None:
    register(registry)
    docs = legacy(12)
    docs[5]["words"] = "many"
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    with pytest.raises(StepFailedError) as info:
        await Runner(db).upgrade(Article)
    assert f"_id={oid(5)!r}" in str(info.value) and "'many'" in str(info.value)
    after = await stored(db)
    assert after[oid(5)]["__version__"] != "4" and after[oid(5)]["words"] == "many"


async def test_continue_on_error_records_the_document_and_goes_on(
    db: Any, registry: MigrationRegistry
) -> None:
    register(registry)
    docs = legacy(12)
    docs[7]["words"] = "many"
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Article)
    assert report.failed == 1 and report.migrated == 11
    (failure,) = report.failures
    assert failure["_id"] == oid(7) and "'many'" in failure["error"]
    after = await stored(db)
    assert after[oid(7)]["__version__"] == "3" and after[oid(7)]["words"] == "many"
    assert all(d["__version__"] == "4" for i, d in after.items() if i != oid(7))


async def test_a_server_that_refuses_pipelines_falls_back_once(
    db: Any,
    backend: str,
    registry: MigrationRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if backend == "mongomock":
        pytest.skip("mongomock never runs the server form; the other test covers it")
    register(registry)
    # A stage no server knows, as an old server would refuse $setField.
    monkeypatch.setattr(
        ops.Operations, "server_updates", lambda self, query, to: [(query, [{"$noSuchStage": {}}])]
    )
    docs = legacy(16)
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    with caplog.at_level(logging.WARNING, "atomdb_migrate"):
        report = await Runner(db).upgrade(Article)
    assert report.server_steps == {}
    assert await stored(db) == await expected(docs)
    refused = [r for r in caplog.records if "refused a pipeline update" in r.getMessage()]
    assert len(refused) <= 1  # said once per process


async def test_a_dry_run_says_which_steps_would_run_on_the_server(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    register(registry)
    docs = legacy(8)
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Article)
    if backend != "mongomock":
        assert report.server_steps == {"1 -> 2": 4, "3 -> 4": 8}
    assert all(s["ok"] for s in report.samples), report.samples
    assert await stored(db) == {d["_id"]: d for d in docs}


async def test_downgrade_runs_the_derived_inverse_on_the_server(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    register_step(
        Article,
        3,
        4,
        operations=[ops.rename_field("title", "heading"), ops.add_field("views", 0)],
    )
    docs = [
        {"_id": i, "__model__": Article.__model__, "__version__": "3", "title": f"T{i}"}
        for i in range(10)
    ]
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    up = await Runner(db).upgrade(Article)
    down = await Runner(db).downgrade(Article, "3")
    assert await stored(db) == {d["_id"]: d for d in docs}
    if backend != "mongomock":
        assert up.server_steps == {"3 -> 4": 10} and down.server_steps == {"3 -> 4": 10}


async def test_a_failure_between_server_steps_is_counted_once(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    """A Python step between two server steps fails on one document: recorded once, at the end."""

    def label(doc: dict[str, Any]) -> None:
        if doc["name"] == "bad":
            raise ValueError("no label for that one")
        doc["heading"] = doc.pop("name")

    register_step(Article, 0, 1, operations=[ops.add_field("views", 0)])
    register_step(Article, 1, 2, label)
    register_step(Article, 2, 3, operations=[ops.rename_field("heading", "title")])
    register_step(Article, 3, 4, operations=[ops.add_field("words", 0)])
    docs = [{"_id": oid(i), "__model__": Article.__model__, "name": f"n{i}"} for i in range(9)]
    docs[4]["name"] = "bad"
    await db[Article.__model__].insert_many([copy_document(d) for d in docs])
    report = await Runner(db, RunOptions(continue_on_error=True, batch_size=4)).upgrade(Article)
    assert (report.migrated, report.failed) == (8, 1)
    assert [f["_id"] for f in report.failures] == [oid(4)]
    after = await stored(db)
    # On the server the first step ran; the client path runs the whole chain.
    assert after[oid(4)].get("__version__") == (None if backend == "mongomock" else "1")
    assert {d["__version__"] for i, d in after.items() if i != oid(4)} == {"4"}


# ----------------------------------------------------------------------
# A step's downgrade: its own function when it has one
# ----------------------------------------------------------------------
class Shelf(VersionedModel):
    __model__ = "test_ops_runner.Shelf"
    __version__ = 2

    n = Int()


def put_back(doc: dict[str, Any]) -> None:
    doc["old"] = str(doc.pop("n", ""))
    doc["undone_by"] = "function"


def bump(doc: dict[str, Any]) -> None:
    doc["n"] = int(doc.get("n", 0)) + 1


DOWNGRADE_CASES = {
    # operations, upgrade, downgrade -> who undoes the step (None: refused)
    "irreversible ops + downgrade": (
        [ops.rename_field("old", "n"), ops.convert("n", int)],
        None,
        put_back,
        "function",
    ),
    "reversible ops + downgrade": ([ops.rename_field("old", "n")], None, put_back, "function"),
    "ops + upgrade + downgrade": ([ops.rename_field("old", "n")], bump, put_back, "function"),
    "ops + upgrade": ([ops.rename_field("old", "n")], bump, None, None),
    "reversible ops": ([ops.rename_field("old", "n")], None, None, "operations"),
    "irreversible ops": ([ops.rename_field("old", "n"), ops.convert("n", int)], None, None, None),
}


@pytest.mark.parametrize("case", sorted(DOWNGRADE_CASES))
async def test_a_steps_own_downgrade_is_its_downgrade(
    db: Any, registry: MigrationRegistry, case: str
) -> None:
    operations, upgrade, downgrade, undone_by = DOWNGRADE_CASES[case]
    step = register_step(Shelf, 1, 2, upgrade, downgrade, operations=operations)
    await db[Shelf.__model__].insert_many([{"old": "7", "__version__": "1"} for _ in range(3)])
    await Runner(db).upgrade(Shelf)
    if undone_by is None:
        assert step.downgrade_fn is None and step.downgrade_reason
        with pytest.raises(MissingDowngradeError):
            await Runner(db).downgrade(Shelf, "1")
        return
    report = await Runner(db).downgrade(Shelf, "1")
    assert report.migrated == 3
    docs = [d async for d in db[Shelf.__model__].find({})]
    assert all(d["__version__"] == "1" and "n" not in d for d in docs)
    if undone_by == "function":
        assert all(d["undone_by"] == "function" and d["old"] for d in docs)
        assert report.server_steps == {}, "a function runs on the client"
    else:
        assert all("undone_by" not in d and d["old"] == "7" for d in docs)


def test_a_modules_downgrade_is_kept_beside_its_operations(
    tmp_path: Any, registry: MigrationRegistry
) -> None:
    (tmp_path / "0001_convert.py").write_text(
        '"""Convert."""\nfrom atomdb_migrate import ops\n'
        f'model = "{Shelf.__model__}"\nfrom_version = "1"\nto_version = "2"\n'
        'operations = [ops.rename_field("old", "n"), ops.convert("n", int)]\n\n'
        "def downgrade(doc):\n    doc['old'] = str(doc.pop('n'))\n"
    )
    (step,) = load_migrations(tmp_path)
    assert step.downgrade_fn is not None and step.downgrade_reason == ""
