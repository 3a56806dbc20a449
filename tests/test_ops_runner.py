"""The eager runner with steps of operations: on the server where it can, else on the client."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from atom.api import Instance, Int, Str, Typed, Value
from atomdb.base import JSONModel
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    MigrationRegistry,
    MissingDowngradeError,
    StepFailedError,
    VersionedModel,
    load_migrations,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.core.documents import copy_document
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.operations.paths import get_path


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


# ----------------------------------------------------------------------
# A field moved into an embedded model (issue 22, item 1)
# ----------------------------------------------------------------------
class Address(JSONModel):
    __model__ = "test_ops_runner.Address"

    street = Str()
    zip = Str()


class Customer(VersionedModel):
    """Version 2 reads the zip inside its address (an embedded model, often unset)."""

    __model__ = "test_ops_runner.Customer"
    __version__ = 2

    name = Str()
    address = Instance(Address)


ADDRESS_STATE = {"street": "Elm", "zip": "", "__model__": Address.__model__, "__ref__": 1}

#: The shapes atom-db stores an unset, a missing and a set address in.
MOVING: dict[str, dict[str, Any]] = {
    "null": {"name": "null", "zip": "55555", "address": None},
    "missing": {"name": "missing", "zip": "55556"},
    "set": {"name": "set", "zip": "55557", "address": dict(ADDRESS_STATE)},
}


def move_zip(registry: MigrationRegistry, *, schema: dict[str, Any] | None = None) -> None:
    register_step(Customer, 0, 1, operations=[])
    register_step(Customer, 1, 2, operations=[ops.move_field("zip", "address.zip")], schema=schema)


def named(name: str) -> ObjectId:
    return ObjectId(name.encode().ljust(12, b"_")[:12])


async def seed_customers(db: Any, shapes: dict[str, dict[str, Any]]) -> None:
    await db[Customer.__model__].insert_many(
        [{"_id": named(k), **copy_document(doc), "__version__": "1"} for k, doc in shapes.items()]
    )


async def restored(db: Any) -> dict[str, Customer]:
    found = {}
    async for doc in db[Customer.__model__].find():
        assert doc["__version__"] == "2", doc
        found[doc["name"]] = await Customer.restore(doc)
    return found


@pytest.mark.parametrize("server_side", [True, False])
async def test_a_field_moved_into_an_unset_embedded_model_is_kept(
    db: Any, registry: MigrationRegistry, server_side: bool
) -> None:
    move_zip(registry)
    await seed_customers(db, MOVING)
    report = await Runner(db, RunOptions(server_side=server_side)).upgrade(Customer)
    assert (report.migrated, report.failed) == (3, 0)
    objects = await restored(db)
    assert {k: (o.address.zip if o.address else None) for k, o in objects.items()} == {
        "null": "55555",
        "missing": "55556",
        "set": "55557",
    }
    stored_null = await db[Customer.__model__].find_one({"_id": named("null")})
    assert stored_null["address"] == {"__model__": Address.__model__, "zip": "55555"}
    assert "zip" not in stored_null


async def test_the_lazy_path_keeps_a_field_moved_into_an_unset_embedded_model(
    db: Any, registry: MigrationRegistry
) -> None:
    move_zip(registry)
    for key, doc in MOVING.items():
        obj = await Customer.restore({"_id": named(key), **copy_document(doc), "__version__": "1"})
        assert obj.address is not None and obj.address.zip == doc["zip"], key


class Client(VersionedModel):
    """Customer's shape one version later: step 1 -> 2 is no longer the last."""

    __model__ = "test_ops_runner.Client"
    __version__ = 3

    name = Str()
    address = Instance(Address)
    seen = Int()


async def test_a_step_below_the_head_knows_its_embedded_models_from_its_schema(
    registry: MigrationRegistry,
) -> None:
    schema = {"name": "Str", "address": {"__model__": Address.__model__, "zip": "Str"}}
    register_step(Client, 0, 1, operations=[])
    register_step(Client, 1, 2, operations=[ops.move_field("zip", "address.zip")], schema=schema)
    register_step(Client, 2, 3, operations=[ops.add_field("seen", 0)])
    doc = {"_id": 1, "zip": "7", "address": None, "__version__": "1"}
    upgraded = await Client.upgrade_state(doc)
    assert upgraded["address"] == {"__model__": Address.__model__, "zip": "7"}


async def test_without_a_schema_a_step_below_the_head_refuses_a_null_parent(
    registry: MigrationRegistry,
) -> None:
    """Nothing says what ``address`` is at version 2: null is not created, but refused."""
    register_step(Client, 0, 1, operations=[])
    register_step(Client, 1, 2, operations=[ops.move_field("zip", "address.zip")])
    register_step(Client, 2, 3, operations=[ops.add_field("seen", 0)])
    with pytest.raises(StepFailedError, match="address"):
        await Client.upgrade_state({"_id": 1, "zip": "7", "address": None, "__version__": "1"})


@pytest.mark.parametrize("server_side", [True, False])
async def test_a_value_that_cannot_go_where_it_is_moved_fails_its_document(
    db: Any, registry: MigrationRegistry, server_side: bool
) -> None:
    move_zip(registry)
    blocked = {"blocked": {"name": "blocked", "zip": "1", "address": "Main Street 5"}}
    await seed_customers(db, {**MOVING, **blocked})
    options = RunOptions(server_side=server_side, continue_on_error=True)
    report = await Runner(db, options).upgrade(Customer)
    assert (report.migrated, report.failed) == (3, 1)
    assert report.failures[0]["_id"] == named("blocked")
    assert "'address' holds 'Main Street 5'" in report.failures[0]["error"]
    left = await db[Customer.__model__].find_one({"_id": named("blocked")})
    assert left == {"_id": named("blocked"), **blocked["blocked"], "__version__": "1"}, "not bumped"


async def test_a_dry_run_counts_the_documents_a_step_would_refuse(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    move_zip(registry)
    blocked = {f"blocked{i}": {"name": f"b{i}", "zip": "1", "address": "x"} for i in range(3)}
    await seed_customers(db, {**MOVING, **blocked})
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Customer)
    failing = [s["_id"] for s in report.samples if not s["ok"]]
    assert sorted(failing) == sorted(named(k) for k in blocked), report.samples
    if backend != "mongomock":  # which runs no step on the server: the sample tells
        assert report.would_refuse == {"1 -> 2": 3}, "counted on the server, sample or not"
    assert await db[Customer.__model__].count_documents({"__version__": "1"}) == 6


@pytest.mark.parametrize(
    "query",
    [
        {"address.zip": "55555"},
        {"address.zip": {"$exists": True}},
        {"address.__model__": Address.__model__},
        {"address.__model__": {"$exists": False}},
        {"address": None},
        {"address": {"$type": "object"}},
        {"address.street": "Elm"},
        {"zip": {"$exists": True}},
    ],
    ids=repr,
)
async def test_version_aware_filters_see_the_embedded_models_a_move_creates(
    db: Any, backend: str, registry: MigrationRegistry, query: dict[str, Any]
) -> None:
    if backend == "mongomock":
        pytest.skip("the translated filters need $type 'null' and 'missing', which mongomock lacks")
    move_zip(registry)
    blocked = {"blocked": {"name": "blocked", "zip": "1", "address": "Main Street 5"}}
    await seed_customers(db, {**MOVING, **blocked, "no zip": {"name": "n", "address": None}})
    collection = db[Customer.__model__]
    before = await collection.count_documents(version_filter(Customer, query))
    await Runner(db, RunOptions(continue_on_error=True)).upgrade(Customer)
    assert before == await collection.count_documents(query)


# ----------------------------------------------------------------------
# The round trip: what an operation marks upgraded restores with every value
# it moved or kept (issue 22, the class of item 1)
# ----------------------------------------------------------------------
#: How many examples the round-trip property runs per path (raise it for a long run).
ROUND_TRIP_EXAMPLES = int(os.environ.get("ROUND_TRIP_EXAMPLES", "100"))


class Geo(JSONModel):
    __model__ = "test_ops_runner.Geo"

    lat = Value()


class Place(JSONModel):
    __model__ = "test_ops_runner.Place"

    zip = Value()
    geo = Instance(Geo)


class Shop(VersionedModel):
    __model__ = "test_ops_runner.Shop"
    __version__ = 2

    a = Value()
    b = Value()
    extra = Value()  # a plain document
    place = Instance(Place)  # an embedded model, often unset
    places = Value()  # a list of embedded models, never touched


#: The paths the model reads values at (the operations' paths).
LEAVES = ("a", "b", "extra.x", "extra.y", "place.zip", "place.geo.lat")

leaf_value = st.one_of(
    st.integers(-3, 3),
    st.text("xy", max_size=2),
    st.none(),
    st.lists(st.integers(0, 2), max_size=2),
)


def geo_state(lat: Any) -> dict[str, Any]:
    return {"lat": lat, "__model__": Geo.__model__, "__ref__": 7}


def place_state(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "__model__": Place.__model__, "__ref__": 9}


geo = st.one_of(st.none(), leaf_value.map(geo_state))
place = st.builds(place_state, st.fixed_dictionaries({}, optional={"zip": leaf_value, "geo": geo}))
shop_document = st.fixed_dictionaries(
    {},
    optional={
        "a": leaf_value,
        "b": leaf_value,
        "extra": st.one_of(
            st.none(),
            st.just("text"),
            st.fixed_dictionaries({}, optional={"x": leaf_value, "y": leaf_value}),
        ),
        "place": st.one_of(st.none(), st.just([]), place),
        "places": st.lists(place, max_size=2),
    },
)


def two_leaves(make: Any) -> Any:
    return (
        st.tuples(st.sampled_from(LEAVES), st.sampled_from(LEAVES))
        .filter(lambda p: not (p[0].startswith(p[1]) or p[1].startswith(p[0])))
        .map(lambda p: make(*p))
    )


shop_operation = st.one_of(
    two_leaves(ops.move_field),
    two_leaves(ops.copy_field),
    # (a bare new name stays in the old one's document: only dotted ones here)
    two_leaves(lambda s, d: ops.rename_field(s, d) if "." in d or "." not in s else None).filter(
        lambda op: op is not None
    ),
    st.builds(ops.add_field, st.sampled_from(LEAVES), leaf_value),
    st.builds(ops.set_default_where_missing, st.sampled_from(LEAVES), leaf_value),
    st.builds(ops.remove_field, st.sampled_from(LEAVES)),
)


def without_refs(value: Any) -> Any:
    """A stored value as the object gives it back: atom-db's ``__ref__`` is made anew."""
    if isinstance(value, dict):
        return {k: without_refs(v) for k, v in value.items() if k != "__ref__"}
    if isinstance(value, list):
        return [without_refs(v) for v in value]
    return value


def held(obj: Any, path: str) -> Any:
    """The value the object holds at a path, as it would store it (MISSING: none)."""
    current = obj
    for name in path.split("."):
        if current is None or isinstance(current, (str, int, list)):
            return ops.MISSING
        current = (
            current.get(name, ops.MISSING) if isinstance(current, dict) else getattr(current, name)
        )
        if current is ops.MISSING:
            return ops.MISSING
    return without_refs(Shop.serializer.flatten(current))


def holds(got: Any, want: Any) -> bool:
    """Whether a value the object gives back holds every stored value of `want` (the
    object adds the fields a document left out, at their defaults)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and holds(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(holds(g, w) for g, w in zip(got, want, strict=True))
        )
    return type(got) is type(want) and bool(got == want)


def check_round_trip(
    operations: list[ops.Operation], before: dict[str, Any], stored: dict[str, Any], obj: Any
) -> None:
    """`stored` is `before` after the operations (or as it was, refused): `obj`, restored
    from it, holds each value the operations moved there or kept."""
    after = copy_document(before)
    models = {("place",): Place.__model__, ("place", "geo"): Geo.__model__}
    try:
        ops.Operations(operations, embedded=models)(after)
    except ops.OperationError:
        assert stored == before, "a refused document is left as it was"
        return
    assert stored["__version__"] == "2"
    where = (operations, before, stored)
    for path in (*LEAVES, "extra", "places"):
        value = get_path(after, path.split("."))
        if value is not ops.MISSING:
            assert holds(held(obj, path), without_refs(value)), (path, *where)
    last = operations[-1]
    if isinstance(last, ops.MoveField | ops.CopyField):
        moved = get_path(before, last.src_parts)
        if moved is not ops.MISSING and len(operations) == 1:
            assert holds(held(obj, last.dst), without_refs(moved)), (last.dst, *where)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", ["lazy", "client", "server"])
@settings(max_examples=ROUND_TRIP_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    operations=st.lists(shop_operation, min_size=1, max_size=2),
    docs=st.lists(shop_document, min_size=1, max_size=5),
)
async def test_what_an_operation_upgrades_restores_with_every_value_it_moved_or_kept(
    db: Any,
    backend: str,
    path: str,
    operations: list[ops.Operation],
    docs: list[dict[str, Any]],
) -> None:
    if path == "server" and backend == "mongomock":
        pytest.skip("mongomock runs no update pipeline: the client path covers it")
    collection = db[Shop.__model__]
    with MigrationRegistry.instance().isolated():
        register_step(Shop, 0, 1, operations=[])
        register_step(Shop, 1, 2, operations=operations)
        befores = [{**d, "_id": oid(i), "__version__": "1"} for i, d in enumerate(docs)]
        await collection.delete_many({})
        if path == "lazy":
            for before in befores:
                try:
                    obj = await Shop.restore(copy_document(before), force=True)
                    upgraded = await Shop.upgrade_state(copy_document(before))
                except StepFailedError:
                    obj, upgraded = None, before
                check_round_trip(operations, before, upgraded, obj)
            return
        await collection.insert_many([copy_document(d) for d in befores])
        options = RunOptions(server_side=path == "server", continue_on_error=True)
        await Runner(db, options).upgrade(Shop)
        found = {d["_id"]: d async for d in collection.find()}
        for before in befores:
            stored = found[before["_id"]]
            refused = stored["__version__"] == "1"  # restoring it would fail its step again
            obj = None if refused else await Shop.restore(copy_document(stored), force=True)
            check_round_trip(operations, before, stored, obj)


class Flat(VersionedModel):
    """Version 2 reads the zip at the top; version 1 read it inside its address."""

    __model__ = "test_ops_runner.Flat"
    __version__ = 2

    zip = Str()
    address = Instance(Address)


@pytest.mark.parametrize("server_side", [True, False])
async def test_a_downgrade_moving_a_value_back_into_an_embedded_model_creates_it(
    db: Any, registry: MigrationRegistry, server_side: bool
) -> None:
    """The derived inverse knows the embedded models at the step's from_version from the
    schema of the step arriving there."""
    v1 = {"address": {"__model__": Address.__model__, "street": "Str", "zip": "Str"}}
    register_step(Flat, 0, 1, operations=[], schema=v1)
    register_step(Flat, 1, 2, operations=[ops.move_field("address.zip", "zip")])
    await db[Flat.__model__].insert_many(
        [{"_id": named(k), "zip": "9", "address": None, "__version__": "2"} for k in ("a", "b")]
    )
    report = await Runner(db, RunOptions(server_side=server_side)).downgrade(Flat, "1")
    assert (report.migrated, report.failed) == (2, 0)
    async for doc in db[Flat.__model__].find():
        assert doc["address"] == {"__model__": Address.__model__, "zip": "9"} and "zip" not in doc


@pytest.mark.parametrize("make", [ops.add_field, ops.set_default_where_missing])
@pytest.mark.parametrize(
    "query",
    [
        {"address.zip": ""},
        {"address.zip": {"$exists": False}},
        {"address": None},
        {"address.__model__": {"$exists": True}},
    ],
    ids=repr,
)
async def test_version_aware_filters_see_a_default_left_out_of_an_unset_embedded_model(
    db: Any, backend: str, registry: MigrationRegistry, query: dict[str, Any], make: Any
) -> None:
    if backend == "mongomock":
        pytest.skip("the translated filters need $type 'null' and 'missing', which mongomock lacks")
    register_step(Customer, 0, 1, operations=[])
    register_step(Customer, 1, 2, operations=[make("address.zip", "")])
    shapes = {
        "null": {"name": "n", "address": None},
        "missing": {"name": "m"},
        "set": {"name": "s", "address": {"__model__": Address.__model__, "street": "Elm"}},
        "zip": {"name": "z", "address": {"__model__": Address.__model__, "zip": "1"}},
    }
    await seed_customers(db, shapes)
    collection = db[Customer.__model__]
    before = await collection.count_documents(version_filter(Customer, query))
    await Runner(db).upgrade(Customer)
    assert before == await collection.count_documents(query)


async def test_assert_upgrades_sees_the_moved_field_in_its_embedded_model(
    registry: MigrationRegistry,
) -> None:
    from atomdb_migrate.testing import assert_upgrades

    move_zip(registry)
    for legacy in ({"zip": "5", "address": None}, {"zip": "5"}):
        await assert_upgrades(
            Customer,
            {**legacy, "name": "a", "__version__": "1"},
            {"name": "a", "address": {"__model__": Address.__model__, "zip": "5"}},
        )
    with pytest.raises(StepFailedError, match="'address' holds 'Main St'"):
        await assert_upgrades(Customer, {"zip": "5", "address": "Main St", "__version__": "1"})


def test_the_dry_run_says_how_many_documents_a_server_step_would_refuse(project: Any) -> None:
    (project.path / "migrations" / "0002_add_tier.py").write_text(
        '"""Tier moves into the profile."""\n'
        "from atomdb_migrate import ops\n"
        'model = "clidemo.Customer"\nfrom_version = "2"\nto_version = "3"\n'
        'operations = [ops.move_field("level", "profile.tier")]\n'
    )
    project.seed(3, version="2", level="gold", profile={"x": 1})
    project.seed(2, version="2", level="gold", profile="in the way")
    result = project.invoke("upgrade", "--dry-run", "--sample", "0")
    assert result.exit_code == 6, result.output
    assert "step 2 -> 3: 5 documents (on the server); it would refuse 2" in result.output
    assert "2 documents would fail a step on the server" in result.output
    assert project.versions() == {"2": 5}


# ----------------------------------------------------------------------
# A path through a reference: nothing set inside one is ever read
# ----------------------------------------------------------------------
class Owner(VersionedModel):
    __model__ = "test_ops_runner.Owner"
    __version__ = 1

    nick = Str()


class Pet(VersionedModel):
    """Version 2 was meant to keep the nick "inside" the owner, a reference."""

    __model__ = "test_ops_runner.Pet"
    __version__ = 2

    name = Str()
    owner = Typed(Owner)
    address = Instance(Address)


#: The shapes atom-db stores a reference in: set (a stub naming the owner), unset, left out.
OWNER_ID = ObjectId("0123456789ab0123456789ab")
OWNED: dict[str, dict[str, Any]] = {
    "set": {
        "name": "set",
        "nick": "Rex's",
        "owner": {"__model__": Owner.__model__, "__ref__": 3, "_id": OWNER_ID},
    },
    "null": {"name": "null", "nick": "Tom's", "owner": None},
    "missing": {"name": "missing", "nick": "Kit's"},
    "no nick": {"name": "no nick", "owner": None},
}


@pytest.mark.parametrize("path", ["lazy", "client", "server"])
async def test_a_value_moved_into_a_reference_fails_its_document(
    db: Any, backend: str, registry: MigrationRegistry, path: str
) -> None:
    """atom-db restores a reference from the referenced model's collection: a value
    set inside the stub is never read (the next save drops it), and a stub created
    for it holds no ``_id`` and restores as nothing. The document is refused, as
    for any value in the way; a default is not set there."""
    if path == "server" and backend == "mongomock":
        pytest.skip("mongomock runs no update pipeline: the client path covers it")
    register_step(Pet, 0, 1, operations=[])
    register_step(
        Pet,
        1,
        2,
        operations=[ops.move_field("nick", "owner.nick"), ops.add_field("owner.seen", 0)],
    )
    await db[Owner.__model__].insert_one({"_id": OWNER_ID, "nick": "Ann", "__version__": "1"})
    docs = [{"_id": named(k), **d, "__version__": "1"} for k, d in OWNED.items()]
    if path == "lazy":
        for doc in docs:
            if "nick" in doc:
                with pytest.raises(StepFailedError, match="'owner' holds a reference"):
                    await Pet.upgrade_state(copy_document(doc))
            else:
                assert await Pet.upgrade_state(copy_document(doc)) == {**doc, "__version__": "2"}
        return
    await db[Pet.__model__].insert_many([copy_document(d) for d in docs])
    options = RunOptions(server_side=path == "server", continue_on_error=True)
    report = await Runner(db, options).upgrade(Pet)
    assert (report.migrated, report.failed) == (1, 3), report.failures
    found = {d["_id"]: d async for d in db[Pet.__model__].find()}
    for doc in docs:
        if "nick" in doc:
            assert found[doc["_id"]] == doc, "left as it was, at its version"
        else:
            assert found[doc["_id"]] == {**doc, "__version__": "2"}, "no default in a reference"


async def test_a_dry_run_counts_the_documents_a_move_into_a_reference_would_refuse(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    if backend == "mongomock":
        pytest.skip("mongomock runs no step on the server: the sample covers it")
    register_step(Pet, 0, 1, operations=[])
    register_step(Pet, 1, 2, operations=[ops.move_field("nick", "owner.nick")])
    await db[Pet.__model__].insert_many(
        [{"_id": named(k), **d, "__version__": "1"} for k, d in OWNED.items()]
    )
    report = await Runner(db, RunOptions(dry_run=True, sample=0)).upgrade(Pet)
    assert report.would_refuse == {"1 -> 2": 3}


@pytest.mark.parametrize(
    "query",
    [{"owner.nick": "Kit's"}, {"owner.nick": "Rex's"}, {"nick": {"$exists": True}}],
    ids=repr,
)
async def test_version_aware_filters_see_a_move_into_a_reference_refused(
    db: Any, backend: str, registry: MigrationRegistry, query: dict[str, Any]
) -> None:
    if backend == "mongomock":
        pytest.skip("the translated filters need $type 'null' and 'missing', which mongomock lacks")
    register_step(Pet, 0, 1, operations=[])
    register_step(Pet, 1, 2, operations=[ops.move_field("nick", "owner.nick")])
    await db[Pet.__model__].insert_many(
        [{"_id": named(k), **d, "__version__": "1"} for k, d in OWNED.items()]
    )
    collection = db[Pet.__model__]
    before = await collection.count_documents(version_filter(Pet, query))
    await Runner(db, RunOptions(continue_on_error=True)).upgrade(Pet)
    assert before == await collection.count_documents(query)
