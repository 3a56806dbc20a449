"""One run, many workers: ranges of ``_id`` planned, claimed, renewed, taken over.

On SecantusDB (mongomock has no ``$bucketAuto``): each document is taken
through a Python step that counts its passes (``hits``), so a document
transformed twice, or not at all, shows.

"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import os
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.max_key import MaxKey
from bson.min_key import MinKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from atomdb_migrate import MigrationRegistry, StepFailedError, VersionedModel, register_step
from atomdb_migrate.commands.join import inherited, run_record
from atomdb_migrate.driver.mongo import to_list
from atomdb_migrate.engine.ranges import (
    DONE,
    Ranges,
    Span,
    bucket_count,
    chunk_points,
    plan_spans,
    spans_of,
    summary,
    worker_id,
)
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.engine.workers import RangeWorker, Split

#: Generated id sets of the partition property (``WORKERS_EXAMPLES``).
WORKERS_EXAMPLES = int(os.environ.get("WORKERS_EXAMPLES", "15"))


class Tally(VersionedModel):
    __model__ = "test_workers.Tally"
    __version__ = 2


def counted(doc: dict[str, Any]) -> None:
    """1 -> 2: one more pass."""
    doc["hits"] = doc.get("hits", 0) + 1


@pytest.fixture
async def wdb(db: Any, backend: str, registry: MigrationRegistry) -> Any:
    if backend == "mongomock":
        pytest.skip("mongomock has no $bucketAuto: ranges are planned on servers")
    register_step(Tally, 1, 2, counted, registry=registry)
    return db


def mixed_ids(n: int) -> list[Any]:
    """`n` ``_id`` values of each of int, str and ObjectId."""
    return (
        list(range(n))
        + [f"s{i:04}" for i in range(n)]
        + [ObjectId(f"{i + 1:024x}") for i in range(n)]
    )


async def seed(db: Any, ids: list[Any]) -> Any:
    coll = db[Tally.__model__]
    if ids:
        await coll.insert_many(
            [{"_id": i, "__version__": "1", "__model__": Tally.__model__} for i in ids]
        )
    return coll


def split(db: Any, workers: int, ttl: float = 5.0) -> Split:
    return Split(Ranges(db["atomdb_migrate_lock_ranges"], ttl=ttl), "run-1", workers, poll=0.05)


async def claimed_elsewhere(wdb: Any, ids: list[Any]) -> tuple[Any, Split, Any]:
    """The documents `ids`, their ranges for two workers (leases of 0.6 s), and the
    first range claimed by a worker of another process (which then does nothing)."""
    coll = await seed(wdb, ids)
    sp = split(wdb, 2, ttl=0.6)
    spans = await plan_spans(coll, {"__version__": "1"}, batch_size=10, workers=2)
    await sp.ranges.create(sp.run, Tally.__model__, spans, target="2", versions=["1"])
    return coll, sp, await sp.ranges.claim(sp.run, worker_id())


async def hits(coll: Any) -> dict[Any, int]:
    docs = await to_list(coll.find({}))
    return {repr(d["_id"]): d.get("hits", 0) for d in docs}


@pytest.mark.parametrize("workers", [1, 4])
async def test_workers_in_one_process_take_every_document_once(wdb: Any, workers: int) -> None:
    ids = mixed_ids(40)
    coll = await seed(wdb, ids)
    runner = Runner(wdb, RunOptions(batch_size=7))
    runner.split = split(wdb, workers)
    report = await runner.upgrade(Tally)
    assert report.migrated == len(ids)
    assert set((await hits(coll)).values()) == {1}
    assert await coll.count_documents({"__version__": "2"}) == len(ids)
    docs = await runner.split.ranges.documents("run-1")
    assert docs and {d["state"] for d in docs} == {DONE}
    brackets = {d["bracket"] for d in docs}
    assert brackets == {2, 3, 7}, "one set of ranges per type: int, str, ObjectId"
    assert sum(d["counts"]["migrated"] for d in docs) == len(ids)
    assert len(runner.split.seen) == workers
    said = summary(docs)
    assert said["counts"]["migrated"] == len(ids)
    assert sum(o["counts"]["migrated"] for o in said["owners"].values()) == len(ids)


async def test_an_empty_collection_has_no_range(wdb: Any) -> None:
    coll = await seed(wdb, [])
    runner = Runner(wdb, RunOptions())
    runner.split = split(wdb, 3)
    report = await runner.upgrade(Tally)
    assert report.migrated == 0
    assert await coll.count_documents({}) == 0
    spans = await plan_spans(coll, {"__version__": "1"}, batch_size=10, workers=3)
    assert spans == []


async def test_a_dead_workers_range_is_taken_over_after_its_lease(wdb: Any) -> None:
    """A worker that claimed a range and died (no renewal): another takes the range
    when the lease runs out, and every document passes once."""
    ids = list(range(60))
    coll, sp, dead = await claimed_elsewhere(wdb, ids)
    assert dead is not None
    runner = Runner(wdb, RunOptions(batch_size=10))
    runner.split = sp
    report = await runner.upgrade(Tally)
    assert report.migrated == len(ids)
    assert set((await hits(coll)).values()) == {1}
    taken = await sp.ranges.collection.find_one({"_id": dead.id})
    assert taken["state"] == DONE and taken["owner"] != dead.owner and taken["claims"] == 2


async def test_documents_inserted_during_the_run(wdb: Any) -> None:
    """Inserted ahead of every cursor (a higher _id, in the last, open range): taken;
    behind (a lower _id, in a range done): left at their version, never taken twice;
    the next run takes them."""
    coll = await seed(wdb, list(range(100, 200)))
    inserted = asyncio.Event()

    def slow(doc: dict[str, Any]) -> None:
        counted(doc)

    async def insert_midway() -> None:
        while await coll.count_documents({"__version__": "2"}) < 30:
            await asyncio.sleep(0.01)
        new = [
            {"_id": i, "__version__": "1", "__model__": Tally.__model__} for i in (5, 6, 900, 901)
        ]
        await coll.insert_many(new)
        inserted.set()

    runner = Runner(wdb, RunOptions(batch_size=5, max_rate=2000))
    runner.split = split(wdb, 2)
    task = asyncio.ensure_future(insert_midway())
    await runner.upgrade(Tally)
    await task
    assert inserted.is_set()
    found = await hits(coll)
    assert found[repr(900)] == 1 and found[repr(901)] == 1, "ahead of the cursors: taken"
    assert {found[repr(i)] for i in range(100, 200)} == {1}
    assert found[repr(5)] in (0, 1) and found[repr(6)] in (0, 1)
    rerun = Runner(wdb, RunOptions(batch_size=5))
    rerun.split = Split(Ranges(wdb["atomdb_migrate_lock_ranges"]), "run-2", 2, poll=0.05)
    await rerun.upgrade(Tally)
    assert set((await hits(coll)).values()) == {1}


async def test_a_range_given_back_on_error_is_pending_again(wdb: Any) -> None:
    coll = await seed(wdb, list(range(10)))
    sp = split(wdb, 1)
    spans = await plan_spans(coll, {"__version__": "1"}, batch_size=100, workers=1)
    await sp.ranges.create(sp.run, Tally.__model__, spans, target="2", versions=["1"])

    async def fails(rng: Any) -> None:
        raise RuntimeError("boom")

    worker = RangeWorker(sp.ranges, sp.run, fails, lambda rng: {"migrated": 3}, poll=0.01)
    with pytest.raises(RuntimeError):
        await worker.work()
    (doc,) = await sp.ranges.documents(sp.run)
    assert doc["state"] == "pending" and doc["counts"]["migrated"] == 3
    assert await sp.ranges.free(sp.run) == 0
    await sp.ranges.claim(sp.run, worker_id())
    assert await sp.ranges.free(sp.run) == 1


# ----------------------------------------------------------------------
# The boundaries, without a server
# ----------------------------------------------------------------------
def test_chunk_boundaries_cut_each_bracket_and_skip_min_and_max_key() -> None:
    oid = ObjectId("0" * 23 + "5")
    chunks = [
        {"min": {"_id": MinKey()}, "max": {"_id": 10}},
        {"min": {"_id": 10}, "max": {"_id": "m"}},
        {"min": {"_id": "m"}, "max": {"_id": oid}},
        {"min": {"_id": oid}, "max": {"_id": MaxKey()}},
        {"min": {"_id": Int64(10)}, "max": {"_id": 20.5}},
    ]
    points = chunk_points(chunks)
    assert points == {2: [10, 20.5], 3: ["m"], 7: [oid]}
    spans = spans_of(2, points[2])
    assert [(s.lo, s.hi) for s in spans] == [(None, 10), (10, 20.5), (20.5, None)]
    assert spans[0].condition() == {"$lt": 10}, "$lt matches numbers only"
    assert Span(3, "a", "m").condition() == {"$gte": "a", "$lt": "m"}
    assert Span(3).condition() == {"$type": ["string", "symbol"]}


def test_bucket_count_is_bounded_by_batches_and_workers() -> None:
    assert bucket_count(0, 100, 4) == 1
    assert bucket_count(250, 100, 4) == 3
    assert bucket_count(10**6, 100, 2) == 8


async def test_sharded_chunks_cut_the_ranges(wdb: Any) -> None:
    coll = await seed(wdb, list(range(50)))
    spans = await plan_spans(
        coll, {"__version__": "1"}, batch_size=1000, workers=1, chunks={2: [17, 33]}
    )
    assert [(s.lo, s.hi) for s in spans] == [(None, 17), (17, 33), (33, None)]


ID = st.one_of(
    st.integers(-50, 50),
    st.floats(-50, 50, allow_nan=False),
    st.sampled_from([math.nan, -0.0, math.inf, -math.inf, Decimal128("NaN"), Decimal128("-0")]),
    st.integers(-50, 50).map(Int64),
    st.integers(-50, 50).map(lambda i: Decimal128(f"{i}.5")),
    st.text("abc", max_size=3),
    st.sampled_from(["", "é", "日本", "\U0001f600", "\x00"]),
    st.sampled_from([MinKey(), MaxKey(), Binary(b"", 5), Binary(b"\x01", 4)]),
    st.integers(1, 40).map(lambda i: ObjectId(f"{i:024x}")),
    st.integers(0, 5).map(lambda d: datetime.datetime(2026, 1, 1 + d)),
    st.booleans(),
    st.none(),
    st.integers(0, 3).map(lambda i: {"k": i}),
)


def _key(value: Any) -> Any:
    """Equal ``_id`` values (1, 1.0, Int64(1); NaN and Decimal128 NaN; 0 and -0.0) share
    a key: the collection holds one of them."""
    if isinstance(value, Decimal128):
        value = float(value.to_decimal())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("n", "nan") if math.isnan(value) else ("n", float(value))
    return (type(value).__name__, repr(value))


@settings(max_examples=WORKERS_EXAMPLES, deadline=None)
@given(
    ids=st.lists(ID, max_size=40),
    batch=st.integers(1, 12),
    workers=st.integers(1, 4),
    cuts=st.lists(ID, max_size=4),
)
def test_spans_partition_the_documents(
    secantus_url: str, ids: list[Any], batch: int, workers: int, cuts: list[Any]
) -> None:
    """Whatever the ``_id`` types, and the chunks' boundaries of a collection sharded on
    ``_id`` (`cuts`, of any type too): every pending document is in exactly one span."""
    chunks = chunk_points([{"min": {"_id": c}, "max": {"_id": MaxKey()}} for c in cuts])
    unique = {_key(i): i for i in ids}
    docs = [{"_id": i, "v": "1"} for i in unique.values()]

    async def check() -> None:
        client: Any = AsyncMongoClient(secantus_url)
        coll = client["atomdb_migrate_test_workers"]["partition"]
        try:
            await coll.delete_many({})
            if docs:
                # A server may hold two values Python tells apart as one key (SecantusDB:
                # doubles below about 1e-140): the documents are those it holds.
                with contextlib.suppress(BulkWriteError):
                    await coll.insert_many(docs, ordered=False)
            stored = await to_list(coll.find({}))
            await coll.insert_one({"_id": "done-one", "v": "2"})
            spans = await plan_spans(
                coll, {"v": "1"}, batch_size=batch, workers=workers, chunks=chunks
            )
            seen: dict[str, int] = {}
            for span in spans:
                for doc in await to_list(coll.find({"v": "1", "_id": span.condition()})):
                    seen[repr(doc["_id"])] = seen.get(repr(doc["_id"]), 0) + 1
            assert seen == {repr(d["_id"]): 1 for d in stored}
        finally:
            await client.drop_database("atomdb_migrate_test_workers")
            await client.close()

    asyncio.run(check())


class Said:
    """A progress that adds up what it is told."""

    def __init__(self) -> None:
        self.total = 0
        self.advanced = 0

    def start(self, model: str, total: int) -> None:
        self.total += total

    def advance(self, count: int) -> None:
        self.advanced += count

    def finish(self) -> None:
        pass


async def test_the_progress_and_the_report_count_other_processes_workers(wdb: Any) -> None:
    """A worker of another process recorded 7 documents in its range (then died): the
    progress here advances by them, and the run's report counts them."""
    ids = list(range(40))
    coll, sp, other = await claimed_elsewhere(wdb, ids)
    assert other is not None
    assert await sp.ranges.record(other, {"migrated": 7})
    said = Said()
    runner = Runner(wdb, RunOptions(batch_size=10), progress=said)
    runner.split = sp
    report = await runner.upgrade(Tally)
    assert set((await hits(coll)).values()) == {1}
    assert said.advanced >= len(ids) + 7, "the other process's 7 advanced the progress here"
    assert report.migrated == len(ids) + 7, "its last recorded counts, as the range holds them"


def test_a_joiner_takes_the_runs_pace_and_write_concern_it_was_not_given() -> None:
    sums = [{"model": Tally.__model__, "from": "1", "to": "2", "checksum": "abc", "source": "/a"}]
    started = RunOptions(workers=4, write_concern="majority", max_rate=500.0, max_lag=3.0)
    record = run_record([Tally], None, sums, 4, started)
    moved = [{**sums[0], "source": "/elsewhere/step.py"}]
    assert run_record([Tally], None, moved, 2).get("key") == record["key"], (
        "the key is the code's: not where the files are, nor the pace, nor the workers"
    )
    other = [{**sums[0], "checksum": "abd"}]
    assert run_record([Tally], None, other, 4, started)["key"] != record["key"]
    joined = inherited(RunOptions(join=True, max_rate=100.0), record)
    assert (joined.write_concern, joined.max_rate, joined.max_lag) == ("majority", 100.0, 3.0)


async def test_a_run_whose_ranges_are_all_done_plans_again(wdb: Any) -> None:
    """Ranges of the same run left all done (a run killed after its last range): the
    next run plans again, and takes the documents that came behind them since."""
    coll = await seed(wdb, list(range(30)))
    runner = Runner(wdb, RunOptions(batch_size=10))
    runner.split = split(wdb, 2)
    await runner.upgrade(Tally)
    assert await runner.split.ranges.left("run-1") == 0
    await coll.insert_many(
        [{"_id": i, "__version__": "1", "__model__": Tally.__model__} for i in (-5, 100)]
    )
    again = Runner(wdb, RunOptions(batch_size=10))
    again.split = split(wdb, 2)
    report = await again.upgrade(Tally)
    assert report.migrated == 2
    assert set((await hits(coll)).values()) == {1}


async def test_a_failing_step_stops_every_worker_and_gives_the_ranges_back(
    wdb: Any, registry: MigrationRegistry
) -> None:
    class Fragile(VersionedModel):
        __model__ = "test_workers.Fragile"
        __version__ = 2

    def breaks_on_13(doc: dict[str, Any]) -> None:
        if doc["_id"] == 13:
            raise ValueError("thirteen")
        counted(doc)

    register_step(Fragile, 1, 2, breaks_on_13, registry=registry)
    coll = wdb[Fragile.__model__]
    docs = [{"_id": i, "__version__": "1", "__model__": Fragile.__model__} for i in range(80)]
    await coll.insert_many(docs)
    runner = Runner(wdb, RunOptions(batch_size=5, max_rate=400))
    runner.split = split(wdb, 3)
    with pytest.raises(StepFailedError):
        await runner.upgrade(Fragile)
    upgraded = await coll.count_documents({"__version__": "2"})
    await asyncio.sleep(0.5)
    assert await coll.count_documents({"__version__": "2"}) == upgraded, "no worker goes on"
    states = {d["state"] for d in await runner.split.ranges.documents("run-1")}
    assert "claimed" not in states, states


async def test_the_batch_a_dead_worker_was_writing_is_counted_for_it(wdb: Any) -> None:
    """A worker killed with a batch written, before it recorded it (it records its
    counts and the batch's ids before each write): the worker that takes its range
    over counts the documents of that batch found upgraded, for the dead one, once;
    the run counts every document it upgraded, no more."""
    ids = list(range(40))
    coll, sp, dead = await claimed_elsewhere(wdb, ids)
    assert dead is not None
    batch = [d["_id"] for d in await to_list(coll.find({"_id": dead.condition()}).limit(5))]
    assert await sp.ranges.record(dead, {"migrated": 0}, batch)
    # Its write lands; the worker dies before its next record.
    await coll.update_many({"_id": {"$in": batch}}, {"$set": {"__version__": "2", "hits": 1}})
    runner = Runner(wdb, RunOptions(batch_size=10))
    runner.split = sp
    report = await runner.upgrade(Tally)
    assert set((await hits(coll)).values()) == {1}
    docs = await sp.ranges.documents(sp.run)
    said = summary(docs)
    assert said["owners"][dead.owner]["counts"]["migrated"] == len(batch)
    assert said["counts"]["migrated"] == len(ids)
    assert report.migrated == len(ids), "the run's report counts the dead worker's batch"
    assert not any("inflight" in info for d in docs for info in d["by"].values())


#: Generated runs of the property on what a range records before each batch
#: (``WORKERS_COUNTS_EXAMPLES``).
COUNTS_EXAMPLES = int(os.environ.get("WORKERS_COUNTS_EXAMPLES", "8"))


@settings(max_examples=COUNTS_EXAMPLES, deadline=None)
@given(ids=st.lists(ID, max_size=40), batch=st.integers(1, 12), workers=st.integers(1, 3))
def test_a_range_records_what_was_written_and_the_batch_in_flight(
    secantus_url: str, ids: list[Any], batch: int, workers: int
) -> None:
    """Whatever the ``_id`` types, batch size and workers: before each batch is written,
    the range records exactly what the server holds upgraded in it, and the ids of the
    batch (not yet written), so that a worker killed at any moment leaves its range's
    counts short of the server by that batch at most, which a worker taking the range
    over counts; at the end, the ranges record every document upgraded."""
    registry = MigrationRegistry()
    register_step(Tally, 1, 2, counted, registry=registry)
    # Without NaN: a document whose _id is NaN is refused by the server at its write,
    # whoever writes it (its _id, unequal to itself in Python, is taken for changed).
    unique = {_key(i): i for i in ids if _key(i) != ("n", "nan")}
    docs = [{"_id": i, "__version__": "1", "__model__": Tally.__model__} for i in unique.values()]

    async def check() -> None:
        client: Any = AsyncMongoClient(secantus_url)
        db = client["atomdb_migrate_test_workers_counts"]
        coll = db[Tally.__model__]
        try:
            if docs:
                with contextlib.suppress(BulkWriteError):  # keys the server holds as one
                    await coll.insert_many(docs, ordered=False)
            sp = split(db, workers, ttl=60.0)  # no renewal of a lease: records per batch only
            record = sp.ranges.record

            async def upgraded(rng: Any) -> int:
                return int(await coll.count_documents({"_id": rng.condition(), "__version__": "2"}))

            async def held(rng: Any) -> int:
                doc = await sp.ranges.collection.find_one({"_id": rng.id})
                return int(doc["counts"].get("migrated", 0))

            calls: list[str] = []

            async def spy(rng: Any, counts: dict[str, int], inflight: Any = None) -> bool:
                calls.append(rng.id)
                assert inflight and len(inflight) <= batch, (inflight, batch)
                assert await upgraded(rng) == await held(rng), "all written is recorded"
                mine = await record(rng, counts, inflight)
                assert mine and await upgraded(rng) == await held(rng) == counts["migrated"]
                ahead = {"_id": {"$in": inflight}, "__version__": "1"}
                assert await coll.count_documents(ahead) == len(inflight), "not written yet"
                return mine

            sp.ranges.record = spy  # type: ignore[method-assign]
            runner = Runner(db, RunOptions(batch_size=batch), registry=registry)
            runner.split = sp
            report = await runner.upgrade(Tally)
            stored = await coll.count_documents({})
            assert report.migrated == stored == await coll.count_documents({"__version__": "2"})
            ranges = await sp.ranges.documents(sp.run)
            assert len(calls) == sum(math.ceil(r["count"] / batch) for r in ranges), "per batch"
            assert summary(ranges)["counts"].get("migrated", 0) == stored
        finally:
            await client.drop_database("atomdb_migrate_test_workers_counts")
            await client.close()

    asyncio.run(check())


async def test_the_heartbeat_of_a_take_that_records_its_counts_renews_the_lease_alone(
    wdb: Any,
) -> None:
    """A take that records its counts with the batch in flight (`LegRanges`): the
    heartbeat renews the lease and records no counts, which, taken once a batch was
    written while its ids are still recorded in flight, would count it twice for a
    worker killed then."""
    coll = await seed(wdb, list(range(10)))
    sp = split(wdb, 1, ttl=0.3)
    spans = await plan_spans(coll, {"__version__": "1"}, batch_size=100, workers=1)
    await sp.ranges.create(sp.run, Tally.__model__, spans, target="2", versions=["1"])
    seen: list[dict[str, Any]] = []

    async def take(rng: Any) -> None:
        first = (await sp.ranges.collection.find_one({"_id": rng.id}))["lease_until"]
        while (doc := await sp.ranges.collection.find_one({"_id": rng.id}))["lease_until"] == first:
            await asyncio.sleep(0.02)
        seen.append(doc["counts"])

    def so_far(rng: Any) -> dict[str, int]:
        return {"migrated": 99}

    worker = RangeWorker(sp.ranges, sp.run, take, so_far, poll=0.01, recorded=True)
    assert await worker.work() == 1
    assert seen == [{}], "the lease renewed, the counts left as they were"
    (doc,) = await sp.ranges.documents(sp.run)
    assert doc["counts"] == {"migrated": 99}, "recorded when done"
