"""The eager engine: bring every stored document of a model to a version.

`Runner.run` takes one model through five phases:

1. **plan**: the target, checked; the collections of the model's former
   names renamed into its name; the toolkit's version index; the survey of
   the stored versions (one aggregation), each planned (`StepGraph.plan`).
   A broken chain stops the run here, before anything is written
   (`atomdb_migrate.engine.survey`);
2. **expand**: the indexes created and the validator relaxed before the
   documents change (`atomdb_migrate.engine.collection_state`), versions
   stored in another form respelled, and the references to former names
   rewritten;
3. **migrate**: the steps made of operations run on the server
   (`atomdb_migrate.engine.server_steps`), consecutive ones in one pass
   (`atomdb_migrate.engine.server_passes`), the steps between them on the
   client, then every document still behind goes through the client
   stream (`atomdb_migrate.engine.stream`): read in ``_id`` order, in
   batches, each document's chain run in memory, and the batch written with
   one bulk write of conditional updates. A document someone changed
   meanwhile is read again once; if it changed again it is skipped;
4. **verify**: after the server was replaced during the run, the documents
   whose writes it lost are taken again; the run contracts only if every
   document passed;
5. **contract**: the indexes dropped and the validator set.

The version stored in each document is the checkpoint: a run killed at any
point leaves every document either untouched or fully at its new version,
and the next run carries on with the documents still behind.

"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from ..driver.mongo import exact_filters
from ..driver.retry import Retry
from ..exceptions import DowngradeLeftNewerError
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry
from ..steps.versions import Step
from .collection_state import CollectionState
from .former_names import FormerNames
from .lease import LEASE_CHECK, RECOUNT_WAIT, Lease
from .leg import Leg, label, target_version
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLE,
    DOWNGRADE,
    MAX_BATCH_SIZE,
    MAX_MEMBERS,
    MAX_WTIMEOUT,
    UPGRADE,
    Direction,
    RunOptions,
    write_concern,
)
from .pace import LagSource, Pace, replication_lag
from .report import ModelReport, Progress, ProgressNotes, QuietProgress, Survey
from .server_steps import ServerSteps
from .stream import YIELD_EVERY, Stream, behind, rest
from .survey import respell_versions, survey
from .verify import server_changed, server_identity, sweep
from .version_index import after_writes, before_writes
from .workers import Split, migrate_ranges

if TYPE_CHECKING:
    from .lock import LeaseLock

#: The names this module has always offered (`atomdb_migrate.runner` re-exports them).
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SAMPLE",
    "DOWNGRADE",
    "LEASE_CHECK",
    "MAX_BATCH_SIZE",
    "MAX_MEMBERS",
    "MAX_WTIMEOUT",
    "RECOUNT_WAIT",
    "UPGRADE",
    "YIELD_EVERY",
    "Direction",
    "ModelReport",
    "Progress",
    "RunOptions",
    "Runner",
    "Survey",
    "write_concern",
]


@dataclass
class _Planned:
    """What the plan phase of `Runner.run` found, for the phases after it."""

    #: The model's documents on their way to the target.
    leg: Leg
    #: Its stored versions, planned.
    survey: Survey
    #: The steps of the chain that run on the server.
    server: set[Step]
    #: The run's retries so far, and the server process that answered, at the
    #: start: the verify phase compares them.
    retries: int
    identity: Any
    #: Whether the version index is to be built after the writes (dropped or
    #: deferred: most of the collection is pending).
    index_after: bool = False

    def server_took_all(self) -> bool:
        """Whether the server steps changed every document the survey counted."""
        chain, report = self.survey.chain, self.leg.report
        return (
            bool(chain)
            and not self.survey.others
            and all(report.server_steps.get(label(s)) == report.steps.get(label(s)) for s in chain)
        )


class Runner:
    """Runs upgrades and downgrades of whole collections.

    Parameters
    ----------
    database:
        The database (PyMongo async or Motor).
    options: RunOptions
        Batch size, continue-on-error, dry run, server-side steps...
    progress: Progress, optional
        Told the total and each batch.
    lock: LeaseLock, optional
        Checked before every write: the run stops if its lease is lost.
    registry: MigrationRegistry, optional
        Defaults to the process's registry.
    skip_collections: tuple of str
        Collections never scanned for references (the lock and the history).
    only: mapping, optional
        Only these documents: their ``_id``, by ``__model__`` name (to retry
        the documents a run recorded as failed). Their steps run on the
        client.
    redact: callable, optional
        Masks the secrets in a failure's message before the report keeps it
        (a step's error may quote a URL).
    lag: callable, optional
        Returns, when awaited, the replication lag in seconds (None where
        there is none to read). With ``options.max_lag``; default: read from
        ``replSetGetStatus`` (see `atomdb_migrate.pace.replication_lag`).

    """

    def __init__(
        self,
        database: Any,
        options: RunOptions | None = None,
        *,
        progress: Progress | None = None,
        lock: LeaseLock | None = None,
        registry: MigrationRegistry | None = None,
        skip_collections: tuple[str, ...] = (),
        only: Mapping[str, Sequence[Any]] | None = None,
        redact: Callable[[str], str] | None = None,
        lag: LagSource | None = None,
    ) -> None:
        self.options = options = options or RunOptions()
        concern = options.concern()
        if concern is not None:
            database = database.with_options(write_concern=concern)
        self.database = database
        self.progress: Progress = progress or QuietProgress()
        self.registry = registry or MigrationRegistry.instance()
        self.skip_collections = skip_collections
        self.only = only
        self.redact: Callable[[str], str] = redact or str
        self.progress_notes = notes = ProgressNotes(self.progress, options.call_timeout)
        #: A report per model run, added when the run starts: what a run that
        #: stopped on an error did is there too.
        self.reports: list[ModelReport] = []
        #: Server calls that fail transiently are sent again, for up to
        #: ``options.retry_for`` seconds in a row.
        self.retry = Retry(
            options.retry_for,
            on_retry=notes.retrying,
            call_timeout=options.call_timeout,
            on_wait=notes.waiting,
        )
        #: The rate limit and the replication-lag pause.
        self.pace = Pace(
            options.max_rate,
            options.max_lag,
            lag or (lambda: replication_lag(self.database)),
            notes.say,
        )
        #: The lock, checked before every write.
        self.lease = Lease(self.retry, self.reports)
        self.lease.lock = lock
        parts = (options, self.retry, self.pace, self.progress, self.lease)
        #: The client stream, and the steps run on the server.
        self.stream = Stream(*parts, redact=self.redact, expressions=exact_filters(database))
        self.server_steps = ServerSteps(*parts)
        #: The run split for workers (None: this runner reads every document
        #: itself): see `atomdb_migrate.engine.workers`.
        self.split: Split | None = None

    @property
    def lock(self) -> LeaseLock | None:
        """The migration lock the run holds (None: none), checked before every write."""
        return self.lease.lock

    @lock.setter
    def lock(self, lock: LeaseLock | None) -> None:
        self.lease.lock = lock

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------
    async def upgrade(self, cls: type[VersionedModel], to: Any = None) -> ModelReport:
        """Bring the model's documents to `to` (default: the model's version)."""
        return await self.run(cls, to, UPGRADE)

    async def downgrade(self, cls: type[VersionedModel], to: Any) -> ModelReport:
        """Take the model's documents back to `to`, through the downgrade functions."""
        return await self.run(cls, to, DOWNGRADE)

    def target(self, cls: type[VersionedModel], to: Any, direction: Direction) -> Version:
        """The version a run takes a model's documents to, checked (`target_version`)."""
        return target_version(cls, to, direction, self.registry)

    async def survey(self, cls: type[VersionedModel], to: Any, direction: Direction) -> Survey:
        """Count and plan a model's stored documents, writing nothing.

        Raises
        ------
        MigrateError
            If documents sit at a version no chain leads from (unless the
            run goes on past errors).

        """
        target = self.target(cls, to, direction)
        report = ModelReport(cls.__model__, str(target), direction.name)
        collection, others = await self._former_names().collection(
            cls, report, target, direction, dry=True
        )
        return await self._survey(self._leg(cls, collection, target, direction, report), others)

    async def run(
        self,
        cls: type[VersionedModel],
        to: Any,
        direction: Direction,
        surveyed: Survey | None = None,
    ) -> ModelReport:
        """Take a model's documents to `to` (for an upgrade, default: the model's version):
        plan, expand, migrate, verify, contract (see the module's docstring).

        A `surveyed` survey (from `survey`, before the lock was taken) is
        used as it is, unless collections were renamed since. A dry run goes
        through the phases saying what it would do, then runs the chain on
        a sample of the documents.

        """
        planned = await self._plan(cls, to, direction, surveyed)
        try:
            state = await self._expand(planned)
            await self._migrate(planned)
            passed = await self._verify(planned)
        except Exception:
            await self._index_after(planned, stopping=True)
            raise
        await self._index_after(planned)
        if passed:
            await state.contract()
        if self.options.dry_run:
            await self.stream.sample(planned.leg, planned.survey.raws)
        self._newer(planned)
        return planned.leg.report

    # ------------------------------------------------------------------
    # The phases
    # ------------------------------------------------------------------
    async def _plan(
        self,
        cls: type[VersionedModel],
        to: Any,
        direction: Direction,
        surveyed: Survey | None,
    ) -> _Planned:
        """Plan: the target, the collection, the version index, the survey, and the
        steps that run on the server."""
        dry = self.options.dry_run
        target = self.target(cls, to, direction)
        report = ModelReport(cls.__model__, str(target), direction.name)
        self.reports.append(report)
        retries = self.retry.retries
        identity = None if dry else await server_identity(self.database)
        collection, others = await self._former_names().collection(
            cls, report, target, direction, dry=dry
        )
        leg = self._leg(cls, collection, target, direction, report)
        moved = any(r.collection in ("renamed", "merged") for r in report.renames)
        if surveyed is None or moved:
            surveyed = await self._survey(leg, others)
        else:
            report.by_version, report.steps = surveyed.report.by_version, surveyed.report.steps
            report.newer_versions = surveyed.report.newer_versions
        after = await before_writes(
            leg,
            self.retry,
            surveyed,
            wanted=self.options.version_index,
            rebuild_at=self.options.version_index_rebuild_at,
            dry_run=dry,
        )
        server = self.server_steps.choose(leg, surveyed.chain)
        return _Planned(leg, surveyed, server, retries, identity, after)

    async def _expand(self, planned: _Planned) -> CollectionState:
        """Expand: indexes and validator made ready for the documents' change, versions
        stored in another form respelled, references to former names rewritten."""
        leg, dry = planned.leg, self.options.dry_run
        state = CollectionState(
            leg.cls,
            leg.collection,
            leg.graph,
            leg.target,
            down=leg.direction.down,
            retry=self.retry,
            dry_run=dry,
            lines=leg.report.indexes,
            refused=leg.report.refused,
        )
        await state.expand(leg.report.pending)
        if not leg.direction.down:
            await respell_versions(leg, planned.survey.rows, self.retry, dry_run=dry)
        if not leg.direction.down and not dry:
            # References to every former name, in every collection, rewritten
            # to the model's name: on every run while the model has former
            # names, documents pending or not, and before any document passes
            # the step renaming it (a run killed in between repeats this).
            await self._former_names().references(leg.cls, leg.report, leg.target)
        return state

    async def _migrate(self, planned: _Planned) -> None:
        """Migrate: the steps of operations on the server, the steps between them on the
        client (up to the version each server step starts from), then on the client
        every document still behind. Dry: what the server steps would do."""
        leg, raws = planned.leg, planned.survey.raws
        if self.options.dry_run:
            await self.server_steps.dry_run(leg, planned.server, raws, planned.survey.chain)
            return
        if not leg.report.pending:
            return
        waiting = False  # documents wait on the client for the steps since the last server step
        for steps in self.server_steps.passes(leg, planned.survey.chain, planned.server):
            step = steps[0]
            if step not in planned.server or not self.server_steps.enabled:
                waiting = True
                continue
            if waiting:
                await self._pump(
                    *behind(leg, step.to_key if leg.direction.down else step.from_key, raws)
                )
            waiting = not await self.server_steps.run_pass(leg, steps, raws)
        # When the server steps changed every document the survey counted,
        # nothing is left: the collection is not read again.
        indexed = False
        if not planned.server_took_all():
            if self.split is not None:
                # Split for workers: ranges of _id, taken here and by those who join.
                indexed = await migrate_ranges(self.split, leg, raws, self.stream, self.progress)
            else:
                query, total, indexed = await rest(leg, raws)
                await self._pump(leg, query, total)
        # Read through the index, the stream took every stored value off the
        # target, arrays holding it too; without, those arrays are left to this.
        if not indexed:
            await self.stream.record_unreached(leg, raws)

    async def _verify(self, planned: _Planned) -> bool:
        """Verify: whether every document passed the steps, and the contract may run.

        After the server was replaced during the run, what it lost is taken
        again first (`verify.sweep`). A dry run goes on to say what the
        contract would do.

        """
        report = planned.leg.report
        if self.options.dry_run or not report.pending:
            return True
        if self.retry.retries > planned.retries and await server_changed(
            self.database, planned.identity
        ):
            await sweep(planned.leg, self._pump)
        return not report.failed and not report.skipped

    async def _index_after(self, planned: _Planned, *, stopping: bool = False) -> None:
        """Build the version index the plan dropped or deferred. A run `stopping` on an
        error builds it too; if that fails as well, the error the run stops on is
        the one said, and the next upgrade builds the index."""
        if not planned.index_after:
            return
        planned.index_after = False
        if not stopping:
            await after_writes(planned.leg, self.retry)
            return
        try:
            await after_writes(planned.leg, self.retry)
        except Exception as exc:
            self.progress_notes.say(f"the version index could not be built again: {exc}")

    def _newer(self, planned: _Planned) -> None:
        """The documents newer than the code: a dry run counts those it would leave
        (the survey's count); a downgrade that left some says which code to run it
        from (`ModelReport.left_newer`)."""
        leg, report = planned.leg, planned.leg.report
        if self.options.dry_run:
            report.newer = sum(report.newer_versions.values())
        if leg.direction.down and report.newer:
            report.left_newer = DowngradeLeftNewerError(
                report.model,
                report.newer,
                list(report.newer_versions),
                str(leg.cls.__parsed_version__),
                report.target,
                dry_run=self.options.dry_run,
            )

    # ------------------------------------------------------------------
    # What the phases use
    # ------------------------------------------------------------------
    async def _pump(self, leg: Leg, query: dict[str, Any], total: int) -> None:
        """The client stream: every read of the documents goes through here."""
        await self.stream.pump(leg, query, total)

    def _leg(
        self,
        cls: type[VersionedModel],
        collection: Any,
        target: Version,
        direction: Direction,
        report: ModelReport,
    ) -> Leg:
        """The leg of a model's documents (all, or the `only` ones) to `target`."""
        ids = None if self.only is None else list(self.only.get(cls.__model__, ()))
        return Leg(cls, collection, target, direction, self.registry.graph(cls), report, ids)

    def _former_names(self) -> FormerNames:
        return FormerNames(
            self.database,
            self.registry,
            self.retry,
            self.lease,
            batch_size=self.options.batch_size,
            skip_collections=self.skip_collections,
        )

    async def _survey(self, leg: Leg, merged: tuple[Any, ...] = ()) -> Survey:
        continue_on_error = self.options.continue_on_error
        return await survey(leg, self.retry, merged, continue_on_error=continue_on_error)
