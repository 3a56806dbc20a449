"""The client stream alone: no runner, no survey, no lock, on mongomock.

`Stream.pump` reads the documents a query finds, runs each one's chain and
writes each batch with conditional updates. A document whose read field
changed between the read and the write is read again once; if it changed
again it is skipped. A change to a field the steps never looked at is kept.

"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockClient

from atomdb_migrate import MigrationRegistry, VersionedModel, register_step
from atomdb_migrate.driver.retry import Retry
from atomdb_migrate.engine import stream as stream_module
from atomdb_migrate.engine.lease import Lease
from atomdb_migrate.engine.leg import Leg
from atomdb_migrate.engine.options import UPGRADE, RunOptions
from atomdb_migrate.engine.pace import Pace
from atomdb_migrate.engine.report import ModelReport
from atomdb_migrate.engine.stream import Stream

#: Generated cases of the property below (``STREAM_EXAMPLES``).
STREAM_EXAMPLES = int(os.environ.get("STREAM_EXAMPLES", "40"))


class Counter(VersionedModel):
    __model__ = "test_stream.Counter"
    __version__ = 3


def doubled(doc: dict[str, Any]) -> None:
    """1 -> 2: reads ``n``."""
    doc["double"] = doc["n"] * 2


def tiered(doc: dict[str, Any]) -> None:
    """2 -> 3: reads ``double`` only."""
    doc["tier"] = "big" if doc["double"] > 4 else "small"


def steps(registry: MigrationRegistry) -> None:
    register_step(Counter, 1, 2, doubled, registry=registry)
    register_step(Counter, 2, 3, tiered, registry=registry)


class Said:
    """A progress that keeps what it is told."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.advanced = 0
        self.finished = 0

    def start(self, model: str, total: int) -> None:
        self.started.append((model, total))

    def advance(self, count: int) -> None:
        self.advanced += count

    def finish(self) -> None:
        self.finished += 1


def make_stream(batch_size: int, progress: Said) -> Stream:
    retry = Retry(0)
    pace = Pace(None, None, lambda: asyncio.sleep(0, None), lambda text: None)
    options = RunOptions(batch_size=batch_size)
    return Stream(options, retry, pace, progress, Lease(retry, []), expressions=False)


def make_leg(collection: Any, registry: MigrationRegistry) -> Leg:
    report = ModelReport(Counter.__model__, "3")
    target = Counter.__parsed_version__
    return Leg(Counter, collection, target, UPGRADE, registry.graph(Counter), report)


def upgraded(doc: dict[str, Any]) -> dict[str, Any]:
    """A document taken to 3 in Python, from where it is."""
    new = dict(doc)
    if new["__version__"] == "1":
        doubled(new)
    if new["__version__"] in ("1", "2"):
        tiered(new)
    new["__version__"] = "3"
    return new


async def test_the_stream_alone_takes_every_document_behind_to_the_target() -> None:
    registry = MigrationRegistry()
    steps(registry)
    collection = AsyncMongoMockClient()["stream"]["counters"]
    docs = [
        {"_id": 0, "__version__": "1", "n": 1},
        {"_id": 1, "__version__": "2", "n": 5, "double": 10},
        {"_id": 2, "__version__": "3", "n": 9, "double": 18, "tier": "big"},
        {"_id": 3, "__version__": "1", "n": 3},
        {"_id": 4, "__version__": "7", "n": 0},  # newer than the code: left alone
    ]
    await collection.insert_many([dict(d) for d in docs])
    said = Said()
    leg = make_leg(collection, registry)
    await make_stream(2, said).pump(leg, {"__version__": {"$ne": "3"}}, 4)
    stored = {d["_id"]: d async for d in collection.find()}
    assert stored == {
        0: upgraded(docs[0]),
        1: upgraded(docs[1]),
        2: docs[2],
        3: upgraded(docs[3]),
        4: docs[4],
    }
    report = leg.report
    assert (report.migrated, report.skipped, report.failed, report.newer) == (3, 0, 0, 1)
    assert said.started == [(Counter.__model__, 4)] and said.finished == 1
    # Every document migrated, in batches of two: not the newer one, left alone.
    assert said.advanced == 3


@settings(max_examples=STREAM_EXAMPLES, deadline=None)
@given(
    docs=st.lists(
        st.tuples(st.sampled_from(["1", "2", "3"]), st.integers(0, 5)), min_size=1, max_size=8
    ),
    meddled=st.dictionaries(st.integers(0, 7), st.integers(1, 3), max_size=4),
    batch_size=st.integers(1, 4),
)
def test_a_document_changed_between_read_and_write_keeps_the_change(
    docs: list[tuple[str, int]], meddled: dict[int, int], batch_size: int
) -> None:
    """Another writer sets ``n`` right before some of the stream's writes (up to
    `meddled[i]` times for document i): a version-1 document (its step reads ``n``)
    is read again and upgraded from the new value, or skipped if it changed again;
    a version-2 one (its step never reads ``n``) keeps the change and is upgraded
    without a re-read."""
    asyncio.run(_meddle(docs, meddled, batch_size))


async def _meddle(docs: list[tuple[str, int]], meddled: dict[int, int], batch_size: int) -> None:
    registry = MigrationRegistry()
    steps(registry)
    collection = AsyncMongoMockClient()["stream"]["counters"]
    stored = [
        {"_id": i, "__version__": v, "n": n, "double": n * 2} for i, (v, n) in enumerate(docs)
    ]
    await collection.insert_many([dict(d) for d in stored])
    left = {i: k for i, k in meddled.items() if i < len(docs)}
    real = stream_module.bulk_update

    async def meddling(coll: Any, writes: list[Any]) -> Any:
        for i in [w.query["_id"] for w in writes]:
            if left.get(i):
                left[i] -= 1
                await collection.update_one({"_id": i}, {"$inc": {"n": 10}})
                stored[i]["n"] += 10
        return await real(coll, writes)

    leg = make_leg(collection, registry)
    with mock.patch.object(stream_module, "bulk_update", meddling):
        await make_stream(batch_size, Said()).pump(leg, {"__version__": {"$ne": "3"}}, 0)

    expected: dict[int, dict[str, Any]] = {}
    skipped = 0
    for i, doc in enumerate(stored):
        times = meddled.get(i, 0)
        if doc["__version__"] == "1" and times >= 2:
            expected[i] = doc  # changed again after the re-read: skipped, as the writer left it
            skipped += 1
        elif doc["__version__"] == "3":
            expected[i] = doc
        else:
            expected[i] = upgraded(doc)  # from the last value written, the writer's change kept
    assert {d["_id"]: d async for d in collection.find()} == expected
    behind = sum(1 for d in stored if d["__version__"] != "3")
    assert (leg.report.migrated, leg.report.skipped) == (behind - skipped, skipped)
    assert len(leg.skipped) == skipped
