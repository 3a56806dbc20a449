"""A model moved twice (A -> B -> C) keeps every step written under each of its names.

Steps name the model as it was when they were written: 1 -> 2 under A, the
first move (2 -> 3) under B, the second (3 -> 4) under C. Documents sit at
every version, in the collections of all three names, and other
collections hold references under all three names, nested in documents and
lists. Whatever order the steps register in, the lazy path, the runner,
``check``, ``status`` and ``history`` see one model with one chain.

"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from pathlib import Path
from typing import Any

import pytest
from atom.api import Instance, Int, List, Str
from atomdb.nosql import NoSQLModel
from bson import ObjectId
from click.testing import CliRunner

from atomdb_migrate import (
    MigrationRegistry,
    MissingDowngradeError,
    VersionedModel,
    ops,
    register_step,
)
from atomdb_migrate.cli.main import main
from atomdb_migrate.engine.renames import count_references
from atomdb_migrate.engine.runner import Runner, RunOptions

A, B, C = "moves.a.Customer", "moves.b.Customer", "moves.c.Customer"


class Customer(VersionedModel):
    __model__ = C
    __version__ = 4
    __base_version__ = 1  # its chain starts at 1

    first = Str()
    last = Str()
    visits = Int()


class Order(NoSQLModel):
    """Unversioned: its references restore through atom-db's own serializer."""

    __model__ = "moves.Order"

    number = Int()
    customer = Instance(Customer)
    cc = List(Instance(Customer))


def split(doc: dict[str, Any]) -> None:
    doc["first"], _, doc["last"] = doc.pop("name", "").partition(" ")


STEPS = {
    "a": lambda: register_step(A, 1, 2, split),
    "b": lambda: register_step(B, 2, 3, operations=[ops.rename_model(A, B)]),
    "c": lambda: register_step(
        C, 3, 4, operations=[ops.rename_model(B, C), ops.set_default_where_missing("visits", 0)]
    ),
}


@pytest.fixture(params=["".join(p) for p in itertools.permutations("abc")])
def chain(request: pytest.FixtureRequest, registry: MigrationRegistry) -> MigrationRegistry:
    for name in request.param:
        STEPS[name]()
    return registry


def ref(name: str, i: int) -> dict[str, Any]:
    return {"_id": i, "__ref__": i, "__model__": name}


async def seed(db: Any) -> None:
    """Customers 0-5 at versions 1 to 4 under the three names; orders referring to them."""
    await db[A].insert_many(
        [
            {"_id": 0, "__model__": A, "__version__": "1", "name": "Ada Lovelace"},
            {"_id": 1, "__model__": A, "__version__": "2", "first": "Alan", "last": "Turing"},
        ]
    )
    await db[B].insert_many(
        [
            {"_id": 2, "__model__": B, "__version__": "3", "first": "Grace", "last": "Hopper"},
            {"_id": 3, "__model__": B, "__version__": "2", "first": "Edsger", "last": "D"},
        ]
    )
    await db[C].insert_many(
        [
            {"_id": 4, "__model__": C, "__version__": "4", "first": "Barbara", "last": "L"},
            {"_id": 5, "__model__": C, "__version__": "3", "first": "Donald", "last": "K"},
        ]
    )
    await db["moves.Order"].insert_many(
        [
            {"_id": 10, "number": 10, "customer": ref(A, 0), "cc": [ref(B, 2), ref(C, 4)]},
            {"_id": 11, "number": 11, "customer": ref(B, 3), "cc": [ref(A, 1)]},
            {"_id": 12, "number": 12, "customer": ref(C, 5), "cc": []},
        ]
    )
    await db["audit"].insert_one({"_id": 1, "deep": {"list": [[ref(A, 0)], {"x": ref(B, 2)}]}})


EXPECTED = {
    0: ("Ada", "Lovelace"),
    1: ("Alan", "Turing"),
    2: ("Grace", "Hopper"),
    3: ("Edsger", "D"),
    4: ("Barbara", "L"),
    5: ("Donald", "K"),
}


def test_every_name_resolves_to_the_model(chain: MigrationRegistry) -> None:
    assert chain.resolve(A) == chain.resolve(B) == C
    assert chain.former_names(Customer) == [B, A], "the most recent first"
    assert [s.to_version for s in chain.graph(Customer).steps] == ["2", "3", "4"]
    assert [s.to_version for s in chain.graph(A).steps] == ["2", "3", "4"]
    assert [p for p in chain.problems() if p.model in (A, B, C)] == []
    assert chain.model(A) is Customer


async def test_reads_before_the_upgrade(db: Any, chain: MigrationRegistry) -> None:
    await seed(db)
    for number, ids in ((10, [0, 2, 4]), (11, [3, 1]), (12, [5])):
        Order.objects.cache.clear()
        Customer.objects.cache.clear()
        order = await Order.restore(await db["moves.Order"].find_one({"number": number}))
        customers = [order.customer, *order.cc]
        assert all(type(c) is Customer for c in customers)
        for c, i in zip(customers, ids, strict=True):
            await c.load()
            assert (c.first, c.last) == EXPECTED[i], i


async def test_a_customer_deleted_before_the_upgrade_stays_deleted(
    db: Any, chain: MigrationRegistry
) -> None:
    """Read through references under A and B (the first saved by the new code first,
    under C); deleted: under every name, and the upgrade's merges bring neither back."""
    ada, grace, kept = ObjectId(), ObjectId(), ObjectId()
    await db[A].insert_one({"_id": ada, "__model__": A, "__version__": "2", "first": "Ada"})
    await db[B].insert_many(
        [
            {"_id": grace, "__model__": B, "__version__": "3", "first": "Grace"},
            {"_id": kept, "__model__": B, "__version__": "3", "first": "Kept"},
        ]
    )
    await db["moves.Order"].insert_one(
        {
            "_id": 10,
            "number": 10,
            "customer": ref(A, 0) | {"_id": ada},
            "cc": [ref(B, 1) | {"_id": grace}],
        }
    )
    Customer.objects.cache.clear()
    order = await Order.restore(await db["moves.Order"].find_one({"number": 10}))
    first, second = order.customer, order.cc[0]
    for c in (first, second):
        await c.load()
    assert [first.first, second.first] == ["Ada", "Grace"]
    first.first = "Ada2"
    await first.save()
    assert await db[C].find_one({"_id": ada}) is not None, "saved under C beside A's copy"
    await first.delete()
    await second.delete()
    await Runner(db).upgrade(Customer)
    assert [d["_id"] async for d in db[C].find({})] == [kept]
    assert sorted(await db.list_collection_names()) == sorted([C, "moves.Order"])


async def test_the_upgrade_moves_everything_to_the_last_name(
    db: Any, chain: MigrationRegistry
) -> None:
    await seed(db)
    report = await Runner(db).upgrade(Customer)
    names = await db.list_collection_names()
    assert A not in names and B not in names
    docs = {d["_id"]: d async for d in db[C].find({})}
    assert sorted(docs) == list(range(6))
    for i, doc in docs.items():
        assert (doc["__model__"], doc["__version__"]) == (C, "4")
        assert (doc["first"], doc["last"]) == EXPECTED[i]
        assert doc.get("visits") == (None if i == 4 else 0), "4 was stored at 4"
    assert {r.old for r in report.renames} == {A, B}
    for old in (A, B):
        assert await count_references(db, old, C) == 0
    orders = [d async for d in db["moves.Order"].find({}).sort("_id")]
    assert [o["customer"]["__model__"] for o in orders] == [C, C, C]
    assert all(r["__model__"] == C for o in orders for r in o["cc"])
    audit = await db["audit"].find_one({})
    assert audit["deep"]["list"][0][0]["__model__"] == C
    assert audit["deep"]["list"][1]["x"]["__model__"] == C
    again = await Runner(db).upgrade(Customer)
    assert again.pending == 0 and all(r.references == 0 for r in again.renames)


async def test_references_are_rewritten_when_nothing_is_pending(
    db: Any, chain: MigrationRegistry
) -> None:
    """The new code already saved every customer under the last name; references in
    other collections still name the former ones."""
    await db[C].insert_many(
        [
            {"_id": i, "__model__": C, "__version__": "4", "first": "x", "last": "y"}
            for i in range(6)
        ]
    )
    await db["moves.Order"].insert_many(
        [{"_id": 10, "customer": ref(A, 0), "cc": [ref(B, 1), ref(A, 2)]}]
    )
    assert await count_references(db, A, C) == 1 and await count_references(db, B, C) == 1
    report = await Runner(db).upgrade(Customer)
    assert report.pending == 0
    assert sum(r.references for r in report.renames) == 2
    assert await count_references(db, A, C) == 0 and await count_references(db, B, C) == 0
    order = await db["moves.Order"].find_one({})
    assert [r["__model__"] for r in [order["customer"], *order["cc"]]] == [C, C, C]


async def test_an_upgrade_short_of_a_move_leaves_the_move_for_later(
    db: Any, chain: MigrationRegistry
) -> None:
    """``--to`` a version before a ``rename_model`` step reads the collection of the
    name the model had then, and moves nothing the later steps move."""
    await seed(db)
    before = await db.list_collection_names()
    report = await Runner(db).upgrade(Customer, to="2")
    assert (report.migrated, report.renames) == (1, [])
    assert sorted(await db.list_collection_names()) == sorted(before)
    assert await count_references(db, A, C) == 3, "references to A are left for the move"
    assert {d["__version__"] for d in await db[A].find({}).to_list(None)} == {"2"}
    report = await Runner(db).upgrade(Customer, to="3")
    assert [(r.old, r.new, r.collection) for r in report.renames] == [(A, B, "merged")]
    assert report.migrated == 3, "0 and 1 from A, and 3, at 2 in B"
    assert A not in await db.list_collection_names()
    assert await count_references(db, A, C) == 0 and await count_references(db, B, C) == 3
    docs = {d["_id"]: d["__version__"] async for d in db[B].find({})}
    assert docs == {0: "3", 1: "3", 2: "3", 3: "3"}
    assert {d["_id"] async for d in db[C].find({})} == {4, 5}, "C is the next move's"
    await Runner(db).upgrade(Customer)
    docs = {d["_id"]: d async for d in db[C].find({})}
    assert sorted(docs) == list(range(6))
    assert all((d["first"], d["last"]) == EXPECTED[i] for i, d in docs.items())


async def test_a_dry_run_counts_the_documents_of_every_name(
    db: Any, chain: MigrationRegistry
) -> None:
    await seed(db)
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Customer)
    assert report.by_version == {"1": 1, "2": 2, "3": 2}, "A, B and C: 5 pending"
    assert {(r.old, r.collection) for r in report.renames} == {(A, "merge"), (B, "merge")}
    await db.drop_collection(C)
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Customer)
    assert report.by_version == {"1": 1, "2": 2, "3": 1}
    assert [(r.old, r.collection) for r in report.renames] == [(B, "rename"), (A, "merge")]
    assert sorted(await db.list_collection_names()) == sorted([A, B, "moves.Order", "audit"])


# ----------------------------------------------------------------------
# Away and back: A -> B -> A
# ----------------------------------------------------------------------
HOME, AWAY = "moves.home.Item", "moves.away.Item"


class Item(VersionedModel):
    __model__ = HOME
    __version__ = 4

    first = Str()


@pytest.fixture
def away_and_back(registry: MigrationRegistry) -> MigrationRegistry:
    register_step(HOME, 1, 2, lambda doc: doc.update(first=doc.pop("name", "")))
    register_step(AWAY, 2, 3, operations=[ops.rename_model(HOME, AWAY)])
    register_step(HOME, 3, 4, operations=[ops.rename_model(AWAY, HOME)])
    return registry


async def test_of_two_copies_the_one_at_the_higher_version_wins(
    db: Any, away_and_back: MigrationRegistry
) -> None:
    """The model moved away and back: the code in between saved newer copies under
    the other name, while stale ones stayed under the first."""
    assert away_and_back.former_names(Item) == [AWAY]
    await db[HOME].insert_many(
        [
            {"_id": 1, "__version__": "2", "first": "stale"},
            {"_id": 2, "__version__": "4", "first": "current"},
            {"_id": 3, "__version__": "1", "name": "legacy"},
        ]
    )
    await db[AWAY].insert_many(
        [
            {"_id": 1, "__version__": "3", "first": "newer"},
            {"_id": 2, "__version__": "3", "first": "older"},
            {"_id": 4, "__version__": "3", "first": "only away"},
        ]
    )
    report = await Runner(db).upgrade(Item)
    (rename,) = report.renames
    assert (rename.collection, rename.moved, rename.replaced, rename.discarded) == (
        "merged",
        1,
        1,
        1,
    )
    docs = {d["_id"]: (d["__version__"], d["first"]) async for d in db[HOME].find({})}
    assert docs == {
        1: ("4", "newer"),
        2: ("4", "current"),
        3: ("4", "legacy"),
        4: ("4", "only away"),
    }
    assert AWAY not in await db.list_collection_names()


# ----------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------
MODELS = """
from atom.api import Instance, Int, List, Str
from atomdb.nosql import NoSQLModel
from atomdb_migrate import VersionedModel

class Customer(VersionedModel):
    __model__ = "moves.c.Customer"
    __version__ = 4
    __base_version__ = 1
    first = Str()
    last = Str()
    visits = Int()

class Order(NoSQLModel):
    __model__ = "moves.Order"
    number = Int()
    customer = Instance(Customer)
    cc = List(Instance(Customer))
"""

MODULES = {
    "0001_split.py": f'''
        "Split the name."
        model = "{A}"
        from_version = "1"
        to_version = "2"

        def upgrade(doc):
            doc["first"], _, doc["last"] = doc.pop("name", "").partition(" ")
    ''',
    "0002_move_to_b.py": f'''
        "Moved to b."
        from atomdb_migrate import ops
        model = "{B}"
        from_version = "2"
        to_version = "3"
        operations = [ops.rename_model("{A}", "{B}")]
    ''',
    "0003_move_to_c.py": f'''
        "Moved to c."
        from atomdb_migrate import ops
        model = "{C}"
        from_version = "3"
        to_version = "4"
        operations = [ops.rename_model("{B}", "{C}"), ops.set_default_where_missing("visits", 0)]
    ''',
}


def test_the_command_sees_one_model_with_one_chain(
    tmp_path: Path, secantus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymongo import AsyncMongoClient, MongoClient

    monkeypatch.setattr(MigrationRegistry, "_instance", MigrationRegistry())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "moves_models_cli.py").write_text(MODELS)
    (tmp_path / "migrations").mkdir()
    for name, text in MODULES.items():
        (tmp_path / "migrations" / name).write_text(textwrap.dedent(text).lstrip())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.atomdb-migrate]\nmodels = ["moves_models_cli"]\nmigrations = "migrations"\n'
        "timeout = 5\n"
    )

    async def seeded() -> None:
        client = AsyncMongoClient(secantus_url)
        await seed(client["moves_cli"])
        await client.close()

    asyncio.run(seeded())
    env = {"MONGO_URL": f"{secantus_url}/moves_cli", "ATOMDB_MIGRATE_URL": ""}

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    try:
        assert cli("check").output == "ok\n"
        status = cli("status").output
        assert "moves.c.Customer: code at 4; stored 1: 1, 2: 2, 3: 2, 4: 1; 5 pending" in status
        assert (
            f"2 still under former name {A}" in status
            and f"2 still under former name {B}" in status
        )
        for name in (A, B, "Customer"):
            by_name = cli("status", name)
            assert by_name.exit_code == 0, by_name.output
            assert by_name.output.startswith("moves.c.Customer: code at 4"), name
        dry = cli("upgrade", B, "--dry-run", "--sample", "0")
        assert dry.exit_code == 0, dry.output
        assert "moves.c.Customer: 5 documents not at version 4 (dry run)" in dry.output
        history = cli("history").output
        assert "1 -> 2  Split the name." in history and "3 -> 4  Moved to c." in history
        gate = cli("check", "--pending")
        assert gate.exit_code == 1 and f"under its former name '{A}'" in gate.output
        done = cli("upgrade")
        assert done.exit_code == 0, done.output
        assert "moves.c.Customer: 5 upgraded to 4" in done.output
        assert cli("check", "--pending").exit_code == 0
    finally:
        with MongoClient(secantus_url) as client:
            client.drop_database("moves_cli")


# ----------------------------------------------------------------------
# A downgrade past a move
# ----------------------------------------------------------------------
async def everything(db: Any) -> dict[str, list[Any]]:
    return {name: await db[name].find().to_list(None) for name in await db.list_collection_names()}


def without_visits(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "visits"}


@pytest.mark.parametrize("with_function", [False, True])
async def test_a_downgrade_past_the_second_move_refuses_before_writing(
    db: Any, registry: MigrationRegistry, with_function: bool
) -> None:
    # A downgrade function changes documents only: it would leave them, and
    # every reference to them, under the new name with an older version, in
    # a collection the older code does not read. The refusal neither
    # suggests one nor accepts one.
    STEPS["a"]()
    STEPS["b"]()
    register_step(
        C,
        3,
        4,
        operations=[ops.rename_model(B, C), ops.set_default_where_missing("visits", 0)],
        downgrade=without_visits if with_function else None,
    )
    await seed(db)
    await Runner(db).upgrade(Customer)
    before = await everything(db)
    with pytest.raises(MissingDowngradeError) as raised:
        await Runner(db).downgrade(Customer, "3")
    message = str(raised.value)
    assert "rename_model" in message and "with a new step" in message, message
    assert "give the step a downgrade function" not in message, message
    assert "write a downgrade function" not in message, message
    if with_function:
        assert "changes documents only" in message, message
    assert await everything(db) == before
