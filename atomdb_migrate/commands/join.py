"""A run of workers: its record in the lock document, ``upgrade --join``, what it shows.

``upgrade --workers N`` (N > 1) takes the lock as every upgrade does, and
writes the run's record into the lock document (`announce`): its key, the
models, each model's target and the checksums of the steps it runs. The
plan and the expand phase happen once, in that process; its migrate phase
splits the documents still behind into ranges of ``_id``
(`atomdb_migrate.engine.ranges`), which its N workers take, and so does
every process that joins (`join`). The verify and contract phases run once
there, after the last range; then the workers' counts go into the history
record (``workers``), and the ranges are deleted.

A process that joins (``upgrade --join``) reads the record, refuses a run
whose models, targets or checksums differ from its own code's
(`RunMismatchError`, before any write), and takes ranges until none is
left. A run killed before its end leaves its record and ranges: the next
``upgrade --workers N`` of the same code carries the ranges on.

"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..core.masking import mask
from ..engine.leg import Leg
from ..engine.lock import LOCK_ID, LeaseLock, utc
from ..engine.options import UPGRADE, RunOptions
from ..engine.ranges import Ranges, ranges_collection, summary
from ..engine.report import ModelReport, Progress
from ..engine.runner import Runner
from ..engine.workers import JoinedProgress, LegRanges, RangeWorker, Split, run_workers
from ..exceptions import JoinedRunFailedError, NoRunToJoinError, RunMismatchError
from ..model.versioned import VersionedModel
from ..steps.versions import parse_version
from .workspace import Workspace

__all__ = ["announce", "join", "run_record", "run_status", "split_for", "workers_done"]

#: What a run's record keeps of each step's checksum record (not its file's path).
SUMMED = ("model", "from", "to", "checksum", "imports")

#: Seconds between looks for a run to join, and for a free range.
POLL = 0.5


#: The options of the run's pace and writes its record carries, for joiners given none.
PACE = ("write_concern", "wtimeout", "max_rate", "max_lag")


def run_record(
    classes: list[type[VersionedModel]],
    to: str | None,
    checksums: list[dict[str, Any]],
    workers: int,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """The record of a run of workers: what a process must run to join it (its key
    sums it up), and the starter's pace and write concern (`PACE`)."""
    targets = {c.__model__: to if to is not None else str(c.__version__) for c in classes}
    # The code of each step, not where its file is: pods may hold the project elsewhere.
    sums = [{k: v for k, v in c.items() if k in SUMMED} for c in checksums]
    plan = {"models": [c.__model__ for c in classes], "targets": targets, "checksums": sums}
    text = json.dumps(plan, sort_keys=True, default=str)
    return {
        "key": hashlib.sha256(text.encode()).hexdigest()[:24],
        **plan,
        "workers": workers,
        "pace": {name: getattr(options or RunOptions(), name) for name in PACE},
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": datetime.now(UTC),
    }


def differences(run: dict[str, Any], mine: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What differs between the run's record and ours: models, targets, checksums."""
    found: dict[str, tuple[Any, Any]] = {}
    for what in ("models", "targets"):
        if run.get(what) != mine[what]:
            found[what] = (run.get(what), mine[what])
    if run.get("checksums") != mine["checksums"]:
        theirs = {_step(c): _short(c) for c in run.get("checksums") or []}
        ours = {_step(c): _short(c) for c in mine["checksums"]}
        changed = sorted(s for s in {*theirs, *ours} if theirs.get(s) != ours.get(s))
        found["checksums"] = (
            {s: theirs.get(s) for s in changed},
            {s: ours.get(s) for s in changed},
        )
    return found


def _short(record: dict[str, Any]) -> str:
    """A step's checksum as an error shows it: its first 12 digits, and how many
    modules of the project it imports (their checksums count too)."""
    return f"{str(record.get('checksum'))[:12]}/{len(record.get('imports') or {})} imports"


def _step(record: dict[str, Any]) -> str:
    return f"{record.get('model')} {record.get('from')} -> {record.get('to')}"


def inherited(options: RunOptions, run: dict[str, Any]) -> RunOptions:
    """A joiner's options: those of `PACE` it was given none of taken from the run's
    record (the starter's), so that every process writes with the same write concern
    and each keeps to the same rate and lag."""
    pace = run.get("pace") or {}
    taken = {n: pace[n] for n in PACE if getattr(options, n) is None and pace.get(n) is not None}
    return replace(options, **taken)


async def announce(lock: LeaseLock, record: dict[str, Any] | None) -> None:
    """Write the run's record into the lock document (None: clear it; taking the
    lock clears a former holder's)."""
    query = {"_id": LOCK_ID, "owner": lock.owner}
    update = {"$set": {"run": record}} if record is not None else {"$unset": {"run": ""}}
    await lock.collection.update_one(query, update)


def ranges_of(ws: Workspace, database: Any = None) -> Ranges:
    """The ranges collection of the workspace's database, leased for ``lock-ttl``."""
    database = ws.database if database is None else database
    return Ranges(database[ranges_collection(ws.config.lock_collection)], ttl=ws.config.lock_ttl)


def split_for(ws: Workspace, runner: Runner, record: dict[str, Any], workers: int) -> Split:
    """The split of a run of workers, for its runner (through the runner's database,
    with the run's write concern)."""
    return Split(ranges_of(ws, runner.database), record["key"], workers, poll=POLL)


async def workers_done(ws: Workspace, split: Split, record_id: Any) -> dict[str, Any]:
    """At the end of a run of workers: each worker's counts into the history record
    (``workers``, by owner), and the run's ranges deleted. Returns the workers' summary."""
    owners: dict[str, Any] = summary(await split.ranges.documents(split.run))["owners"]
    await ws.history().collection.update_one({"_id": record_id}, {"$set": {"workers": owners}})
    await split.ranges.drop(split.run)
    return owners


async def _run_to_join(
    ws: Workspace, mine: dict[str, Any], wait: float
) -> tuple[dict[str, Any], Any]:
    """The record of the run of workers in progress with our key, waiting up to `wait`,
    and the owner of the lock that holds it.

    Raises
    ------
    RunMismatchError
        If the run in progress (its lease alive) is not the one our code runs.
    NoRunToJoinError
        If none started within `wait` seconds.

    """
    deadline = time.monotonic() + wait
    while True:
        doc, run = await _lock_run(ws)
        alive = _unexpired(doc)
        if run is not None and run.get("key") == mine["key"]:
            return dict(run), doc.get("owner") if doc is not None else None
        if run is not None and alive:
            raise RunMismatchError(run, differences(run, mine))
        if time.monotonic() >= deadline:
            raise NoRunToJoinError(wait, doc if alive else None)
        await asyncio.sleep(POLL)


async def _lock_run(ws: Workspace) -> tuple[dict[str, Any] | None, Any]:
    """The lock document, and the run record it holds (None: none)."""
    doc = await ws.database[ws.config.lock_collection].find_one({"_id": LOCK_ID})
    return doc, None if doc is None else doc.get("run")


def _unexpired(doc: dict[str, Any] | None) -> bool:
    """Whether the lock document's lease has not run out."""
    expires = None if doc is None else utc(doc.get("expires_at"))
    return expires is not None and expires > datetime.now(UTC)


async def join(
    ws: Workspace,
    classes: list[type[VersionedModel]],
    checksums: list[dict[str, Any]],
    *,
    to: str | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    reports: list[ModelReport] | None = None,
) -> list[ModelReport]:
    """``upgrade --join``: take the ranges of the run of workers in progress for these
    models and target, with ``options.workers`` workers, until none is left.

    Writes nothing before the run's record matched ours (models, targets,
    checksums). Returns (and fills `reports`, as it goes) what this process
    did, per model.

    Raises
    ------
    RunMismatchError, NoRunToJoinError
        See `_run_to_join`.

    """
    options = (options or RunOptions()).with_settings(ws.config)
    await ws.connect()
    mine = run_record(classes, to, checksums, options.workers)
    run, holder = await _run_to_join(ws, mine, options.join_wait)
    options = inherited(options, run)
    runner = Runner(
        ws.database,
        options,
        progress=progress,
        registry=ws.registry,
        redact=lambda text: mask(text, ws.config.url),
    )
    reports = reports if reports is not None else []
    legs: dict[str, Leg] = {}
    for cls in classes:
        target = parse_version(run["targets"][cls.__model__])
        report = ModelReport(cls.__model__, str(target), UPGRADE.name)
        reports.append(report)
        graph = ws.registry.graph(cls)
        legs[cls.__model__] = Leg(
            cls, runner.database[cls.__model__], target, UPGRADE, graph, report
        )
    ranges = ranges_of(ws, runner.database)
    taker = LegRanges(legs, runner.stream, ranges=ranges)
    split = Split(ranges, run["key"], poll=POLL)
    shown = JoinedProgress(split, runner.stream.progress, runner.retry)
    joined = _Joined(ws, ranges, run, holder)
    finished = joined.over
    workers = [
        RangeWorker(
            ranges,
            run["key"],
            shown.taking(taker.take),
            taker.so_far,
            poll=POLL,
            finished=partial(_call, runner, "checking the joined run", finished),
            retry=runner.retry,
            going=joined.going,
            recorded=True,
        )
        for _ in range(options.workers)
    ]
    shown.mine.update(w.worker["owner"] for w in workers)
    try:
        await run_workers(workers)
    finally:
        shown.end()
    await runner.retry.call("reading how the joined run ended", joined.succeeded)
    return reports


class _Joined:
    """The run a joiner joined: whether it is over, and whether it succeeded.

    It follows the lock's holders that run it (a starter killed, and the same
    run carried on by another), so that at its end the history record of the
    last one tells how it ended.

    """

    def __init__(self, ws: Workspace, ranges: Ranges, run: dict[str, Any], holder: Any) -> None:
        self.ws, self.ranges, self.run = ws, ranges, run
        #: The lock's holders seen running it, the last one last.
        self.holders: list[Any] = [holder]
        #: Whether its last holder's lease ran out with the record still there.
        self.stopped = False

    async def over(self) -> bool:
        """Whether the joined run is over: its record left the lock document (it ended),
        or its starter died and every range there is, is done. While it lasts, a joiner
        waits for ranges to be planned (for the next model too)."""
        doc, run = await _lock_run(self.ws)
        if doc is None or not isinstance(run, dict) or run.get("key") != self.run["key"]:
            self.stopped = False
            return True
        if doc.get("owner") not in self.holders:
            self.holders.append(doc.get("owner"))
        self.stopped = not _unexpired(doc) and not await self.ranges.left(self.run["key"])
        return self.stopped

    async def going(self) -> bool:
        """Whether the run goes on: its record is in the lock document (its starter
        alive, or dead and carried on). Once it ended (succeeded, failed, interrupted),
        the joiner claims no range: its lock is free, another run may write."""
        _, run = await _lock_run(self.ws)
        return isinstance(run, dict) and run.get("key") == self.run["key"]

    async def succeeded(self) -> None:
        """Raise unless the run ended and its history record says it succeeded.

        Raises
        ------
        JoinedRunFailedError
            It ended failed or interrupted, or its starter stopped before its end
            (its ranges are done, but not its verify and contract phases).

        """
        if self.stopped:
            raise JoinedRunFailedError(self.run, "stopped", "its starter's lease ran out")
        found = None
        if self.holders:
            history = self.ws.history().collection
            query = {"owner": self.holders[-1]}
            found = await history.find_one(query, sort=[("started_at", -1)])
        outcome = None if found is None else found.get("outcome")
        if outcome != "succeeded":
            error = None if found is None else found.get("error")
            raise JoinedRunFailedError(self.run, str(outcome or "unknown"), error)


async def _call(runner: Runner, operation: str, fn: Callable[[], Awaitable[bool]]) -> bool:
    return await runner.retry.call(operation, fn)


async def run_status(ws: Workspace) -> dict[str, Any] | None:
    """The run of workers in progress (or left by a killed one): its record, and its
    ranges done, claimed and pending, with each owner's counts and rate; None: none."""
    await ws.connect()
    doc, run = await _lock_run(ws)
    if run is None:
        return None
    said = summary(await ranges_of(ws).documents(run["key"]))
    return {"run": run, "alive": _unexpired(doc), **said}
