"""Workers: each claims ranges of a run (`atomdb_migrate.engine.ranges`) and upgrades them.

`RangeWorker` is the loop of one worker, over any way of taking a range
(`Take`): claim a range, take it while a heartbeat renews its lease and
records its counts, mark it done; when no range is free, wait while others'
ranges are still being taken (to take over those whose lease runs out), and
stop when every range of the run is done.

`LegRanges` takes a range the engine's way: the client stream
(`atomdb_migrate.engine.stream.Stream.pump`) over the range's documents, on
a leg scoped to its ``_id`` values, counted in a report of its own and then
added to the model's; before each batch is written, the range records its
counts so far and the batch's ``_id`` values (`RangeStream`), and a worker
that takes a range over from a dead one counts for it the documents of that
batch found upgraded: the run counts what the server holds, whoever died.
`migrate_ranges` is the migrate phase of a run split for workers: the
ranges planned (or those of the same run, carried on), N workers in this
process, until every range of the model is done, whoever took it.
`JoinedProgress` is the progress of a process that joined a run.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from packaging.version import Version

from ..core.storage import VERSION_KEY
from ..driver.mongo import to_list
from ..driver.retry import Retry
from .leg import Leg
from .ranges import COUNTED, Range, Ranges, plan_spans, sharded_points, worker_id
from .report import ModelReport, Progress, QuietProgress
from .stream import Stream, rest

log = logging.getLogger("atomdb_migrate")

T = TypeVar("T")

#: Takes a range: upgrades its documents.
Take = Callable[[Range], Awaitable[None]]

#: What a range's taking has counted so far (`COUNTED`).
SoFar = Callable[[Range], dict[str, int]]


@dataclass
class Split:
    """A run split for workers: where its ranges are and how many workers take them here.

    Parameters
    ----------
    ranges
        The ranges collection.
    run
        The run's key (its record's, `atomdb_migrate.engine.ranges`).
    workers
        How many workers this process runs.
    poll
        Seconds between looks for a free range while others' are taken.

    """

    ranges: Ranges
    run: str
    workers: int = 1
    poll: float = 1.0
    #: Whether the ranges follow the chunks of a collection sharded on ``_id``.
    chunks: bool = True
    #: Every worker this process ran, by owner: its host, pid and ranges taken.
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)


class RangeWorker:
    """One worker: claims the run's ranges and takes each, until every range is done.

    Parameters
    ----------
    ranges
        The ranges collection.
    run
        The run whose ranges it claims.
    take
        Upgrades a range's documents.
    so_far
        What the taking of a range has counted so far: recorded with each
        renewal of its lease, and when it is done.
    model
        Only ranges of this model (None: any of the run's).
    poll
        Seconds between looks for a free range while others' are taken.
    stop
        Set: the worker stops taking new ranges.
    finished
        Whether the run is over, asked when no range is free (default: every
        range of the run, of the model, is done). A worker that joins a run
        before its ranges are planned waits for them with this.
    retry
        Sends the calls to the ranges collection again while they fail
        transiently (a claim whose answer was lost leaves a range claimed,
        taken over when its lease runs out); None: sent once.
    going
        Whether the run goes on, asked before each claim: False, the worker
        claims no more (a joiner, once the run it joined ended, failed say,
        and its lock is free); None: it goes on while ranges are left.
    recorded
        Whether `take` records the range's counts itself, with the batch it is
        writing (`LegRanges`): the heartbeat then renews the lease alone, since
        counts it recorded once a batch was written, beside that batch's ids
        still recorded as in flight, would count the batch twice if the worker
        died then.

    """

    def __init__(
        self,
        ranges: Ranges,
        run: str,
        take: Take,
        so_far: SoFar,
        *,
        model: str | None = None,
        poll: float = 1.0,
        stop: asyncio.Event | None = None,
        finished: Callable[[], Awaitable[bool]] | None = None,
        retry: Retry | None = None,
        going: Callable[[], Awaitable[bool]] | None = None,
        recorded: bool = False,
    ) -> None:
        self.ranges, self.run, self.take, self.so_far = ranges, run, take, so_far
        self.recorded = recorded
        self.model, self.poll = model, poll
        self.stop = stop or asyncio.Event()
        self.finished = finished or self.all_done
        self.retry = retry
        self.going = going
        #: This worker's owner token, host and pid.
        self.worker = worker_id()
        #: The ranges it marked done.
        self.done: list[str] = []
        #: Whether it saw the run end (`going`) while it took a range.
        self.ended = False

    async def work(self) -> int:
        """Take ranges until every range of the run (of the model) is done, or `stop`
        is set; how many this worker did."""
        while not self.stop.is_set():
            if self.ended:
                break
            if self.going is not None and not await self._call("the run goes on", self.going):
                break
            rng = await self._claim()
            if rng is not None:
                await self._take(rng)
                continue
            if await self.finished():
                break
            # Others hold the ranges left: wait, and take over any whose lease runs out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.poll)
        return len(self.done)

    async def _claim(self) -> Range | None:
        """Claim a range; cancelled meanwhile, the claim still ends, and a range it
        claimed is given back (else it would wait for its lease to run out)."""
        claim = partial(self.ranges.claim, self.run, self.worker, self.model)
        claiming = asyncio.ensure_future(self._call("claiming a range", claim))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                rng = await claiming
                if rng is not None:
                    await self.ranges.release(rng, {})
            raise

    async def all_done(self) -> bool:
        """Whether every range of the run (of the model) is done."""
        left = await self._call(
            "counting the ranges left", partial(self.ranges.left, self.run, self.model)
        )
        return not left

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, through the retry if there is one."""
        if self.retry is None:
            return await fn()
        return await self.retry.call(operation, fn)

    async def _take(self, rng: Range) -> None:
        """Take one range: the heartbeat renews its lease and records its counts;
        at the end it is done, or (an error, a cancel) given back."""
        taking = asyncio.ensure_future(self.take(rng))
        beat = asyncio.ensure_future(self._heartbeat(rng, taking))
        try:
            await taking
        except BaseException:
            beat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.ranges.release(rng, self.so_far(rng)))
            if self.ended and taking.cancelled() and not _cancelling():
                return  # the run ended: the range given back, the worker stops
            raise
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        done = partial(self.ranges.done, rng, self.so_far(rng))
        if await self._call("marking a range done", done):
            self.done.append(rng.id)
        else:
            log.warning("range %s was taken over before it was done here", rng.id)

    async def _heartbeat(self, rng: Range, taking: asyncio.Future[None]) -> None:
        """Renew the range's lease every third of it, with the counts so far; once the
        run no longer goes on (`going`), stop the `taking` of the range."""
        every = self.ranges.ttl / 3
        while True:
            await asyncio.sleep(every)
            try:
                if self.going is not None and not await self.going():
                    log.warning("range %s: the run ended; the range is given back", rng.id)
                    self.ended = True
                    taking.cancel()
                    return
                if self.recorded:
                    renewed = await self.ranges.renew(rng)
                else:
                    renewed = await self.ranges.record(rng, self.so_far(rng))
                if not renewed:
                    log.warning("range %s: lease lost, another worker took it over", rng.id)
                    return
            except Exception as exc:  # the next beat tries again
                log.warning("range %s: lease not renewed: %s", rng.id, exc)


def _cancelling() -> bool:
    """Whether the running task is being cancelled (not only a task it awaits)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def run_workers(workers: list[RangeWorker]) -> list[int]:
    """Run the workers side by side until each is done; how many ranges each did.

    The first error stops them all: the others are cancelled (each gives its
    range back) before it is raised, as it is, so that nothing goes on
    writing after the run stopped.

    """
    tasks = [asyncio.ensure_future(w.work()) for w in workers]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Advance:
    """A progress that only counts: the ranges' streams start and finish it no more."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, model: str, total: int) -> None:
        """Nothing: the run started the progress once."""

    def advance(self, count: int) -> None:
        self.progress.advance(count)

    def finish(self) -> None:
        """Nothing: the run finishes the progress once."""


class RangeStream(Stream):
    """The stream of a range's documents: before each batch is written, `writing` is
    told (the range's counts so far recorded, with the batch's ``_id`` values), so
    that what a worker killed between the renewals of its lease wrote is counted."""

    #: Told the leg and its batch before the batch is written; None: nothing.
    writing: Callable[[Leg, list[Any]], Awaitable[None]] | None = None

    async def _paced_write(self, leg: Leg, writes: list[Any]) -> None:
        if self.writing is not None:
            await self.writing(leg, [w.doc["_id"] for w in writes])
        await super()._paced_write(leg, writes)


class LegRanges:
    """Takes ranges the engine's way: the client stream over each range's documents.

    Parameters
    ----------
    legs
        A model's leg (its report counts what the ranges did here), by
        ``__model__`` name.
    stream
        The run's stream; its progress is told each batch, not each range.
    ranges
        Where each range's counts so far are recorded before each batch is
        written, with the batch's ``_id`` values (through the stream's retry),
        and where a range taken over from a dead worker counts its last batch;
        None: only the worker's heartbeat records them.

    """

    def __init__(
        self, legs: Mapping[str, Leg], stream: Stream, ranges: Ranges | None = None
    ) -> None:
        self.legs = legs
        self.ranges = ranges
        progress = _Advance(stream.progress)
        self.stream = RangeStream(
            stream.options,
            stream.retry,
            stream.pace,
            progress,
            stream.lease,
            redact=stream.redact,
            expressions=stream.expressions,
        )
        self.stream.writing = self.writing
        self._taking: dict[str, Leg] = {}
        #: The range each leg taking one is of, by the leg's ``id``.
        self._of: dict[int, Range] = {}

    def leg(self, rng: Range) -> Leg:
        """The leg of a range's documents, counted apart."""
        leg = self.legs[rng.model]
        report = ModelReport(leg.report.model, leg.report.target, leg.report.direction)
        return replace(leg, bounds=rng.condition(), report=report, skipped={})

    async def take(self, rng: Range) -> None:
        """Read, transform and write the range's documents still behind."""
        leg = self.leg(rng)
        self._taking[rng.id] = leg
        self._of[id(leg)] = rng
        try:
            await self.credit(rng, leg)
            await self.stream.pump(leg, {**leg.scope(), VERSION_KEY: wanted(rng)}, rng.span.count)
        finally:
            self._of.pop(id(leg), None)
            add_counts(self.legs[rng.model], leg)

    async def writing(self, leg: Leg, ids: list[Any]) -> None:
        """A batch of `leg`'s range, of `ids`, is about to be written: record the
        range's counts so far and the batch's ids (and renew its lease). A record that
        fails past the retry is left to the next batch, the heartbeat or the range's
        end; one the range is no longer ours for, too."""
        rng = self._of.get(id(leg))
        if rng is None or self.ranges is None:
            return
        record = partial(self.ranges.record, rng, counted(leg.report), ids)
        try:
            mine = await self.stream.retry.call("recording a range's counts", record)
        except Exception as exc:
            log.warning("range %s: counts not recorded: %s", rng.id, exc)
            return
        if not mine:
            log.debug("range %s: counts not recorded, another worker took it over", rng.id)

    def so_far(self, rng: Range) -> dict[str, int]:
        """What the taking of `rng` counted (`COUNTED`)."""
        leg = self._taking.get(rng.id)
        return {} if leg is None else counted(leg.report)

    async def credit(self, rng: Range, leg: Leg) -> None:
        """A range taken over from workers that died writing a batch (`Range.inflight`):
        count for each the documents of its batch now at the target, which nobody
        counted (this worker reads only those still behind)."""
        if self.ranges is None:
            return
        for former, ids in rng.inflight.items():
            found = await self.stream.retry.call(
                "reading a dead worker's last batch",
                partial(_find_versions, leg.collection, ids),
            )
            upgraded = sum(1 for v in found if leg.plan_for(v).kind == "current")
            credit = partial(self.ranges.credit, rng, former, upgraded)
            if await self.stream.retry.call("counting a dead worker's last batch", credit):
                rng.counts["migrated"] = rng.counts.get("migrated", 0) + upgraded


async def _find_versions(collection: Any, ids: list[Any]) -> list[Any]:
    """The stored ``__version__`` of the documents of `ids`."""
    cursor = collection.find({"_id": {"$in": ids}}, {VERSION_KEY: 1})
    return [doc.get(VERSION_KEY) for doc in await to_list(cursor)]


def wanted(rng: Range) -> Any:
    """The condition on ``__version__`` of a range's documents still behind: the stored
    values the plan read through the version index, or (without it) every value but the
    target. One string is given as itself, not in an ``$in``: a planner that takes
    ``{__version__: "1", _id: {$gte: a, $lt: b}}`` as bounds on the version index (in
    the index's ``_id`` order) may not do so for ``$in`` (SecantusDB sorts then)."""
    if rng.versions is None:
        return {"$ne": rng.target}
    if len(rng.versions) == 1 and isinstance(rng.versions[0], str):
        return rng.versions[0]
    return {"$in": list(rng.versions)}


def counted(report: ModelReport) -> dict[str, int]:
    """A report's counts a range records (`COUNTED`)."""
    return {name: int(getattr(report, name)) for name in COUNTED}


def add_counts(into: Leg, leg: Leg) -> None:
    """Add what a range's `leg` did to the model's leg `into` (its report and skipped)."""
    for name in COUNTED:
        setattr(into.report, name, getattr(into.report, name) + getattr(leg.report, name))
    into.report.failures += leg.report.failures
    into.skipped.update(leg.skipped)
    for name, n in leg.report.steps.items():
        into.report.steps[name] = into.report.steps.get(name, 0) + n


async def migrate_ranges(
    split: Split, leg: Leg, raws: list[Any], stream: Stream, progress: Progress | None = None
) -> bool:
    """The client part of a run's migrate phase, split for workers: the model's ranges
    planned (unless the run has them: it is carried on), then `Split.workers`
    workers here until every range of the model is done, here or elsewhere.

    Returns whether the reads went through the toolkit's version index (see
    `atomdb_migrate.engine.stream.rest`).

    """
    query, total, indexed = await rest(leg, raws)
    model = leg.cls.__model__
    await stream.retry.call(
        "planning the ranges", partial(_plan, split, leg, query, stream.options.batch_size)
    )
    progress = progress or QuietProgress()
    progress.start(model, total)
    taker = LegRanges({model: leg}, stream, ranges=split.ranges)
    workers = [
        RangeWorker(
            split.ranges,
            split.run,
            taker.take,
            taker.so_far,
            model=model,
            poll=split.poll,
            retry=stream.retry,
            recorded=True,
        )
        for _ in range(split.workers)
    ]
    mine = {w.worker["owner"] for w in workers}
    following = asyncio.ensure_future(_follow(split, model, mine, progress))
    try:
        await run_workers(workers)
    finally:
        following.cancel()
        progress.finish()
        for w in workers:
            seen = split.seen.setdefault(w.worker["owner"], {**w.worker, "ranges": 0})
            seen["ranges"] += len(w.done)
    others = await stream.retry.call("counting the ranges", partial(_others, split, model, mine))
    for name, n in others.items():
        setattr(leg.report, name, getattr(leg.report, name) + n)
    return indexed


class JoinedProgress:
    """The progress of a process that joined a run: started for each model once a range
    of it is claimed here, out of the run's documents of the model (what its ranges
    planned), and advanced by this process's workers and by what the others record
    (`_follow`), as the starter's is.

    Parameters
    ----------
    split
        The run's ranges.
    progress
        The process's progress.
    retry
        Sends the reads of the ranges again while they fail transiently.

    """

    def __init__(self, split: Split, progress: Progress, retry: Retry) -> None:
        self.split, self.progress, self.retry = split, progress, retry
        #: The owners of this process's workers (their counts advance it as they go).
        self.mine: set[str] = set()
        #: The model shown, None: none yet.
        self.model: str | None = None
        self._following: asyncio.Future[None] | None = None
        self._starting = asyncio.Lock()

    def taking(self, take: Take) -> Take:
        """`take`, the model of each range shown first."""

        async def taken(rng: Range) -> None:
            await self.show(rng.model)
            await take(rng)

        return taken

    async def show(self, model: str) -> None:
        """Start the progress of `model`, unless it is the one shown."""
        async with self._starting:
            if model == self.model:
                return
            planned = partial(self.split.ranges.planned, self.split.run, model)
            total = await self.retry.call("counting the run's documents", planned)
            self.end()
            self.model = model
            self.progress.start(model, total)
            following = _follow(self.split, model, self.mine, self.progress)
            self._following = asyncio.ensure_future(following)

    def end(self) -> None:
        """Finish the progress of the model shown, if any."""
        if self._following is not None:
            self._following.cancel()
            self._following = None
        if self.model is not None:
            self.progress.finish()
            self.model = None


#: The counts that advance a run's progress (documents taken, whatever became of them).
PROGRESSED = ("migrated", "skipped", "failed")


async def _follow(split: Split, model: str, mine: set[str], progress: Progress) -> None:
    """Advance the progress by what the workers of other processes record, every
    `Split.poll` seconds: the progress and its ETA are the whole run's."""
    told = 0
    while True:
        await asyncio.sleep(split.poll)
        try:
            others = await _others(split, model, mine)
        except Exception as exc:  # the next look tries again
            log.debug("the ranges' counts could not be read: %s", exc)
            continue
        now = sum(others[name] for name in PROGRESSED)
        if now > told:
            progress.advance(now - told)
            told = now


async def _others(split: Split, model: str, mine: set[str]) -> dict[str, int]:
    """What the workers of other processes counted in the model's ranges (as their
    last renewals recorded it): the run's report counts the whole run."""
    found = dict.fromkeys(COUNTED, 0)
    for doc in await split.ranges.documents(split.run):
        if doc.get("model") != model:
            continue
        for owner, info in (doc.get("by") or {}).items():
            if owner in mine or not isinstance(info, dict):
                continue
            for name in COUNTED:
                found[name] += int((info.get("counts") or {}).get(name, 0))
    return found


async def _plan(split: Split, leg: Leg, query: dict[str, Any], batch_size: int) -> None:
    """The model's ranges in the run, planned from `query` (the documents still behind),
    unless the run has ranges of the model not done yet (a run carried on, or this call
    sent again)."""
    model = leg.cls.__model__
    if await _has_ranges(split, model):
        if await split.ranges.left(split.run, model):
            return  # a run carried on
        # Every range done, and yet a run: documents came behind the old
        # ranges' cursors since. Plan again over what is behind now.
        await split.ranges.collection.delete_many({"run": split.run, "model": model})
    chunks = await sharded_points(leg.collection.database, leg.collection.name)
    spans = await plan_spans(
        leg.collection,
        query,
        batch_size=batch_size,
        workers=split.workers,
        chunks=chunks if split.chunks else None,
    )
    wanted = query[VERSION_KEY]
    versions = list(wanted["$in"]) if "$in" in wanted else None
    await split.ranges.create(split.run, model, spans, target=str(leg.target), versions=versions)


async def _has_ranges(split: Split, model: str) -> bool:
    """Whether the run has ranges of the model already (all done: carried on, nothing left)."""
    return bool(await split.ranges.collection.count_documents({"run": split.run, "model": model}))


def joined_leg(
    cls: Any, collection: Any, graph: Any, target: Version, direction: Any, report: ModelReport
) -> Leg:
    """The leg of a model whose ranges a joining worker takes."""
    return Leg(cls, collection, target, direction, graph, report)
