"""Consecutive server steps run in one pass: one pipeline update per stored version.

A model several steps behind, all of them operations, would be read and
rewritten once per step by step-by-step ``update_many`` calls. Consecutive
server steps (`passes`) run instead as one pass: one ``update_many`` whose
pipeline holds the stages of each step in order, each setting the version it
leaves (`atomdb_migrate.operations.running.fused_pipeline`), filtered on the
version the pass starts from. Documents the survey found stored at the
version of a later step of the pass get an update of their own, from that
step on; the updates go last version first, so each document is written once.

Every guarantee of the step-by-step form holds: the version is in each
update's filter (a document an application wrote meanwhile is either taken
whole or left), each call is sent again while the server fails, the lease is
checked and the replication lag awaited before each, and each step keeps its
own count (`ModelReport.server_steps`); the pass is named in
`ModelReport.server_passes`. Where a step refuses a document (a value that
does not convert, or cannot be put where it is moved), the document stays at
that step's version as the steps before it left it, for the client path to
report, as step by step.

"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

from ..core.storage import VERSION_KEY
from ..driver.retry import Retry
from ..exceptions import MigrateError
from ..operations.running import StepOperations, fused_updates
from ..steps.versions import Step, parse_version
from .lease import Lease, answer_lost
from .leg import Leg, label, stored_or_none
from .pace import Pace
from .report import Progress


class PassOwner(Protocol):
    """What runs a pass (`atomdb_migrate.engine.server_steps.ServerSteps`): the
    run's retry, pace, progress and lease, and its server calls."""

    retry: Retry
    pace: Pace
    progress: Progress
    lease: Lease

    def at_start(self, leg: Leg, step: Step, raws: list[Any]) -> Any: ...

    async def counts(self, leg: Leg, queries: list[dict[str, Any]]) -> list[int]: ...

    async def recount(self, leg: Leg, query: dict[str, Any]) -> int | None: ...

    def fall_back(self, failed: MigrateError) -> None: ...


def operations_of(step: Step, down: bool) -> StepOperations | None:
    """The step's operations in the run's direction (None: a Python function)."""
    function = step.downgrade_fn if down else step.upgrade_fn
    return function if isinstance(function, StepOperations) else None


def ends(step: Step, down: bool) -> tuple[str, str]:
    """The versions a step takes documents from and to, in the run's direction."""
    return (step.to_version, step.from_version) if down else (step.from_version, step.to_version)


def passes(
    chain: tuple[Step, ...], server: set[Step], down: bool, fuse: bool = True
) -> list[tuple[Step, ...]]:
    """The chain cut into passes, in order: consecutive server steps together,
    every other step alone; each step alone if not `fuse`."""
    cut: list[tuple[Step, ...]] = []
    for step in chain:
        last = cut[-1] if cut else ()
        if fuse and step in server and bool(last) and last[-1] in server:
            cut[-1] = (*last, step)
        else:
            cut.append((step,))
    return cut


def pass_label(steps: tuple[Step, ...]) -> str:
    """A pass as the report names it, like a step: ``"1 -> 4"``."""
    low = min(steps, key=lambda s: s.from_key).from_version
    high = max(steps, key=lambda s: s.to_key).to_version
    return f"{low} -> {high}"


def note_passes(leg: Leg, cut: list[tuple[Step, ...]]) -> None:
    """Name the passes of several steps in the report (`ModelReport.server_passes`)."""
    for steps in cut:
        if len(steps) > 1:
            leg.report.server_passes[pass_label(steps)] = [label(s) for s in steps]


class FusedPass:
    """One pass of several server steps over a leg's documents.

    Parameters
    ----------
    owner
        The `ServerSteps` running it (`PassOwner`): its retry, pace,
        progress, lease, and what a failed update does.
    leg
        The documents.
    steps
        The pass's steps, in the run's order.
    raws
        The stored ``__version__`` values the survey found.

    """

    def __init__(
        self, owner: PassOwner, leg: Leg, steps: tuple[Step, ...], raws: list[Any]
    ) -> None:
        self.owner, self.leg, self.steps, self.raws = owner, leg, steps, raws
        down = leg.direction.down
        self.ends = [ends(s, down) for s in steps]
        self.operations = [operations_of(s, down) for s in steps]
        #: The updates: by the index of the step each starts from, its filter on
        #: the documents' version, last version first.
        self.starts = [j for j in range(len(steps)) if j == 0 or self._found(j)][::-1]

    def _found(self, j: int) -> bool:
        """Whether the survey found documents stored at the version step `j` starts from."""
        start = parse_version(self.ends[j][0])
        return any(stored_or_none(r) == start for r in self.raws)

    def _query(self, j: int) -> dict[str, Any]:
        version = self.owner.at_start(self.leg, self.steps[j], self.raws)
        return {**self.leg.scope(), VERSION_KEY: version}

    def updates(self, j: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The updates starting from step `j`, through the last: the fast form, where
        there is one, then the general pipeline (`fused_updates`)."""
        chosen = zip(self.operations[j:], self.ends[j:], strict=True)
        steps = [(ops, end) for ops, (_, end) in chosen if ops is not None]
        return fused_updates(steps, self._query(j))

    async def run(self) -> bool:
        """Run the pass; False if the server refused it (the steps then run on the
        client; see `ServerSteps.run`)."""
        owner, report = self.owner, self.leg.report
        start, end = self.ends[0][0], self.ends[-1][1]
        expected = report.steps.get(label(self.steps[-1]), 0)
        owner.progress.start(
            f"{report.model} {start} -> {end} (server, one pass of {len(self.steps)} steps)",
            expected,
        )
        await owner.lease.hold()
        before = await self._count(self._counted())
        retries = owner.retry.retries
        moved: dict[int, int] = {}
        try:
            for j in self.starts:
                moved[j] = 0
                for query, pipeline in self.updates(j):
                    if moved[j] and moved[j] >= before.get(j, 0):
                        break  # the fast form took every document: no need to scan again
                    await owner.pace.before_write()
                    await owner.lease.verify()
                    result = await owner.retry.call(
                        f"running steps {pass_label(self.steps[j:])} on the server in one pass",
                        partial(self.leg.collection.update_many, query, pipeline),
                    )
                    moved[j] += int(result.modified_count)
        except MigrateError as failed:
            await self._stopped(failed, before, moved, j)
            owner.fall_back(failed)  # raises, unless the server refused the pipeline
            return False
        finally:
            owner.progress.advance(sum(moved.values()))
            owner.progress.finish()
        if owner.retry.retries > retries or self._fallible():
            # A call sent again (only the last answer's count is known), or
            # documents a step may have refused, left at its version: count.
            after = await self._count(list(before))
            self._record(self._from_counts(before, after, moved))
        else:
            self._record(moved)
        return True

    async def _count(self, starts: list[int]) -> dict[int, int]:
        """The documents at the version each of `starts` starts from, in one read."""
        found = await self.owner.counts(self.leg, [self._query(j) for j in starts])
        return dict(zip(starts, found, strict=True))

    def _fallible(self) -> bool:
        """Whether a step of the pass may refuse documents."""
        return any(ops is not None and ops.fallible for ops in self.operations)

    def _counted(self) -> list[int]:
        """The steps whose start version is counted before and after the pass: those
        updated, and every one where a step may refuse documents (a refused
        document stays at its step's version)."""
        return list(range(len(self.steps))) if self._fallible() else sorted(self.starts)

    def _from_counts(
        self, before: dict[int, int], after: dict[int, int], answered: dict[int, int]
    ) -> dict[int, int]:
        """What left each start version, counted; the answers where a count is missing."""
        return {
            j: before[j] - after[j] if j in after else answered.get(j, 0)
            for j in sorted({*before, *answered})
        }

    def _record(self, moved: dict[int, int]) -> None:
        """Record each step's count, and carry them with the lease.

        Step `i` took what left the versions of steps `0..i` (counted, where a
        step may refuse documents: a refused document is still at its step's
        version, and documents only move forward).

        """
        report, total = self.leg.report, 0
        for i, step in enumerate(self.steps):
            total += moved.get(i, 0)
            report.server_steps[label(step)] = total
        if self.ends[-1][1] == report.target:
            report.migrated += total
        note_passes(self.leg, [self.steps])
        self.owner.lease.carry()

    async def _stopped(
        self, failed: MigrateError, before: dict[int, int], moved: dict[int, int], stopped: int
    ) -> None:
        """After an update of the pass failed (one starting from step `stopped`): what
        the pass changed, recorded, and the documents an update whose answer was
        lost may yet change."""
        after: dict[int, int] = {}
        for j in before:
            found = await self.owner.recount(self.leg, self._query(j))
            if found is not None:
                after[j] = found
        done = self._from_counts(before, after, moved)
        if any(done.values()):
            self._record(done)
        if answer_lost(failed):
            # Still at its version, though the call whose answer never came
            # may yet change them.
            self.leg.report.unconfirmed += after.get(stopped, before.get(stopped, 0))
