"""The in-app sweep: an app upgrades its stored documents itself, slowly, in the background.

`Sweep` is a loop an app runs as a task beside its requests. Each turn:

1. it waits while the app says it is busy (the `busy` hook), or until `stop`;
2. it takes the migration lock (``command: "sweep"``) for one turn only: a
   plain ``upgrade`` holding it makes the sweep wait, and a plain
   ``upgrade`` started during a turn finds the lock held by the sweep
   (``--wait`` takes it at the end of the turn);
3. under the lock, it claims one range of ``_id`` of the sweep's run in the
   ranges collection (`atomdb_migrate.engine.ranges`), planning the ranges
   first when the run has none, and upgrades the range's documents through
   the client stream (`atomdb_migrate.engine.workers.LegRanges`), paced by
   ``max_rate`` and ``max_lag``;
4. it marks the range done, and gives the lock up.

Ranges are about one batch each, so a turn is short. Several app processes
share the work: each claims the next range, and a range whose process died
is taken over when its lease runs out. The sweep's run of a model is keyed
by the model and the code's version (`run_key`): processes running the same
code share its ranges. When every range is done and documents behind the
code's version were saved since (by processes of older code), the ranges
are planned again; when a whole plan migrated nothing, what is left is left
to ``upgrade`` (documents that fail a step, say), and the sweep of that model
ends.

The sweep changes documents only: renamed collections, indexes and
validators are ``upgrade``'s (the expand and contract of a deploy).

"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.storage import VERSION_KEY
from ..core.versions import version_forms
from ..exceptions import LockHeldError
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry
from .leg import Leg
from .lock import LOCK_ID, LeaseLock
from .options import UPGRADE, RunOptions
from .ranges import Ranges, plan_spans, ranges_collection, worker_id
from .report import ModelReport
from .runner import Runner
from .workers import LegRanges

log = logging.getLogger("atomdb_migrate")

__all__ = ["SWEEP_COMMAND", "Busy", "Sweep", "SweepReport", "run_key"]

#: The command a sweep's lock document names.
SWEEP_COMMAND = "sweep"

#: The workers a sweep plans its ranges for: so many that each range is about
#: one batch (`atomdb_migrate.engine.ranges.bucket_count`), a short turn.
ONE_BATCH_EACH = 1 << 20

#: The app's hook: True (or an awaitable of True) while the app is busy.
Busy = Callable[[], bool | Awaitable[bool]]


def run_key(model: str, target: Any) -> str:
    """The key of the sweep's run of a model, shared by the processes of the same code."""
    return f"sweep {model} -> {target}"


@dataclass
class SweepReport:
    """What a sweep did in this process."""

    #: Each model's counts (migrated, skipped, failed, newer...).
    models: dict[str, ModelReport] = field(default_factory=dict)
    #: The ranges this process took.
    ranges: int = 0
    #: Seconds paused because the app said it was busy.
    paused: float = 0.0
    #: Seconds waiting for the lock held by another (a plain upgrade, another sweep),
    #: or for a range while every range left is claimed by another process.
    waited: float = 0.0
    #: Whether every model's sweep ended (False: stopped before).
    finished: bool = False


class Sweep:
    """The in-app sweep's loop (see the module's documentation).

    Parameters
    ----------
    database
        The app's database (PyMongo async or Motor).
    models
        The versioned models to sweep.
    options
        ``max_rate``, ``max_lag``, ``batch_size`` (the size of a range),
        ``write_concern``; failing documents are recorded and left
        (``continue_on_error`` always).
    lock_collection, lock_ttl
        The migration lock's collection and lease, as the project's settings.
    busy
        The app's hook: the sweep pauses while it returns True.
    stop
        Set: the sweep ends after the range it is taking.
    poll
        Seconds between looks while the app is busy or the lock is held.

    """

    def __init__(
        self,
        database: Any,
        models: Sequence[type[VersionedModel]],
        *,
        options: RunOptions,
        lock_collection: str,
        lock_ttl: float = 30.0,
        registry: MigrationRegistry | None = None,
        busy: Busy | None = None,
        stop: asyncio.Event | None = None,
        poll: float = 1.0,
    ) -> None:
        self.registry = registry or MigrationRegistry.instance()
        options = replace(options, continue_on_error=True)
        self.runner = Runner(database, options, registry=self.registry)
        self.database = self.runner.database  # with the write concern asked
        self.locks = database[lock_collection]
        self.lock_ttl = lock_ttl
        self.ranges = Ranges(database[ranges_collection(lock_collection)], ttl=lock_ttl)
        self.busy = busy
        self.stop = stop or asyncio.Event()
        self.poll = poll
        self.worker = worker_id()
        self.report = SweepReport()
        self.legs: dict[str, Leg] = {}
        for cls in models:
            target = cls.__parsed_version__
            report = ModelReport(cls.__model__, str(target), UPGRADE.name)
            self.report.models[cls.__model__] = report
            graph = self.registry.graph(cls)
            collection = self.database[cls.__model__]
            self.legs[cls.__model__] = Leg(cls, collection, target, UPGRADE, graph, report)
        self.taker = LegRanges(self.legs, self.runner.stream)
        #: The models whose sweep ended.
        self.ended: set[str] = set()
        #: The runs this sweep planned ranges for: once such a plan is done
        #: having migrated nothing, the model's sweep ends.
        self.planned: set[str] = set()

    async def run(self) -> SweepReport:
        """Sweep until every model's sweep ended, or `stop` is set."""
        while not self.stop.is_set() and len(self.ended) < len(self.legs):
            if await self._app_busy():
                self.report.paused += await self._pause()
                continue
            lock = LeaseLock(self.locks, ttl=self.lock_ttl, command=SWEEP_COMMAND)
            try:
                async with lock:
                    self.runner.lease.lock = lock
                    await self._clear_run(lock)
                    took = await self._turn()
                if not took and len(self.ended) < len(self.legs):
                    # Every range left is another's, whose lease runs: look again later.
                    self.report.waited += await self._pause()
            except LockHeldError:
                self.report.waited += await self._pause()
            finally:
                self.runner.lease.lock = None
        self.report.finished = len(self.ended) == len(self.legs)
        return self.report

    async def _clear_run(self, lock: LeaseLock) -> None:
        """The lock taken over from a dead starter of ``upgrade --workers N``: its run's
        record leaves the lock document, which the sweep holds for itself (a joiner
        would take the sweep's lease for the run's, and write beside it). The run's
        ranges stay: the next ``upgrade --workers N`` of that code carries them on."""
        if isinstance(lock.replaced, dict) and "run" in lock.replaced:
            await self.locks.update_one(
                {"_id": LOCK_ID, "owner": lock.owner}, {"$unset": {"run": ""}}
            )

    async def _app_busy(self) -> bool:
        if self.busy is None:
            return False
        answer = self.busy()
        return bool(await answer) if inspect.isawaitable(answer) else bool(answer)

    async def _pause(self) -> float:
        """Wait `poll` seconds, or until `stop`; the seconds waited."""
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.poll)
        return time.monotonic() - began

    async def _turn(self) -> bool:
        """Under the lock: one range of the first model whose sweep has not ended;
        whether it took one (False: those left are claimed by others)."""
        for model, leg in self.legs.items():
            if model in self.ended:
                continue
            if not self.runner.stream.expressions:
                await self._whole(leg)  # mongomock: no $bucketAuto, no $type with a list
                return True
            run = run_key(model, leg.target)
            if not await self.ranges.left(run, model) and not await self._plan(run, leg):
                self.ended.add(model)
                continue
            rng = await self.ranges.claim(run, self.worker, model)
            if rng is None:
                continue  # all claimed by others, whose leases run
            try:
                await self.taker.take(rng)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.ranges.release(rng, self.taker.so_far(rng)))
                raise
            await self.ranges.done(rng, self.taker.so_far(rng))
            self.report.ranges += 1
            return True
        return False

    async def _whole(self, leg: Leg) -> None:
        """In memory (mongomock, an app's tests): the model's documents behind in one
        turn, without ranges."""
        await self.runner.stream.pump(leg, {VERSION_KEY: {"$ne": str(leg.target)}}, 0)
        self.report.ranges += 1
        self.ended.add(leg.cls.__model__)

    async def _plan(self, run: str, leg: Leg) -> bool:
        """Plan the run's ranges of the model (again, when its documents behind the
        code's version were saved since the last plan was done); False when there
        is nothing the sweep can do: none behind, or a plan this sweep made was
        done and migrated nothing (documents that fail a step are left to
        ``upgrade``)."""
        done = await self.ranges.documents(run)
        if run in self.planned and not any((d.get("counts") or {}).get("migrated") for d in done):
            return False  # a whole plan migrated nothing: what is left is upgrade's
        steps = leg.graph.steps
        behind = [f for s in steps if s.from_key < leg.target for f in version_forms(s.from_key)]
        query = {VERSION_KEY: {"$in": behind}}
        if not behind or not await self.database[leg.cls.__model__].count_documents(query, limit=1):
            return False
        await self.ranges.drop(run)
        spans = await plan_spans(
            leg.collection,
            {VERSION_KEY: {"$ne": str(leg.target)}},
            batch_size=self.runner.options.batch_size,
            workers=ONE_BATCH_EACH,
        )
        self.planned.add(run)
        await self.ranges.create(
            run, leg.cls.__model__, spans, target=str(leg.target), versions=None
        )
        return bool(spans)
