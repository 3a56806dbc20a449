"""Ranges of ``_id``: one run's documents shared among workers through the database.

A run split for workers divides the documents it is to upgrade into ranges
of ``_id`` (`plan_spans`): per BSON type bracket present (``$gte`` and
``$lt`` compare within one bracket only, so a range never spans two), the
boundaries of ``$bucketAuto`` over the pending documents, read through the
version index where it exists; on a sharded cluster the chunks' boundaries
on ``_id`` split them further (`chunk_points`), so that each range stays on
one shard.

The ranges live in a collection of the toolkit's, next to the lock and the
history (`ranges_collection`), one document each::

    {_id, run, model, n, bracket, lo, hi, target, versions, count,
     state: "pending" | "claimed" | "done", owner, host, pid,
     lease_until, claimed_at, done_at, counts,
     by: {<owner>: {host, pid, since, counts, inflight}}}

A worker claims one (`Ranges.claim`: one ``findOneAndUpdate``, a pending
range or one whose lease ran out), renews its lease while it works
(`Ranges.renew`), records its counts and, before each batch it writes, the
batch's ``_id`` values (`Ranges.record`, ``inflight``), and marks it done
(`Ranges.done`), or gives it back (`Ranges.release`). A worker that takes
a range over from a dead one counts for it the documents of the batch it
was writing found upgraded (`Ranges.credit`), once. Every write after the
claim matches the worker's ``owner``: a worker whose lease ran out and whose
range another took writes nothing more to it. Two workers on one range
after a lease ran out do no harm: each document's write is guarded by the
version it was read at, so each is transformed once.

"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey

from ..driver.mongo import TYPE_BRACKETS, aggregate, id_bracket, to_list
from .lock import utc

#: The suffix of the ranges collection's name, after the lock collection's.
RANGES_SUFFIX = "_ranges"

#: The brackets whose ``_id`` values a range may split (``$bucketAuto``
#: groups them, ``$gte``/``$lt`` compare them): numbers, strings, ObjectIds,
#: dates. The others take one range each.
SPLIT_BRACKETS = frozenset({2, 3, 7, 9})

#: The bracket of the numbers.
NUMBERS = 2

#: Not a number: the one value of its own range among numbers cut into ranges.
NAN = float("nan")

#: The most ranges planned per worker in each bracket: more ranges than
#: workers, so that a worker that joins late, or finishes early, finds one.
RANGES_PER_WORKER = 4

#: The states of a range.
PENDING, CLAIMED, DONE = "pending", "claimed", "done"

#: The counts a range records (those of a model report the stream changes).
COUNTED = ("migrated", "skipped", "failed", "newer", "beyond", "unconfirmed", "redone")

#: The bracket of each ``$type`` alias (the names ``$type`` answers).
_TYPE_NAMES: dict[str, int] = {
    "minKey": 0,
    "null": 1,
    "undefined": 1,
    "double": 2,
    "int": 2,
    "long": 2,
    "decimal": 2,
    "string": 3,
    "symbol": 3,
    "object": 4,
    "array": 5,
    "binData": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "timestamp": 10,
    "regex": 11,
    "maxKey": 12,
}


def ranges_collection(lock_collection: str) -> str:
    """The name of the ranges collection kept beside the lock collection `lock_collection`."""
    return lock_collection + RANGES_SUFFIX


@dataclass(frozen=True)
class Span:
    """The ``_id`` values of one type bracket from `lo` (included) to `hi` (excluded).

    None for `lo` or `hi` is open: from the bracket's first value, or to
    its last.

    """

    #: The bracket (`atomdb_migrate.driver.mongo.TYPE_BRACKETS`).
    bracket: int
    #: The first ``_id`` of the span, None: from the bracket's first.
    lo: Any = None
    #: The ``_id`` the span stops before, None: to the bracket's last.
    hi: Any = None
    #: How many pending documents the plan counted in the span.
    count: int = 0

    def condition(self) -> dict[str, Any]:
        """The condition on ``_id`` (a new dict) that finds the span's documents.

        ``$gte`` and ``$lt`` match values of their own type bracket only, so a
        bound keeps the span in its bracket; a span without either names the
        bracket's types (``$type``).

        """
        found: dict[str, Any] = {}
        if self.lo is not None:
            found["$gte"] = self.lo
        if self.hi is not None:
            found["$lt"] = self.hi
        return found or {"$type": list(TYPE_BRACKETS[self.bracket])}


@dataclass
class Range:
    """A range claimed by a worker: a span of a model's documents in one run."""

    #: The range document's ``_id``.
    id: str
    #: The run it belongs to (`RunRecord.key`).
    run: str
    #: The model's ``__model__`` name.
    model: str
    #: Its ``_id`` values.
    span: Span
    #: The version its documents go to.
    target: str
    #: The stored ``__version__`` values to read (through the version index);
    #: None: every document not at the target.
    versions: list[Any] | None
    #: Who claimed it.
    owner: str
    #: The counts recorded before this claim (a range taken over).
    counts: dict[str, int] = field(default_factory=dict)
    #: The ``_id`` values of the batch each former claimer was writing when it
    #: stopped recording (`Ranges.record`), by owner: a range taken over from a
    #: dead worker.
    inflight: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Range:
        """The range a range document holds."""
        span = Span(doc["bracket"], doc.get("lo"), doc.get("hi"), doc.get("count", 0))
        return cls(
            doc["_id"],
            doc["run"],
            doc["model"],
            span,
            doc["target"],
            doc.get("versions"),
            doc.get("owner", ""),
            dict(doc.get("counts") or {}),
            {
                owner: list(info["inflight"])
                for owner, info in (doc.get("by") or {}).items()
                if owner != doc.get("owner") and isinstance(info, dict) and "inflight" in info
            },
        )

    def condition(self) -> dict[str, Any]:
        """The condition on ``_id`` of its documents (`Span.condition`)."""
        return self.span.condition()


# ----------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------
def spans_of(bracket: int, points: Sequence[Any], counts: Sequence[int] = ()) -> list[Span]:
    """The spans of one bracket cut at `points` (sorted ``_id`` values of that bracket):
    the first open below, the last open above. `counts` gives each span's count."""
    bounds: list[Any] = [None, *points, None]
    return [
        Span(bracket, bounds[i], bounds[i + 1], counts[i] if i < len(counts) else 0)
        for i in range(len(bounds) - 1)
    ]


def chunk_points(chunks: Iterable[dict[str, Any]]) -> dict[int, list[Any]]:
    """The boundaries of a collection sharded on ``_id`` (its ``config.chunks``
    documents), by type bracket: where a range is to be cut so that it stays on
    one shard. ``MinKey`` and ``MaxKey`` cut nothing; a bound whose type is
    not known here is left out."""
    points: dict[int, list[Any]] = {}
    for chunk in chunks:
        for end in ("min", "max"):
            value = (chunk.get(end) or {}).get("_id")
            if isinstance(value, (MinKey, MaxKey)) or _is_nan(value):
                continue  # NaN cuts nothing either: it has its span (`nan_span`)
            bracket = id_bracket(value)
            if bracket is not None and bracket in SPLIT_BRACKETS:
                points.setdefault(bracket, []).append(value)
    return {b: merge_points(found, ()) for b, found in points.items()}


def merge_points(buckets: Sequence[Any], chunks: Sequence[Any]) -> list[Any]:
    """The cut points of a bracket: the buckets' and the chunks' (`chunk_points`), sorted
    without repeats."""
    found: list[Any] = []
    for value in sorted([*buckets, *chunks], key=_point_key):
        if not found or _point_key(found[-1]) != _point_key(value):
            found.append(value)
    return found


def _point_key(value: Any) -> Any:
    """A cut point as Python compares it in BSON's order within its bracket: the
    numbers by value, whatever their type (int, Int64, double, Decimal128)."""
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(value)
    return value


def _is_nan(value: Any) -> bool:
    """Whether `value` is NaN, a double's or a Decimal128's."""
    if isinstance(value, Decimal128):
        return value.to_decimal().is_nan()
    return isinstance(value, float) and math.isnan(value)


def bucket_count(count: int, batch_size: int, workers: int) -> int:
    """How many ranges to cut `count` documents of one bracket into: one per batch,
    at most `RANGES_PER_WORKER` per worker (and at least one)."""
    by_batch = math.ceil(count / max(batch_size, 1))
    return max(1, min(by_batch, RANGES_PER_WORKER * max(workers, 1)))


async def bracket_counts(collection: Any, query: dict[str, Any]) -> dict[int, int]:
    """How many documents `query` finds, by the type bracket of their ``_id``."""
    pipeline = [
        {"$match": query},
        {"$group": {"_id": {"$type": "$_id"}, "n": {"$sum": 1}}},
    ]
    counts: dict[int, int] = {}
    for row in await aggregate(collection, pipeline):
        bracket = _TYPE_NAMES.get(row["_id"])
        if bracket is not None:
            counts[bracket] = counts.get(bracket, 0) + int(row["n"])
    return counts


async def bucket_points(
    collection: Any, query: dict[str, Any], bracket: int, buckets: int
) -> tuple[list[Any], list[int]]:
    """The cut points ``$bucketAuto`` finds among the ``_id`` values of one bracket
    that `query` finds (each bucket's first value but the first), and each bucket's
    count."""
    if buckets <= 1:
        return [], []
    typed = {"$and": [query, {"_id": {"$type": list(TYPE_BRACKETS[bracket])}}]}
    pipeline: list[dict[str, Any]] = [
        {"$match": typed},
        {"$bucketAuto": {"groupBy": "$_id", "buckets": buckets}},
    ]
    rows = await aggregate(collection, pipeline)
    return [row["_id"]["min"] for row in rows[1:]], [int(row["count"]) for row in rows]


async def plan_spans(
    collection: Any,
    query: dict[str, Any],
    *,
    batch_size: int,
    workers: int,
    chunks: dict[int, list[Any]] | None = None,
) -> list[Span]:
    """The spans of ``_id`` that share the documents `query` finds among workers.

    Per type bracket present: split by ``$bucketAuto`` (numbers, strings,
    ObjectIds, dates; `bucket_count` ranges), and at the `chunks`' boundaries
    (`chunk_points`, a sharded collection); one span for each other bracket.
    A collection with nothing to do has no span.

    """
    spans: list[Span] = []
    for bracket, count in sorted((await bracket_counts(collection, query)).items()):
        if bracket not in SPLIT_BRACKETS:
            spans.append(Span(bracket, count=count))
            continue
        points, counts = await bucket_points(
            collection, query, bracket, bucket_count(count, batch_size, workers)
        )
        cut = (chunks or {}).get(bracket, [])
        if cut:
            points, counts = merge_points(points, cut), []
        spans += spans_of(bracket, points, counts or [count])
        if bracket == NUMBERS and points:
            spans += await nan_span(collection, query)
    return spans


async def nan_span(collection: Any, query: dict[str, Any]) -> list[Span]:
    """The span of the NaN ``_id`` that `query` finds (one at most: NaN equals NaN, a
    double's or a Decimal128's), where the numbers are cut into spans: NaN sorts
    before every number, yet neither ``$lt`` nor ``$gte`` a number matches it, so the
    first span (``$lt``) would leave it out. ``{$gte: NaN}`` matches NaN alone."""
    n = await collection.count_documents({"$and": [query, {"_id": NAN}]})
    return [Span(NUMBERS, NAN, None, int(n))] if n else []


async def sharded_points(database: Any, collection: str) -> dict[int, list[Any]]:
    """The chunks' boundaries of a collection sharded on ``_id`` (`chunk_points`);
    none where it is not sharded, is sharded on another key, or ``config`` cannot
    be read."""
    try:
        config = database.client["config"]
        namespace = f"{database.name}.{collection}"
        found = await config["collections"].find_one({"_id": namespace})
        if not found or list((found.get("key") or {}).keys()) != ["_id"]:
            return {}
        if found["key"]["_id"] == "hashed":
            return {}
        match = {"uuid": found["uuid"]} if "uuid" in found else {"ns": namespace}
        chunks = await to_list(config["chunks"].find(match))
    except Exception:  # no config database to read: not sharded here
        return {}
    return chunk_points(chunks)


# ----------------------------------------------------------------------
# The ranges collection
# ----------------------------------------------------------------------
def worker_id() -> dict[str, Any]:
    """A new worker's ``owner`` token, with its host and process."""
    return {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}


class Ranges:
    """The ranges collection: a run's ranges, claimed, renewed and done by workers.

    Parameters
    ----------
    collection:
        The ranges collection (PyMongo async or Motor).
    ttl: float
        Seconds a range's lease lasts unless renewed.

    """

    def __init__(self, collection: Any, *, ttl: float = 30.0) -> None:
        self.collection = collection
        self.ttl = ttl

    def _until(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.ttl)

    async def create(
        self,
        run: str,
        model: str,
        spans: Sequence[Span],
        *,
        target: str,
        versions: list[Any] | None,
    ) -> int:
        """Add a model's `spans` to the run as pending ranges, unless the run already
        has ranges of the model (a run carried on); how many it has now."""
        there = await self.collection.count_documents({"run": run, "model": model})
        if there:
            return int(there)
        docs = []
        for n, span in enumerate(spans):
            doc: dict[str, Any] = {
                "_id": f"{run}:{model}:{n}",
                "run": run,
                "model": model,
                "n": n,
                "bracket": span.bracket,
                "count": span.count,
                "target": target,
                "versions": versions,
                "state": PENDING,
                "counts": {},
            }
            if span.lo is not None:
                doc["lo"] = span.lo
            if span.hi is not None:
                doc["hi"] = span.hi
            docs.append(doc)
        if docs:
            await self.collection.insert_many(docs, ordered=False)
        return len(docs)

    async def claim(
        self, run: str, worker: dict[str, Any], model: str | None = None
    ) -> Range | None:
        """Claim a range of the run (of `model` only, if given) for `worker`
        (`worker_id`): a pending one, or one whose lease ran out; None if none is
        free now."""
        now = datetime.now(UTC)
        query: dict[str, Any] = {
            "run": run,
            "$or": [{"state": PENDING}, {"state": CLAIMED, "lease_until": {"$lte": now}}],
        }
        if model is not None:
            query["model"] = model
        mine = f"by.{worker['owner']}"
        update = {
            "$set": {
                "state": CLAIMED,
                **worker,
                "lease_until": self._until(),
                "claimed_at": now,
                f"{mine}.host": worker.get("host"),
                f"{mine}.pid": worker.get("pid"),
                f"{mine}.since": now,
            },
            "$inc": {"claims": 1},
        }
        doc = await self.collection.find_one_and_update(
            query, update, sort=[("model", 1), ("n", 1)], return_document=True
        )
        return None if doc is None else Range.from_document(doc)

    async def renew(self, rng: Range) -> bool:
        """Extend a claimed range's lease; False if it is no longer the claimer's."""
        result = await self.collection.update_one(
            {"_id": rng.id, "owner": rng.owner, "state": CLAIMED},
            {"$set": {"lease_until": self._until()}},
        )
        return bool(result.matched_count)

    async def record(
        self, rng: Range, counts: dict[str, int], inflight: list[Any] | None = None
    ) -> bool:
        """Record what the claimer has done in the range so far (added to what the
        range held when claimed), and the ``_id`` values of the batch it is about to
        write (`inflight`; None: as recorded before), renewing its lease."""
        fields = {**_counted(rng, counts), "lease_until": self._until()}
        if inflight is not None:
            fields[f"by.{rng.owner}.inflight"] = inflight
        result = await self.collection.update_one(
            {"_id": rng.id, "owner": rng.owner, "state": CLAIMED}, {"$set": fields}
        )
        return bool(result.matched_count)

    async def credit(self, rng: Range, former: str, migrated: int) -> bool:
        """Count, for the `former` claimer of a range taken over, the documents of the
        batch it was writing when it died (`Range.inflight`) found upgraded: once,
        whoever takes the range over next."""
        mine = f"by.{former}"
        result = await self.collection.update_one(
            {
                "_id": rng.id,
                "owner": rng.owner,
                "state": CLAIMED,
                f"{mine}.inflight": {"$exists": True},
            },
            {
                "$inc": {f"{mine}.counts.migrated": migrated, "counts.migrated": migrated},
                "$unset": {f"{mine}.inflight": ""},
            },
        )
        return bool(result.matched_count)

    async def done(self, rng: Range, counts: dict[str, int]) -> bool:
        """Mark a range done with its counts; False if it was no longer the claimer's."""
        result = await self.collection.update_one(
            {"_id": rng.id, "owner": rng.owner, "state": CLAIMED},
            {
                "$set": {
                    "state": DONE,
                    **_counted(rng, counts),
                    "done_at": datetime.now(UTC),
                },
                "$unset": {f"by.{rng.owner}.inflight": ""},
            },
        )
        return bool(result.matched_count)

    async def release(self, rng: Range, counts: dict[str, int]) -> bool:
        """Give a claimed range back, pending, with its counts so far (a worker
        stopping before its end)."""
        result = await self.collection.update_one(
            {"_id": rng.id, "owner": rng.owner, "state": CLAIMED},
            {
                "$set": {"state": PENDING, **_counted(rng, counts)},
                "$unset": {f"by.{rng.owner}.inflight": ""},
            },
        )
        return bool(result.matched_count)

    async def left(self, run: str, model: str | None = None) -> int:
        """How many ranges of the run (of `model`) are not done."""
        query: dict[str, Any] = {"run": run, "state": {"$ne": DONE}}
        if model is not None:
            query["model"] = model
        return int(await self.collection.count_documents(query))

    async def planned(self, run: str, model: str) -> int:
        """How many documents the plan counted behind in the run's ranges of `model` (the
        total of its progress)."""
        found = await to_list(self.collection.find({"run": run, "model": model}, {"count": 1}))
        return sum(int(doc.get("count") or 0) for doc in found)

    async def documents(self, run: str | None = None) -> list[dict[str, Any]]:
        """The range documents of the run (every run's, for None), in order."""
        query = {} if run is None else {"run": run}
        return await to_list(self.collection.find(query, sort=[("run", 1), ("model", 1), ("n", 1)]))

    async def free(self, run: str | None = None) -> int:
        """Make every claimed range of the run (of every run, for None) pending again,
        whoever claimed it (``unlock``: its workers are dead); how many."""
        query: dict[str, Any] = {"state": CLAIMED}
        if run is not None:
            query["run"] = run
        result = await self.collection.update_many(query, {"$set": {"state": PENDING}})
        return int(result.modified_count)

    async def drop(self, run: str) -> int:
        """Delete the run's ranges (the run ended); how many."""
        return int((await self.collection.delete_many({"run": run})).deleted_count)


def _counted(rng: Range, counts: dict[str, int]) -> dict[str, Any]:
    """The fields a claimer's `counts` set: the range's (added to those it held when
    claimed), and the claimer's own under ``by.<owner>``."""
    return {"counts": _added(rng.counts, counts), f"by.{rng.owner}.counts": dict(counts)}


def _added(before: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    return {k: int(before.get(k, 0)) + int(counts.get(k, 0)) for k in {*before, *counts}}


def summary(docs: Iterable[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """What operators see of a run's ranges: how many are done, claimed (``expired``:
    of those, with their lease run out) and pending; by owner (every worker that
    claimed a range, a dead one too), its ranges (by state; ``taken over``: claimed
    then taken by another), its own counts and rate (documents upgraded per second
    since its first claim); the documents planned and counted in all."""
    now = now or datetime.now(UTC)
    states = {PENDING: 0, CLAIMED: 0, DONE: 0, "expired": 0}
    owners: dict[str, dict[str, Any]] = {}
    total: dict[str, int] = {}
    planned = 0
    for doc in docs:
        state = doc.get("state", PENDING)
        states[state] = states.get(state, 0) + 1
        until = utc(doc.get("lease_until"))
        if state == CLAIMED and until is not None and until <= now:
            states["expired"] += 1
        planned += int(doc.get("count", 0))
        total = _added(total, doc.get("counts") or {})
        for owner, info in (doc.get("by") or {}).items():
            held = state if owner == doc.get("owner") else "taken over"
            _owner_saw(owners, owner, info, held)
    for seen in owners.values():
        since = seen.pop("since", None)
        seconds = (now - since).total_seconds() if since is not None else 0.0
        done = seen["counts"].get("migrated", 0)
        seen["rate"] = round(done / seconds, 1) if seconds > 0 else 0.0
    return {"ranges": states, "planned": planned, "counts": total, "owners": owners}


def _owner_saw(owners: dict[str, dict[str, Any]], owner: str, info: Any, held: str) -> None:
    """Add a range an owner claimed (its ``by.<owner>`` entry) to what `summary` says of it."""
    info = info if isinstance(info, dict) else {}
    seen = owners.setdefault(
        owner, {"host": info.get("host"), "pid": info.get("pid"), "ranges": {}, "counts": {}}
    )
    seen["ranges"][held] = seen["ranges"].get(held, 0) + 1
    seen["counts"] = _added(seen["counts"], info.get("counts") or {})
    start = utc(info.get("since"))
    if start is not None and (seen.get("since") is None or start < seen["since"]):
        seen["since"] = start
