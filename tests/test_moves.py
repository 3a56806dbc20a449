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
from click.testing import CliRunner

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.cli import main
from atomdb_migrate.renames import count_references
from atomdb_migrate.runner import Runner

A, B, C = "moves.a.Customer", "moves.b.Customer", "moves.c.Customer"


class Customer(VersionedModel):
    __model__ = C
    __version__ = 4

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
