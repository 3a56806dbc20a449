"""Steps made of operations, run on the server as ``update_many`` calls.

A step whose functions are `StepOperations` (and that allows it) runs on the
server, where the server runs update pipelines, unless the run is throttled
(``--max-rate``: an update on the server cannot be paced) or retries chosen
documents (``--retry-failed``). `ServerSteps.choose` picks them for a
chain; the documents between them go through the client stream.

A server that refuses a pipeline update turns server steps off for the
rest of the runner's runs (`ServerSteps.enabled`): the step, and the ones
after it, run on the client. Why steps run on the client is said once per
process (`NOTICES`).

"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from ..core.caches import SaidOnce
from ..core.storage import VERSION_KEY
from ..driver.mongo import aggregate, count_each, runs_pipelines
from ..driver.retry import Retry
from ..exceptions import MigrateError, ServerError, ServerUnavailableError
from ..operations.running import StepOperations
from ..steps.versions import Step, parse_version, version_key
from .lease import RECOUNT_WAIT, Lease, answer_lost
from .leg import Leg, label, stored_or_none
from .options import RunOptions
from .pace import Pace
from .report import Progress
from .server_passes import FusedPass, note_passes, passes

log = logging.getLogger("atomdb_migrate")


#: Why steps of operations run on the client, warned once per process.
NOTICES = SaidOnce(f"{__name__}.NOTICES", log.warning)


class ServerSteps:
    """Chooses and runs a run's steps on the server.

    Parameters
    ----------
    options
        The run's options (``server_side``, ``max_rate``).
    retry
        The run's `Retry`, for every call to the server.
    pace
        The replication-lag pause, before each update.
    progress
        Told each server step as it runs.
    lease
        Held and checked before each update.
    notices
        Where to say why steps run on the client.

    """

    def __init__(
        self,
        options: RunOptions,
        retry: Retry,
        pace: Pace,
        progress: Progress,
        lease: Lease,
        notices: SaidOnce = NOTICES,
    ) -> None:
        self.options, self.retry, self.pace, self.progress = options, retry, pace, progress
        self.lease, self.notices = lease, notices
        #: Whether the server runs pipeline updates (False once it refused one).
        self.enabled = options.server_side

    def choose(self, leg: Leg, chain: tuple[Step, ...]) -> set[Step]:
        """The steps of the chain that run on the server (none where it runs no pipeline)."""
        down = leg.direction.down
        steps = {
            s
            for s in chain
            if s.server_side
            and isinstance(s.downgrade_fn if down else s.upgrade_fn, StepOperations)
        }
        if steps and self.enabled and self.options.max_rate is not None:
            self.notices(
                "--max-rate: steps of operations run on the client, in batches the rate "
                "allows (an update on the server cannot be throttled)"
            )
            return set()
        if steps and self.enabled and not runs_pipelines(leg.collection):
            self.notices(
                "this server runs no update pipeline: steps of operations run on the client"
            )
            return set()
        return steps if self.enabled and leg.ids is None else set()

    def passes(self, leg: Leg, chain: tuple[Step, ...], steps: set[Step]) -> list[tuple[Step, ...]]:
        """The chain cut into passes: consecutive server `steps` together, unless the
        run fuses none (``fuse_steps``; see `atomdb_migrate.engine.server_passes`)."""
        return passes(chain, steps, leg.direction.down, fuse=self.options.fuse_steps)

    async def run_pass(self, leg: Leg, steps: tuple[Step, ...], raws: list[Any]) -> bool:
        """Run a pass of server steps: one step as `run` does, several in one pass
        (`FusedPass`); False if the server refused it."""
        if len(steps) == 1:
            return await self.run(leg, steps[0], raws)
        return await FusedPass(self, leg, steps, raws).run()

    async def dry_run(
        self, leg: Leg, steps: set[Step], raws: list[Any], chain: tuple[Step, ...] = ()
    ) -> None:
        """Dry run: say which steps would run on the server, on how many documents, in
        which passes (of the `chain`), and how many of those each would refuse
        (`ModelReport.would_refuse`)."""
        report = leg.report
        note_passes(leg, self.passes(leg, chain, steps))
        for s in steps:
            report.server_steps[label(s)] = report.steps.get(label(s), 0)
            refused = await self._count_refused(leg, s, raws)
            if refused:
                report.would_refuse[label(s)] = refused

    def at_start(self, leg: Leg, step: Step, raws: list[Any]) -> Any:
        """The ``__version__`` condition of the documents a server step starts from:
        each stored form of its version found, and its canonical string."""
        start = step.to_version if leg.direction.down else step.from_version
        at_start = parse_version(start)
        found = [r for r in raws if stored_or_none(r) == at_start] + [start]
        values = list({version_key(r): r for r in found}.values())
        return {"$in": values} if len(values) > 1 else values[0]

    async def _count_refused(self, leg: Leg, step: Step, raws: list[Any]) -> int:
        """Dry run: how many documents stored at a server step's version it would refuse.

        The step's stages run in an aggregation, which writes nothing.

        """
        operations = step.downgrade_fn if leg.direction.down else step.upgrade_fn
        assert isinstance(operations, StepOperations)
        stages = operations.refusing({VERSION_KEY: self.at_start(leg, step, raws)})
        if not stages:
            return 0
        found = await self.retry.call(
            f"counting what step {label(step)} would refuse",
            partial(aggregate, leg.collection, stages),
        )
        return int(found[0]["refused"]) if found else 0

    async def run(self, leg: Leg, step: Step, raws: list[Any]) -> bool:
        """Run one step of operations as ``update_many`` calls; False if the server refused it.

        The documents of the step's common shape are changed first, with
        plain stages (see `StepOperations.server_updates`); the others with the
        general pipeline.

        Documents where the step cannot run (a value that does not convert)
        are left as they are, at the version the step leaves, for the client
        path to report.

        """
        report = leg.report
        operations = step.downgrade_fn if leg.direction.down else step.upgrade_fn
        assert isinstance(operations, StepOperations)
        start, end = step.from_version, step.to_version
        if leg.direction.down:
            start, end = end, start
        version = self.at_start(leg, step, raws)
        expected = report.steps.get(label(step), 0)
        self.progress.start(f"{report.model} {start} -> {end} (server)", expected)
        await self.lease.hold()
        at_start = {**leg.scope(), VERSION_KEY: version}
        before = await self.count(leg, at_start)
        retries = self.retry.retries
        modified = 0
        try:
            for query, pipeline in operations.server_updates({VERSION_KEY: version}, end):
                if modified and modified >= expected:
                    break  # the fast form took every document: no need to scan again
                await self.pace.before_write()
                await self.lease.verify()
                result = await self.retry.call(
                    f"running step {label(step)} on the server",
                    partial(leg.collection.update_many, query, pipeline),
                )
                modified += int(result.modified_count)
        except MigrateError as failed:
            modified = await self._stopped(leg, step, end, failed, (at_start, before, modified))
            self.fall_back(failed)  # raises, unless the server refused the pipeline
            return False
        finally:
            self.progress.advance(modified)
            self.progress.finish()
        if self.retry.retries > retries:
            # A call sent again: only the last answer's count is known, and an
            # attempt before may have changed documents. Count them instead.
            modified = before - await self.count(leg, at_start)
        self._record(leg, step, end, modified)
        return True

    async def _stopped(
        self,
        leg: Leg,
        step: Step,
        end: str,
        failed: MigrateError,
        counts: tuple[dict[str, Any], int, int],
    ) -> int:
        """After an update of a server step failed: what the step changed, recorded.

        `counts` are the condition on the documents at the step's start, how
        many it found before the step, and how many the answers said changed.

        """
        at_start, before, modified = counts
        # An attempt whose answer was lost may have changed documents:
        # what left the step's version is what the step did.
        lost = answer_lost(failed)
        after = await self.recount(leg, at_start)
        if after is not None:
            modified = before - after
        if modified:  # a step the server refused outright ran on the client
            self._record(leg, step, end, modified)
        if lost:
            # Still at its version, though the call whose answer never came
            # may yet change them.
            leg.report.unconfirmed += before - modified if after is None else after
        return modified

    def fall_back(self, failed: MigrateError) -> None:
        """Turn server steps off where the server refused a pipeline update; raise
        `failed` otherwise."""
        exc = getattr(failed, "error", None)
        if (
            not isinstance(failed, ServerError)
            or isinstance(failed, ServerUnavailableError)
            or not isinstance(exc, OperationFailure)
        ):
            raise failed
        self.notices(
            f"the server refused a pipeline update ({exc.details or exc}): "
            "steps of operations run on the client"
        )
        self.enabled = False

    def _record(self, leg: Leg, step: Step, end: str, modified: int) -> None:
        """Record what a server step changed, and carry it with the lease."""
        report = leg.report
        report.server_steps[label(step)] = modified
        if end == report.target:
            report.migrated += modified
        self.lease.carry()

    async def count(self, leg: Leg, query: dict[str, Any]) -> int:
        """How many documents `query` finds (sent again while the server fails)."""
        return int(
            await self.retry.call(
                f"counting documents in {leg.collection.name}",
                partial(leg.collection.count_documents, query),
            )
        )

    async def counts(self, leg: Leg, queries: list[dict[str, Any]]) -> list[int]:
        """How many documents each query finds, in one read (sent again while the
        server fails)."""
        return await self.retry.call(
            f"counting documents in {leg.collection.name}",
            partial(count_each, leg.collection, queries),
        )

    async def recount(self, leg: Leg, query: dict[str, Any]) -> int | None:
        """After a write stopped the run: how many documents `query` finds, asked
        once and briefly (None if the server does not say in time)."""
        try:
            return int(await asyncio.wait_for(leg.collection.count_documents(query), RECOUNT_WAIT))
        except (PyMongoError, TimeoutError):
            return None
