"""A model moved to another module keeps its data: restored before ``upgrade``, moved by it.

Old and new code run as separate processes, as in a deploy: the old code
stores customers (which refer to each other) and orders referring to them;
the new code has moved ``Customer`` to another module and adds a step with
``ops.rename_model``.

"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from atom.api import Instance, Str
from atomdb.nosql import NoSQLModel
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.errors import AutoReconnect

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.driver.mongo import batches
from atomdb_migrate.engine import renames
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.model.versioned import find_document

from .project import ROOT

OLD = "oldshop.Customer"
NEW = "shop.accounts.Customer"

OLD_CODE = {
    "oldshop.py": """
        from atom.api import ForwardInstance, Int, Str
        from atomdb_migrate import VersionedModel

        class Customer(VersionedModel):
            __version__ = 1
            name = Str()
            referrer = ForwardInstance(lambda: Customer)
    """,
    "orders.py": """
        from atom.api import Instance, Int, List
        from atomdb.nosql import NoSQLModel
        from oldshop import Customer

        class Order(NoSQLModel):
            number = Int()
            customer = Instance(Customer)
            cc = List(Instance(Customer))
    """,
    "write.py": """
        import asyncio, sys
        from atomdb.nosql import NoSQLModelManager
        from pymongo import AsyncMongoClient
        from oldshop import Customer
        from orders import Order

        async def main(url, name, n):
            client = AsyncMongoClient(url)
            NoSQLModelManager.instance().database = client[name]
            # Odd customers refer to no one; each even one to the next odd one.
            # (No order reaches a customer twice: atom-db would store the
            # second reference without its _id.)
            odd = [Customer(name=f"C{i}") for i in range(1, n, 2)]
            even = [Customer(name=f"C{i}", referrer=r) for i, r in zip(range(0, n, 2), odd)]
            for c in odd + even:
                await c.save()
            k = len(even)
            for i in range(2 * n):
                cc = [even[(i + 1) % k]] if i % 2 else []
                await Order(number=i, customer=even[i % k], cc=cc).save()
            await client.close()

        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """,
}

NEW_CODE = {
    "shop/__init__.py": "",
    "shop/accounts.py": """
        from atom.api import ForwardInstance, Str
        from atomdb_migrate import VersionedModel

        class Customer(VersionedModel):
            __version__ = 2
            name = Str()
            referrer = ForwardInstance(lambda: Customer)
    """,
    "orders.py": """
        from atom.api import Instance, Int, List
        from atomdb.nosql import NoSQLModel
        from shop.accounts import Customer

        class Order(NoSQLModel):
            number = Int()
            customer = Instance(Customer)
            cc = List(Instance(Customer))
    """,
    "migrations/0001_move_customer.py": f"""
        "Customer moved from oldshop to shop.accounts."
        from atomdb_migrate import ops

        model = "{NEW}"
        from_version = "1"
        to_version = "2"
        operations = [ops.rename_model("{OLD}", "{NEW}")]
    """,
    "read.py": """
        import asyncio, json, sys
        from atomdb.nosql import NoSQLModelManager
        from pymongo import AsyncMongoClient
        from atomdb_migrate import load_migrations
        from orders import Order
        from shop.accounts import Customer

        async def main(url, name, save):
            load_migrations("migrations")
            client = AsyncMongoClient(url)
            NoSQLModelManager.instance().database = client[name]
            if save:
                first = (await Order.restore(await Order.objects.find_one({"number": 0}))).customer
                first.name = "saved by new code"
                await first.save()
                return
            seen = []
            async for doc in Order.objects.find().sort("number"):
                order = await Order.restore(doc)
                c = order.customer
                referrer = c.referrer.name if c.referrer else None
                seen.append([order.number, type(c).__module__, c.name, referrer,
                             [x.name for x in order.cc]])
            print(json.dumps(seen))
            await client.close()

        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "save"))
    """,
    "pyproject.toml": """
        [tool.atomdb-migrate]
        models = ["shop.accounts", "orders"]
        migrations = "migrations"
        timeout = 5
    """,
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def run(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    env.pop("ATOMDB_MIGRATE_URL", None)
    proc = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def cli_path() -> str:
    return os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")


def no_old_name(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("__model__") != OLD and all(no_old_name(v) for v in value.values())
    if isinstance(value, list):
        return all(no_old_name(v) for v in value)
    return True


@pytest.mark.timeout(600)
def test_a_moved_model_keeps_its_data(tmp_path: Path, secantus_url: str) -> None:
    name = f"moved_{uuid.uuid4().hex[:10]}"
    old = write_tree(tmp_path / "old", OLD_CODE)
    new = write_tree(tmp_path / "new", NEW_CODE)
    n = 30
    run(old, sys.executable, "write.py", secantus_url, name, str(n))
    client: MongoClient[dict[str, Any]] = MongoClient(secantus_url)
    db = client[name]
    try:
        assert db[OLD].count_documents({}) == n and NEW not in db.list_collection_names()

        # The new code, before upgrade: every order restores its customers,
        # from the old collection, as the moved class.
        run(new, sys.executable, "read.py", secantus_url, name, "save")
        before = json.loads(run(new, sys.executable, "read.py", secantus_url, name, "keep"))
        assert len(before) == 2 * n
        k = n // 2

        def who(i: int) -> str:
            return "saved by new code" if i == 0 else f"C{i}"

        for number, module, customer, referrer, cc in before:
            assert module == "shop.accounts"
            assert customer == who(2 * (number % k))
            assert referrer == who(2 * (number % k) + 1)
            assert cc == ([who(2 * ((number + 1) % k))] if number % 2 else [])
        # The customer saved by the new code went to the new collection.
        assert db[NEW].count_documents({}) == 1

        code_status = run(new, cli_path(), "--url", f"{secantus_url}/{name}", "status")
        assert f"still under former name {OLD}" in code_status, code_status
        assert f"{n} pending" in code_status, code_status

        # Upgrade: the collection is merged into the new name, references
        # are rewritten in every collection, and the versions bumped.
        out = run(new, cli_path(), "--url", f"{secantus_url}/{name}", "upgrade")
        assert "rename" in out.lower() or "merged" in out.lower(), out
        assert OLD not in db.list_collection_names()
        customers = list(db[NEW].find())
        assert len(customers) == n
        assert {c["__version__"] for c in customers} == {"2"}
        assert {c["__model__"] for c in customers} == {NEW}
        assert next(c for c in customers if c["name"] == "saved by new code")
        for collection in db.list_collection_names():
            assert all(no_old_name(d) for d in db[collection].find()), collection

        after = json.loads(run(new, sys.executable, "read.py", secantus_url, name, "keep"))
        assert after == before
    finally:
        client.drop_database(name)
        client.close()


class Renamed(VersionedModel):
    __model__ = "test_rename_model.Renamed"
    __version__ = 1


async def test_the_rename_runs_on_any_backend(db: Any, registry: MigrationRegistry) -> None:
    """In process, on every backend: collection renamed, references rewritten, lists included."""
    register_step(Renamed, 0, 1, operations=[ops.rename_model("old.Renamed", Renamed.__model__)])
    ref = {"_id": 1, "__ref__": 5, "__model__": "old.Renamed"}
    await db["old.Renamed"].insert_many(
        [{"_id": i, "__model__": "old.Renamed", "friends": [dict(ref)]} for i in range(1, 4)]
    )
    await db["others"].insert_many(
        [
            {"_id": 1, "owner": dict(ref), "deep": {"list": [[dict(ref)], {"x": dict(ref)}]}},
            {"_id": 2, "other": {"__model__": "x.Y", "_id": 1}},
        ]
    )
    dry = await Runner(db, RunOptions(dry_run=True)).upgrade(Renamed)
    assert [r.collection for r in dry.renames] == ["rename"] and dry.pending == 3
    report = await Runner(db).upgrade(Renamed)
    assert [r.counts() for r in report.renames] == [
        {
            "from": "old.Renamed",
            "collection": "renamed",
            "moved": 0,
            "replaced": 0,
            "discarded": 0,
            "references": 4,
        }
    ]
    assert "old.Renamed" not in await db.list_collection_names()
    docs = [d async for d in db[Renamed.__model__].find().sort("_id")]
    assert [d["__version__"] for d in docs] == ["1"] * 3
    assert all(d["friends"][0]["__model__"] == Renamed.__model__ for d in docs)
    other = await db["others"].find_one({"_id": 1})
    assert other["owner"]["__model__"] == Renamed.__model__
    assert other["deep"]["list"][0][0]["__model__"] == Renamed.__model__
    assert other["deep"]["list"][1]["x"]["__model__"] == Renamed.__model__
    assert await db["others"].find_one({"_id": 2}) == {
        "_id": 2,
        "other": {"__model__": "x.Y", "_id": 1},
    }
    again = await Runner(db).upgrade(Renamed)
    assert again.pending == 0
    assert [r.counts() for r in again.renames] == [
        {
            "from": "old.Renamed",
            "collection": "none",
            "moved": 0,
            "replaced": 0,
            "discarded": 0,
            "references": 0,
        }
    ], "the references are looked for again: none are left"


async def test_a_rename_counts_only_references_and_skips_views(
    db: Any, registry: MigrationRegistry
) -> None:
    """The moved documents' own names are the step's work, not references; views are not
    collections (a real server refuses writes to them)."""
    register_step(Renamed, 0, 1, operations=[ops.rename_model("old.Renamed", Renamed.__model__)])
    await db["old.Renamed"].insert_many([{"_id": i, "__model__": "old.Renamed"} for i in range(50)])
    await db["orders"].insert_many(
        [
            {"_id": i, "customer": {"_id": i, "__ref__": 1, "__model__": "old.Renamed"}}
            for i in range(50)
        ]
    )
    from atomdb_migrate.driver.mongo import is_mongomock

    if not is_mongomock(db):
        await db.command("create", "orders_view", viewOn="orders", pipeline=[])
    report = await Runner(db).upgrade(Renamed)
    (rename,) = report.renames
    assert rename.references == 50, "the 50 orders; not the 50 moved customers"
    assert report.migrated == 50
    assert await db["orders"].count_documents({"customer.__model__": Renamed.__model__}) == 50


# ----------------------------------------------------------------------
# A delete before upgrade: never brought back (issue 22, item 2)
# ----------------------------------------------------------------------
OLD_PERSON = "old.Person"


class Person(VersionedModel):
    """Moved from ``old.Person``; its documents are still stored there until upgrade."""

    __model__ = "test_rename_model.Person"
    __version__ = 2

    first = Str()


class Team(NoSQLModel):
    """Unversioned, holding a reference stored under the former name."""

    __model__ = "test_rename_model.Team"

    lead = Instance(Person)


def move_person() -> None:
    register_step(Person, 1, 2, operations=[ops.rename_model(OLD_PERSON, Person.__model__)])


async def seed_people(db: Any, n: int) -> list[ObjectId]:
    ids = [ObjectId() for _ in range(n)]
    await db[OLD_PERSON].insert_many(
        [
            {"_id": i, "first": f"P{k}", "__model__": OLD_PERSON, "__version__": "1"}
            for k, i in enumerate(ids)
        ]
    )
    return ids


async def read_person(how: str, _id: ObjectId) -> Person | None:
    """The new code reads a person still stored under the former name."""
    Person.objects.cache.pop(_id, None)
    if how == "find_document":
        doc = await find_document(Person, _id)
        return None if doc is None else await Person.restore(doc)
    if how == "reference":
        lead = {"_id": _id, "__ref__": 1, "__model__": OLD_PERSON}
        team = await Team.restore({"_id": ObjectId(), "lead": lead})
        return team.lead
    stub = Person.__new__(Person)
    stub._id = _id
    await stub.load()
    return stub if stub.__restored__ else None


async def stored_anywhere(db: Any, _id: ObjectId) -> list[str]:
    return [
        name for name in (OLD_PERSON, Person.__model__) if await db[name].find_one({"_id": _id})
    ]


@pytest.mark.parametrize("how", ["find_document", "reference", "load"])
@pytest.mark.parametrize("save_first", [False, True])
async def test_a_person_deleted_before_upgrade_stays_deleted(
    db: Any, registry: MigrationRegistry, how: str, save_first: bool
) -> None:
    move_person()
    ada, other = await seed_people(db, 2)
    person = await read_person(how, ada)
    assert person is not None and person.first == "P0"
    if save_first:
        person.first = "Ada2"
        await person.save()
        assert await stored_anywhere(db, ada) == [OLD_PERSON, Person.__model__]
    await person.delete()
    assert await stored_anywhere(db, ada) == [], "deleted under every name"
    assert await find_document(Person, ada) is None
    await Runner(db).upgrade(Person)
    assert await stored_anywhere(db, ada) == [], "the merge brought nothing back"
    assert await stored_anywhere(db, other) == [Person.__model__]


@pytest.mark.parametrize("saved", [False, True])
async def test_a_delete_while_the_merge_moves_the_document_is_not_undone(
    db: Any, registry: MigrationRegistry, monkeypatch: pytest.MonkeyPatch, saved: bool
) -> None:
    """The merge read the old copy; the new code deletes it; the merge inserts what it read."""
    move_person()
    ada, other = await seed_people(db, 2)
    if saved:  # another saved copy, so that the collections merge (not a rename)
        person = await read_person("find_document", other)
        assert person is not None
        await person.save()
    else:
        await db[Person.__model__].insert_one({"first": "new", "__version__": "2"})
    real_batches = renames.batches

    deleted: list[ObjectId] = []

    async def delete_after_reading(cursor: Any, size: int) -> Any:
        async for batch in real_batches(cursor, size):
            if not deleted and any(d["_id"] == ada for d in batch):
                person = await read_person("find_document", ada)
                assert person is not None
                await person.delete()
                deleted.append(ada)
            yield batch

    monkeypatch.setattr(renames, "batches", delete_after_reading)
    report = await Runner(db).upgrade(Person)
    monkeypatch.undo()
    assert deleted == [ada]
    assert [r.collection for r in report.renames] == ["merged"], report.renames
    assert await stored_anywhere(db, ada) == [], (report.renames, "the merge did not bring it back")
    assert await stored_anywhere(db, other) == [Person.__model__]


#: How many interleavings the property runs (raise it for a long run).
INTERLEAVINGS = int(os.environ.get("INTERLEAVING_EXAMPLES", "40"))

person_id = st.integers(0, 3)
action = st.one_of(
    st.tuples(st.just("read"), st.sampled_from(["find_document", "reference", "load"]), person_id),
    st.tuples(st.just("save"), person_id, st.sampled_from(["x", "y", "z"])),
    st.tuples(st.just("delete"), person_id),
    st.tuples(st.just("upgrade"), st.one_of(st.none(), person_id)),
)


@pytest.mark.timeout(900)
@settings(
    max_examples=INTERLEAVINGS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(action, max_size=8))
async def test_nothing_deleted_comes_back_and_nothing_saved_is_lost(
    db: Any, monkeypatch: pytest.MonkeyPatch, actions: list[tuple[Any, ...]]
) -> None:
    """Four people under the former name; the new code reads, saves and deletes them,
    and ``upgrade`` runs in between (a delete may land while it merges)."""
    for name in (OLD_PERSON, Person.__model__):
        await db.drop_collection(name)
    with MigrationRegistry.instance().isolated():
        move_person()
        ids = await seed_people(db, 4)
        want: dict[int, str | None] = {k: f"P{k}" for k in range(4)}  # None: deleted
        for kind, *args in actions:
            if kind == "read":
                how, k = args
                person = await read_person(how, ids[k])
                assert (person.first if person else None) == want[k], (kind, args)
            elif kind == "save" and want[args[0]] is not None:
                k, text = args
                person = await read_person("find_document", ids[k])
                assert person is not None
                person.first = want[k] = text
                await person.save()
            elif kind == "delete" and want[args[0]] is not None:
                person = await read_person("find_document", ids[args[0]])
                assert person is not None
                await person.delete()
                want[args[0]] = None
            elif kind == "upgrade":
                during = args[0]
                if during is not None and want[during] is not None:
                    monkeypatch.setattr(renames, "batches", deleting_first(ids[during]))
                    want[during] = None
                await Runner(db).upgrade(Person)
                monkeypatch.undo()
        await Runner(db).upgrade(Person)
        assert OLD_PERSON not in await db.list_collection_names()
        for k, first in want.items():
            doc = await db[Person.__model__].find_one({"_id": ids[k]})
            assert (doc["first"] if doc else None) == first, (k, actions)
            assert doc is None or doc["__version__"] == "2"


def deleting_first(_id: ObjectId) -> Any:
    """`renames.batches`, deleting `_id` (as the new code does) once, after the first
    batch the upgrade reads: the merge's, or else the reference scan's."""
    real_batches = batches
    done: list[bool] = []

    async def delete_after_reading(cursor: Any, size: int) -> Any:
        async for batch in real_batches(cursor, size):
            if not done:
                done.append(True)
                person = await read_person("find_document", _id)
                assert person is not None
                await person.delete()
            yield batch

    return delete_after_reading


async def test_a_fault_before_the_merge_checks_what_it_moved_still_undoes_a_delete(
    db: Any, registry: MigrationRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a hostile pass: the new code deletes a document between the merge's read
    and its insert, and the server fails as the merge checks: the run sends the merge
    again, which no longer finds the document under the former name."""
    move_person()
    ada, other = await seed_people(db, 2)
    await db[Person.__model__].insert_one({"first": "new", "__version__": "2"})
    monkeypatch.setattr(renames, "batches", deleting_first(ada))
    real_undo = renames._undo_deleted
    faults: list[str] = []

    async def fail_once(source: Any, target: Any, inserted: list[Any]) -> int:
        if not faults:
            faults.append("raised")
            raise AutoReconnect("connection reset while the merge checks")
        return await real_undo(source, target, inserted)

    monkeypatch.setattr(renames, "_undo_deleted", fail_once)
    report = await Runner(db, RunOptions(retry_for=30)).upgrade(Person)
    monkeypatch.undo()
    assert faults == ["raised"] and [r.collection for r in report.renames] == ["merged"]
    assert await stored_anywhere(db, ada) == [], "the merge sent again brought nothing back"
    assert await stored_anywhere(db, other) == [Person.__model__]


async def test_a_fault_as_the_merge_inserts_still_undoes_a_delete(
    db: Any, registry: MigrationRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert reaches the server, then the connection drops: sent again, the merge
    no longer finds under the former name the document deleted meanwhile."""
    move_person()
    ada, other = await seed_people(db, 2)
    await db[Person.__model__].insert_one({"first": "new", "__version__": "2"})
    monkeypatch.setattr(renames, "batches", deleting_first(ada))
    collection_type = type(db[Person.__model__])
    real_insert_many = collection_type.insert_many
    faults: list[str] = []

    async def insert_then_fail(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await real_insert_many(self, *args, **kwargs)
        if not faults and self.name == Person.__model__:
            faults.append("raised")
            raise AutoReconnect("connection reset after the insert")
        return result

    monkeypatch.setattr(collection_type, "insert_many", insert_then_fail)
    report = await Runner(db, RunOptions(retry_for=30)).upgrade(Person)
    monkeypatch.undo()
    assert faults == ["raised"] and [r.collection for r in report.renames] == ["merged"]
    assert await stored_anywhere(db, ada) == [], "the merge sent again brought nothing back"
    assert await stored_anywhere(db, other) == [Person.__model__]


#: Examples of the takeover property (RENAME_TAKEOVER_EXAMPLES).
TAKEOVERS = int(os.environ.get("RENAME_TAKEOVER_EXAMPLES", "10"))


@settings(
    max_examples=TAKEOVERS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(orders=st.integers(1, 60), batch=st.integers(1, 25), after=st.integers(1, 4))
async def test_a_lock_taken_over_stops_the_reference_rewrite_before_its_next_write(
    db: Any, monkeypatch: pytest.MonkeyPatch, orders: int, batch: int, after: int
) -> None:
    """Another runner takes the lock (``unlock --force``, then its own lease) after the
    rename's write number `after`: the lease is checked on the server before every write
    of the runner's batches; the rename's writes (references, merged documents) checked
    it on this runner's clock only, so the reference rewrite went on."""
    from atomdb_migrate.engine.lock import LOCK_ID, LeaseLock
    from atomdb_migrate.exceptions import LockLostError

    for name in ("old.Renamed", Renamed.__model__, "orders", "atomdb_migrate_lock"):
        await db.drop_collection(name)
    await db["old.Renamed"].insert_many([{"_id": i, "__model__": "old.Renamed"} for i in range(4)])
    ref = {"_id": 1, "__ref__": 5, "__model__": "old.Renamed"}
    await db["orders"].insert_many([{"_id": i, "customer": dict(ref)} for i in range(orders)])
    locks = db["atomdb_migrate_lock"]
    real = renames.bulk_update
    writes: list[int] = []

    async def then_taken_over(collection: Any, batch: list[Any]) -> Any:
        writes.append(len(batch))
        result = await real(collection, batch)
        if len(writes) == after:
            await locks.delete_one({"_id": LOCK_ID})
            await locks.insert_one({"_id": LOCK_ID, "owner": "another runner"})
        return result

    with MigrationRegistry.instance().isolated():
        register_step(
            Renamed, 0, 1, operations=[ops.rename_model("old.Renamed", Renamed.__model__)]
        )
        monkeypatch.setattr(renames, "bulk_update", then_taken_over)
        lock = LeaseLock(locks, command="upgrade")
        await lock.acquire()
        runner = Runner(
            db, RunOptions(batch_size=batch), lock=lock, skip_collections=("atomdb_migrate_lock",)
        )
        if -(-orders // batch) < after:  # every reference written: no takeover
            await runner.upgrade(Renamed)
            monkeypatch.undo()
            return
        with pytest.raises(LockLostError):
            await runner.upgrade(Renamed)
        monkeypatch.undo()
    assert len(writes) == after, ("no write after the lock was taken", writes)
    rewritten = await db["orders"].count_documents({"customer.__model__": Renamed.__model__})
    assert rewritten == sum(writes)
