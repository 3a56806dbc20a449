"""The eager runner and the lease lock, in process, on real servers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from atomdb_migrate import (
    GapError,
    LockHeldError,
    LockLostError,
    MigrationRegistry,
    MissingDowngradeError,
    StepFailedError,
    load_migrations,
)
from atomdb_migrate.engine.lock import LOCK_ID, LeaseLock
from atomdb_migrate.engine.runner import Runner, RunOptions

from .clidemo import Customer, Order

STEPS = Path(__file__).parent / "clidemo_migrations"


@pytest.fixture
async def sdb(db: Any, backend: str, registry: MigrationRegistry) -> Any:
    """A server database with the demo steps loaded."""
    load_migrations(STEPS)
    return db


def oid(i: int) -> ObjectId:
    """An ObjectId that sorts as `i` does."""
    return ObjectId(f"{i:024x}")


def customer(i: int, version: int | None = 1, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": oid(i), "__model__": Customer.__model__}
    if version is None or version == 1:
        doc["name"] = f"Ada {i}"
    else:
        doc.update(first="Ada", last=str(i), applied=1)
    if version == 3:
        doc["tier"] = "gold"
    if version is not None:
        doc["__version__"] = str(version)
    doc.update(extra)
    return doc


async def seed(db: Any, docs: list[dict[str, Any]]) -> Any:
    coll = db[Customer.__model__]
    await coll.insert_many(docs)
    return coll


async def all_docs(coll: Any) -> list[dict[str, Any]]:
    return list(await coll.find({}, sort=[("_id", 1)]).to_list(None))


async def test_upgrade_brings_every_document_to_the_head(sdb: Any) -> None:
    docs = [customer(i, version=random.Random(i).choice([1, 2, 3])) for i in range(2500)]
    newer = customer(9999, version=None) | {"__version__": "7"}  # newer than the code
    docs.append(newer)
    coll = await seed(sdb, docs)
    report = await Runner(sdb, RunOptions(batch_size=300)).upgrade(Customer)
    at = {v: sum(1 for d in docs if d.get("__version__") == v) for v in ("1", "2", "3")}
    assert report.by_version == {"1": at["1"], "2": at["2"], "7": 1}
    assert report.steps == {"1 -> 2": at["1"], "2 -> 3": at["1"] + at["2"]}
    assert (report.migrated, report.skipped, report.failed, report.newer) == (
        at["1"] + at["2"],
        0,
        0,
        1,
    )
    stored = await all_docs(coll)
    assert {d["__version__"] for d in stored} == {"3", "7"}
    assert all(d["applied"] == 1 for d in stored if d["_id"] != newer["_id"]), "each step ran once"
    assert all(d["tier"] in ("basic", "gold") for d in stored if d["_id"] != newer["_id"])
    # Restores cleanly and a second run has nothing to do.
    c = await Customer.restore(stored[0])
    assert (c.first, c.last) == ("Ada", "0")
    again = await Runner(sdb).upgrade(Customer)
    assert (again.migrated, again.pending) == (0, 1)
    assert await all_docs(coll) == stored


async def test_interrupted_run_resumes_without_repeating_a_step(sdb: Any) -> None:
    coll = await seed(sdb, [customer(i) for i in range(1000)])

    class Stop(Exception):
        pass

    class StopAfter:
        def __init__(self) -> None:
            self.batches = 0

        def start(self, model: str, total: int) -> None:
            pass

        def advance(self, count: int) -> None:
            self.batches += 1
            if self.batches == 3:
                raise Stop

        def finish(self) -> None:
            pass

    with pytest.raises(Stop):
        await Runner(sdb, RunOptions(batch_size=100), progress=StopAfter()).upgrade(Customer)
    done = await coll.count_documents({"__version__": "3"})
    assert done == 300
    report = await Runner(sdb, RunOptions(batch_size=100)).upgrade(Customer)
    assert report.migrated == 700
    assert [d["applied"] for d in await all_docs(coll)] == [1] * 1000


@pytest.mark.parametrize("field", ["tier", "seq"])
async def test_a_document_changed_meanwhile_is_reread_not_overwritten(sdb: Any, field: str) -> None:
    """The 2 -> 3 step looks at tier, never at seq: a change to tier meanwhile means a
    re-read; a change to seq is kept, and the document upgraded without one."""
    coll = await seed(sdb, [customer(i, seq=0) for i in range(10)])
    writes = {"n": 0}

    async def meddling(doc: dict[str, Any]) -> None:
        # The app writes document 3 while the runner transforms it: the first
        # time (so the write is retried) and, for document 5, every time.
        if (doc["_id"] == oid(3) and writes["n"] == 0) or doc["_id"] == oid(5):
            writes["n"] += 1
            value = writes["n"] if field == "seq" else f"gold-{writes['n']}"
            await coll.update_one({"_id": doc["_id"]}, {"$set": {field: value}})

    graph = MigrationRegistry.instance().graph(Customer)
    original = graph.plan_upgrade("2", "3")[0]
    wrapped = original.upgrade_fn

    async def upgrade_and_meddle(doc: dict[str, Any]) -> None:
        await wrapped(doc)  # type: ignore[misc]
        await meddling(doc)

    original.upgrade_fn = upgrade_and_meddle
    try:
        report = await Runner(sdb, RunOptions(batch_size=4)).upgrade(Customer)
    finally:
        original.upgrade_fn = wrapped
    stored = {d["_id"]: d for d in await all_docs(coll)}
    if field == "seq":
        assert (report.migrated, report.skipped) == (10, 0), "no re-read needed"
        assert stored[oid(3)]["seq"] == 1 and stored[oid(5)]["seq"] == writes["n"] == 2, "kept"
        assert {d["__version__"] for d in stored.values()} == {"3"}
        return
    assert (report.migrated, report.skipped) == (9, 1)
    assert stored[oid(3)]["__version__"] == "3" and stored[oid(3)]["tier"] == "gold-1"
    assert stored[oid(5)]["__version__"] == "1" and stored[oid(5)]["tier"] == f"gold-{writes['n']}"


async def test_a_field_added_meanwhile_is_kept(sdb: Any) -> None:
    coll = await seed(sdb, [customer(i) for i in range(3)])
    graph = MigrationRegistry.instance().graph(Customer)
    step = graph.plan_upgrade("2", "3")[0]
    wrapped = step.upgrade_fn

    async def upgrade_and_add(doc: dict[str, Any]) -> None:
        await wrapped(doc)  # type: ignore[misc]
        await coll.update_one({"_id": doc["_id"]}, {"$set": {"note": f"added {doc['last']}"}})

    step.upgrade_fn = upgrade_and_add
    try:
        report = await Runner(sdb).upgrade(Customer)
    finally:
        step.upgrade_fn = wrapped
    assert report.migrated == 3
    assert [(d["__version__"], d["note"]) for d in await all_docs(coll)] == [
        ("3", "added 0"),
        ("3", "added 1"),
        ("3", "added 2"),
    ]


async def test_concurrent_app_writer_loses_nothing(sdb: Any, backend: str) -> None:
    if backend == "mongomock":
        pytest.skip(
            "mongomock finds each document by _id with a full scan: the race "
            "would take minutes; the servers run it"
        )
    n = 1500
    coll = await seed(sdb, [customer(i) for i in range(n)])
    last: dict[ObjectId, int] = {}
    stop = asyncio.Event()

    async def writer() -> int:
        rng, seq = random.Random(7), 0
        while not stop.is_set():
            seq += 1
            i = oid(rng.randrange(n))
            await coll.update_one({"_id": i}, {"$set": {"seq": seq}})
            last[i] = seq
        return seq

    task = asyncio.create_task(writer())
    report = await Runner(sdb, RunOptions(batch_size=50)).upgrade(Customer)
    while report.skipped:  # documents changed twice in a row: run again
        report = await Runner(sdb, RunOptions(batch_size=50)).upgrade(Customer)
    stop.set()
    writes = await task
    stored = await all_docs(coll)
    assert writes > 100
    assert all(d["__version__"] == "3" and d["applied"] == 1 for d in stored)
    lost = [d["_id"] for d in stored if d.get("seq", 0) != last.get(d["_id"], 0)]
    assert lost == []


async def test_step_error_stops_the_run_consistently(sdb: Any) -> None:
    docs = [customer(i) for i in range(50)]
    docs[23]["name"] = "BOOM"
    coll = await seed(sdb, docs)
    with pytest.raises(StepFailedError) as info:
        await Runner(sdb, RunOptions(batch_size=10)).upgrade(Customer)
    err = info.value
    assert (err.model, err.doc_id, err.from_version, err.to_version) == (
        Customer.__model__,
        oid(23),
        "1",
        "2",
    )
    assert "0001_split_name.py" in err.source and "cannot split BOOM" in str(err)
    stored = await all_docs(coll)
    assert [d["__version__"] for d in stored] == ["3"] * 23 + ["1"] * 27
    assert all(d["applied"] == 1 for d in stored[:23])


async def test_continue_on_error_records_failures(sdb: Any) -> None:
    docs = [customer(i) for i in range(30)]
    docs[4]["name"] = docs[17]["name"] = "BOOM"
    coll = await seed(sdb, docs)
    report = await Runner(sdb, RunOptions(batch_size=7, continue_on_error=True)).upgrade(Customer)
    assert (report.migrated, report.failed) == (28, 2)
    assert [f["_id"] for f in report.failures] == [oid(4), oid(17)]
    assert "cannot split BOOM" in report.failures[0]["error"]
    assert report.failures[0]["step"].endswith("0001_split_name.py")
    assert await coll.count_documents({"__version__": "1"}) == 2


async def test_dry_run_writes_nothing(sdb: Any, registry: MigrationRegistry) -> None:
    docs = [customer(i, version=1 + i % 2) for i in range(40)]
    coll = await seed(sdb, docs)
    before = await all_docs(coll)
    report = await Runner(sdb, RunOptions(dry_run=True, sample=5)).upgrade(Customer)
    assert report.steps == {"1 -> 2": 20, "2 -> 3": 40}
    assert [s["ok"] for s in report.samples] == [True] * 5
    assert await all_docs(coll) == before
    assert await sdb.list_collection_names() == [Customer.__model__]

    # A step whose result does not restore into the model is caught.
    graph = registry.graph(Customer)
    step = graph.plan_upgrade("2", "3")[0]
    good = step.upgrade_fn
    step.upgrade_fn = lambda doc: doc.update(applied="many")
    try:
        report = await Runner(sdb, RunOptions(dry_run=True, sample=2)).upgrade(Customer)
    finally:
        step.upgrade_fn = good
    assert not report.samples[0]["ok"]
    assert "clidemo.Customer.applied" in report.samples[0]["error"]
    assert await all_docs(coll) == before


async def test_upgrade_to_an_intermediate_version(sdb: Any) -> None:
    coll = await seed(sdb, [customer(0), customer(1, version=3)])
    report = await Runner(sdb).upgrade(Customer, to="2")
    assert (report.migrated, report.beyond) == (1, 1)
    assert [d["__version__"] for d in await all_docs(coll)] == ["2", "3"]


async def test_gap_is_refused_before_anything_is_written(sdb: Any) -> None:
    coll = await seed(
        sdb, [customer(i, version=None) | {"__version__": "0.5"} for i in range(3)] + [customer(9)]
    )
    with pytest.raises(GapError, match=r"no step leaves version 0\.5"):
        await Runner(sdb).upgrade(Customer)
    assert await coll.count_documents({"__version__": "3"}) == 0


async def test_downgrade_and_back(sdb: Any) -> None:
    coll = await seed(sdb, [customer(i) for i in range(20)])
    before = await all_docs(coll)
    await Runner(sdb).upgrade(Customer)
    report = await Runner(sdb, RunOptions(batch_size=6)).downgrade(Customer, "1")
    assert report.migrated == 20
    after = await all_docs(coll)
    assert [(d["name"], d["__version__"]) for d in after] == [(d["name"], "1") for d in before]


async def test_downgrade_without_a_downgrade_is_refused(sdb: Any) -> None:
    orders = sdb[Order.__model__]
    await orders.insert_many(
        [{"_id": i, "total": "1.5", "__model__": Order.__model__} for i in range(3)]
    )
    await Runner(sdb).upgrade(Order)
    with pytest.raises(MissingDowngradeError, match="has no downgrade function"):
        await Runner(sdb).downgrade(Order, "0")
    assert await orders.count_documents({"__version__": "1", "total": 1.5}) == 3


# ---------------------------------------------------------------------------
# The lease lock
# ---------------------------------------------------------------------------
async def test_second_lock_holder_is_refused_and_told_who_holds_it(sdb: Any) -> None:
    coll = sdb["locks"]
    async with LeaseLock(coll, command="upgrade"):
        with pytest.raises(LockHeldError) as info:
            await LeaseLock(coll).acquire()
        assert info.value.holder["command"] == "upgrade"
        assert "pid" in str(info.value) and "held by upgrade" in str(info.value)
    assert await coll.find_one({"_id": LOCK_ID}) is None, "released"
    await LeaseLock(coll).acquire()


async def test_a_renewal_that_read_older_counts_does_not_put_them_back(sdb: Any) -> None:
    """The renewal thread reads the run's counts, a `verify` before a write
    carries newer ones, and the renewal lands after it: the lock keeps the
    newer counts (a killed run was found to have written two batches more
    than its lock said), and the lease is extended all the same."""
    coll = sdb["locks"]
    async with LeaseLock(coll, ttl=30) as lock:
        lock.progress = {"M": {"upgraded": 250}}
        _, late = lock._renewal()  # the thread's snapshot: 250
        await lock.verify({"M": {"upgraded": 500}})
        before = (await coll.find_one({"_id": LOCK_ID}))["expires_at"]
        matched = 0
        for query, update in late:
            matched = (await coll.update_one(query, update)).matched_count
            if matched:
                break
        assert matched, "the lease is still extended"
        stored = await coll.find_one({"_id": LOCK_ID})
        assert stored["progress"] == {"M": {"upgraded": 500}}
        assert stored["expires_at"] >= before
        assert await lock.renew(), "a renewal with the newest counts carries them"
        lock.progress = {"M": {"upgraded": 750}}
        assert await lock.renew()
        assert (await coll.find_one({"_id": LOCK_ID}))["progress"] == {"M": {"upgraded": 750}}


async def test_lease_is_renewed_while_held(sdb: Any) -> None:
    coll = sdb["locks"]
    async with LeaseLock(coll, ttl=0.6) as lock:
        await asyncio.sleep(1.5)
        with pytest.raises(LockHeldError):
            await LeaseLock(coll).acquire()
        lock.check()


async def test_a_renewal_task_starved_by_a_blocking_step_names_the_cause(sdb: Any) -> None:
    """Without a thread of its own, the renewal shares the event loop."""
    async with LeaseLock(sdb["locks"], ttl=0.3) as lock:
        await asyncio.sleep(0)
        time.sleep(0.6)  # a synchronous step holding the loop, then a write
        with pytest.raises(LockLostError, match=r"the event loop was busy for 0\.[5-9] s"):
            lock.check()


async def test_a_renewal_thread_keeps_the_lease_through_a_blocking_step(
    sdb: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    from atomdb_migrate.driver.mongo import is_mongomock, sync_database

    if is_mongomock(sdb):
        pytest.skip("the synchronous client is a real server's; mongomock's is in process")
    from .conftest import server_url

    client, database = sync_database(server_url(backend, request), sdb.name, 5)
    try:
        async with LeaseLock(sdb["locks"], ttl=0.3, renewal=lambda: database["locks"]) as lock:
            await asyncio.sleep(0)
            time.sleep(1.0)  # more than three leases, the loop blocked all along
            lock.check()
            assert (await sdb["locks"].find_one({}))["renewed_at"] is not None
    finally:
        client.close()


async def test_a_dead_holders_lease_expires(sdb: Any) -> None:
    coll = sdb["locks"]
    dead = LeaseLock(coll, ttl=0.5)
    await dead.acquire()  # and never renews, as if killed
    with pytest.raises(LockHeldError):
        await LeaseLock(coll).acquire()
    await asyncio.sleep(0.7)
    taker = LeaseLock(coll)
    await taker.acquire()
    with pytest.raises(LockLostError):
        dead.check()
    assert not await dead.renew()
    await dead.release()  # does not release the new holder's lock
    assert (await coll.find_one({"_id": LOCK_ID}))["owner"] == taker.owner


async def test_waiting_for_the_lock(sdb: Any) -> None:
    coll = sdb["locks"]
    first = LeaseLock(coll)
    await first.acquire()
    waiter = asyncio.create_task(LeaseLock(coll, wait=True, poll=0.05).acquire())
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await first.release()
    await asyncio.wait_for(waiter, 5)


async def test_runner_stops_writing_when_its_lease_is_lost(sdb: Any) -> None:
    coll = await seed(sdb, [customer(i) for i in range(10)])
    lock = LeaseLock(sdb["locks"], ttl=0.2)
    await lock.acquire()
    await asyncio.sleep(0.3)
    await LeaseLock(sdb["locks"], ttl=30).acquire()  # another runner takes the expired lease
    with pytest.raises(LockLostError, match="another runner took it"):
        await Runner(sdb, lock=lock).upgrade(Customer)
    assert await coll.count_documents({"__version__": "1"}) == 10


async def test_a_lease_that_ran_out_unclaimed_is_taken_back(sdb: Any) -> None:
    """A lease that ran out while nobody took the lock (renewals lost to an
    outage) is taken back before the next write, and the run finishes."""
    coll = await seed(sdb, [customer(i) for i in range(10)])
    lock = LeaseLock(sdb["locks"], ttl=0.2)
    await lock.acquire()
    await asyncio.sleep(0.3)
    with pytest.raises(LockLostError):
        lock.check()
    await Runner(sdb, lock=lock).upgrade(Customer)
    assert await coll.count_documents({"__version__": str(Customer.__version__)}) == 10
    held = await sdb["locks"].find_one({})
    assert held is not None and held["owner"] == lock.owner


async def test_a_lease_cleared_meanwhile_is_not_taken_back(sdb: Any) -> None:
    coll = await seed(sdb, [customer(i) for i in range(10)])
    lock = LeaseLock(sdb["locks"], ttl=0.2)
    await lock.acquire()
    await asyncio.sleep(0.3)
    await sdb["locks"].delete_many({})  # unlock --force
    with pytest.raises(LockLostError, match="or it was cleared"):
        await Runner(sdb, lock=lock).upgrade(Customer)
    assert await coll.count_documents({"__version__": "1"}) == 10
