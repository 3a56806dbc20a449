"""The eager engine: bring every stored document of a model to a version.

For one model the runner:

1. surveys the collection with one aggregation: how many documents sit at
   each stored version; plans each (`StepGraph.plan`), and refuses to start
   if a chain is broken (nothing has been written then);
2. streams the documents not at the target in ``_id`` order, in batches,
   reading the next batch while it writes the current one;
3. runs each document's chain in memory, on a lazy copy that records the
   fields the steps look at (`atomdb_migrate.documents.StepDocument`);
4. writes the batch with one unordered bulk write of conditional updates
   (see `atomdb_migrate.writes`): each matches the document's ``_id``, its
   version as read and the fields its steps looked at or wrote, as read,
   and sets or unsets only the fields its steps changed, the version among
   them. A document whose steps looked at a field someone changed meanwhile
   does not match: it is read again once and its chain run again; if it
   changed again it is skipped and counted. A change to a field the steps
   never looked at is kept, and the document upgraded without a re-read.

The version stored in each document is the checkpoint: a run killed at any
point leaves every document either untouched or fully at its new version,
and the next run carries on with the documents still behind.

"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import bson
from packaging.version import Version
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from ..core.documents import Document
from ..core.storage import VERSION_KEY
from ..core.writes import Write, guarded_write
from ..driver.mongo import (
    after,
    aggregate,
    batches,
    bulk_update,
    collection_names,
    count_versions,
    ensure_version_index,
    exact_filters,
    has_version_index,
    runs_pipelines,
    to_list,
)
from ..driver.retry import Fault, Retry, bounded, describe
from ..exceptions import (
    ChainError,
    GuardTooLargeError,
    InvalidVersionError,
    MigrateError,
    ServerError,
    ServerUnavailableError,
    StepError,
    StepResultError,
    short_repr,
    shorten,
)
from ..model.versioned import VersionedModel, restore_check
from ..operations.running import Operations
from ..steps.registry import MigrationRegistry
from ..steps.versions import Plan, Step, apply_chain, parse_version, stored_version, version_key
from .collection_state import CollectionState
from .history import MAX_FAILURES
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
from .renames import RenameReport, rename_collection, rewrite_references
from .report import ModelReport, Progress, QuietProgress, Survey

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
    "log",
    "write_concern",
]

log = logging.getLogger("atomdb_migrate")

#: How long the transform of a batch may hold the event loop before it lets
#: the write in flight (and any other task) run.
YIELD_EVERY = 0.05

#: Seconds to try to read back what a write that stopped the run left
#: (the server may have applied it without its answer coming back).
RECOUNT_WAIT = 5.0


def _once(batch: list[Document], last: list[Any]) -> list[Document]:
    """A batch (in ``_id`` order) without a document repeated right after itself."""
    kept: list[Document] = []
    before = [version_key(last[0])] if last else []
    for doc in batch:
        key = version_key(doc["_id"])  # by type and value: 1, 1.0 and True are three
        if not before or key != before[0]:
            kept.append(doc)
            before = [key]
    return kept


def _label(step: Step) -> str:
    return f"{step.from_version} -> {step.to_version}"


def _version_name(raw: Any) -> str:
    """A stored version value as shown: its canonical form, or its repr if it is none."""
    try:
        return str(stored_version(raw))
    except MigrateError:
        return short_repr(raw, 40)


def _stored(raw: Any) -> Version | None:
    """A stored ``__version__`` value parsed (None, if it is not a version)."""
    try:
        return stored_version(raw)
    except InvalidVersionError:
        return None


class _Write:
    """One conditional update, and the document and chain it comes from."""

    __slots__ = ("doc", "new", "plan", "write")

    def __init__(self, doc: Document, plan: Plan, write: Write, new: Document) -> None:
        self.doc, self.plan, self.write, self.new = doc, plan, write, new


@dataclass
class _Pass:
    """One model's run: what every batch of it needs."""

    cls: type[VersionedModel]
    collection: Any
    target: Version
    direction: Direction
    plan_for: Callable[[Any], Plan]
    report: ModelReport
    #: The documents counted as skipped, by `_key` of their ``_id``: the
    #: final sweep, when there is one, counts those it writes as upgraded.
    skipped: dict[bytes, Any] = field(default_factory=dict)


def _key(doc_id: Any) -> bytes:
    """An ``_id`` as a key: its BSON, which tells ``1``, ``1.0`` and ``True`` apart."""
    return bson.encode({"_id": doc_id})


# ----------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------
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
        self.lock = lock
        self.registry = registry or MigrationRegistry.instance()
        self.skip_collections = skip_collections
        self.only = only
        self.redact: Callable[[str], str] = redact or str
        #: Whether the server runs pipeline updates (False once it refused one).
        self.server_side = self.options.server_side
        #: A report per model run, added when the run starts: what a run that
        #: stopped on an error did is there too.
        self.reports: list[ModelReport] = []
        self._expressions = exact_filters(database)
        #: Server calls that fail transiently are sent again, for up to
        #: ``options.retry_for`` seconds in a row.
        self.retry = Retry(
            options.retry_for,
            on_retry=self._on_retry,
            call_timeout=options.call_timeout,
            on_wait=self._on_wait,
        )
        #: The rate limit and the replication-lag pause.
        self.pace = Pace(
            options.max_rate,
            options.max_lag,
            lag or (lambda: replication_lag(self.database)),
            self._say,
        )

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------
    async def upgrade(self, cls: type[VersionedModel], to: Any = None) -> ModelReport:
        """Bring the model's documents to `to` (default: the model's version)."""
        return await self.run(cls, to, UPGRADE)

    async def downgrade(self, cls: type[VersionedModel], to: Any) -> ModelReport:
        """Take the model's documents back to `to`, through the downgrade functions."""
        return await self.run(cls, to, DOWNGRADE)

    def _say(self, text: str) -> None:
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(text)

    def _on_retry(self, operation: str, error: BaseException, delay: float) -> None:
        self._say(f"retrying in {delay:.1f} s: {describe(error)}")

    def _on_wait(self, operation: str, seconds: float) -> None:
        if not operation:
            self._say("")
            return
        self._say(
            f"waiting on the server: {operation}, no answer for {seconds:.0f} s "
            f"(--call-timeout {self.retry.call_timeout:g} s)"
        )

    async def _hold_lock(self) -> None:
        """Before a write: the lease is ours, taken back if it ran out while nobody took it."""
        if self.lock is not None:
            await self.lock.hold()

    def target(self, cls: type[VersionedModel], to: Any, direction: Direction) -> Version:
        """The version a run takes a model's documents to, checked.

        Raises
        ------
        ChainError
            If `to` is past the model's version, or (downgrading) a step on
            the way back has no downgrade function: before anything is read.

        """
        head = cls.__parsed_version__
        if to is None and not direction.down:
            return head
        target = parse_version(to, model=cls.__model__, what="--to")
        if target > head:
            raise ChainError(
                f"cannot {direction.name} to {to}: it is past the model's version "
                f"{cls.__version__}"
                + (
                    "; run downgrade with the code of a version at least as new"
                    if direction.down
                    else ""
                ),
                model=cls.__model__,
            )
        if direction.down:
            self.registry.graph(cls).plan_downgrade(head, target)
        return target

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
        collection, others = self.database[cls.__model__], ()
        if not direction.down:
            collection, others = await self._rename_collections(cls, report, target, dry=True)
        return await self._survey(self._pass(cls, collection, target, direction, report), others)

    async def run(
        self,
        cls: type[VersionedModel],
        to: Any,
        direction: Direction,
        surveyed: Survey | None = None,
    ) -> ModelReport:
        """Take a model's documents to `to` (for an upgrade, default: the model's version).

        A `surveyed` survey (from `survey`, before the lock was taken) is
        used as it is, unless collections were renamed since.

        """
        target = self.target(cls, to, direction)
        report = ModelReport(cls.__model__, str(target), direction.name)
        self.reports.append(report)
        retries = self.retry.retries
        identity = None if self.options.dry_run else await self._server_identity()
        collection, others = self.database[cls.__model__], ()
        if not direction.down:
            collection, others = await self._rename_collections(
                cls, report, target, dry=self.options.dry_run
            )
        run = self._pass(cls, collection, target, direction, report)
        if self.options.version_index and not direction.down:
            if self.options.dry_run:
                if not await has_version_index(collection):
                    report.version_index = "missing"
            elif await self.retry.call(
                f"creating the version index of {collection.name}",
                partial(ensure_version_index, collection),
            ):
                report.version_index = "created"
        moved = any(r.collection in ("renamed", "merged") for r in report.renames)
        if surveyed is None or moved:
            surveyed = await self._survey(run, others)
        else:
            report.by_version, report.steps = surveyed.report.by_version, surveyed.report.steps
        server = self._server_steps(collection, surveyed.chain, direction)
        state = CollectionState(
            cls,
            collection,
            self.registry.graph(cls).steps,
            target,
            down=direction.down,
            retry=self.retry,
            dry_run=self.options.dry_run,
            lines=report.indexes,
            refused=report.refused,
        )
        expand, drops = state.index_phases()
        await state.plan_validator()
        await state.run_indexes(expand)
        await state.relax_validator(report.pending)
        if not direction.down:
            await self._respell_versions(run, surveyed.rows)

        if self.options.dry_run:
            for s in server:
                report.server_steps[_label(s)] = report.steps.get(_label(s), 0)
                refused = await self._count_refused(run, s, [raw for raw, _ in surveyed.rows])
                if refused:
                    report.would_refuse[_label(s)] = refused
            await state.run_indexes(drops)
            await state.set_validator()
            await self._sample(run)
            return report
        # References to every former name, in every collection, rewritten to
        # the model's name: on every run while the model has former names,
        # documents pending or not, and before any document passes the step
        # renaming it (a run killed in between repeats this).
        if not direction.down:
            await self._rewrite_references(cls, report, target)
        if not report.pending:
            await state.run_indexes(drops)
            await state.set_validator()
            return report

        # Steps made of operations on the server; the steps between them on
        # the client, up to the version each server step leaves.
        python: list[Step] = []
        raws = [raw for raw, _ in surveyed.rows]
        for s in surveyed.chain:
            if s not in server or not self.server_side:
                python.append(s)
                continue
            if python:
                await self._stream_to(run, s.to_key if direction.down else s.from_key, raws)
                python = []
            if not await self._server_step(run, s, raws):
                python.append(s)

        # Everything still not at the target, on the client: the steps after
        # the last server step, and documents a server step left alone. When
        # the server steps changed every document the survey counted, nothing
        # is left: the collection is not read again.
        done = (
            bool(surveyed.chain)
            and not surveyed.others
            and all(
                report.server_steps.get(_label(s)) == report.steps.get(_label(s))
                for s in surveyed.chain
            )
        )
        # Read through the index, the stream took every stored value off the
        # target, arrays holding it too; without, those arrays are left to this.
        if not (not done and await self._stream_rest(run, raws)):
            await self._record_unreached(run, raws)
        if self.retry.retries > retries and await self._server_changed(identity):
            await self._sweep(run)
        if not report.failed and not report.skipped:
            # Contract: every document passed the steps.
            await state.run_indexes(drops)
            await state.set_validator()
        return report

    async def _server_identity(self) -> Any:
        """Which server process answers: the ``processId`` of ``hello``'s
        ``topologyVersion`` (None where the server does not say)."""
        try:
            hello = await self.database.command("hello")
        except Exception:  # a server without hello, or none at all: unknown
            return None
        topology = hello.get("topologyVersion") if isinstance(hello, Mapping) else None
        return topology.get("processId") if isinstance(topology, Mapping) else None

    async def _server_changed(self, before: Any) -> bool:
        """Whether another server process answers than at the start of the model's run
        (a restart, or an election): only then may acknowledged writes be lost.
        True when either answer is unknown."""
        now = await self._server_identity()
        return before is None or now is None or now != before

    async def _sweep(self, run: _Pass) -> None:
        """After the server was replaced during the run, take again what is still behind.

        A server that restarted may have lost writes it acknowledged; an
        election may roll back the old primary's. Their documents are at
        their old version again: they go through the steps again (from the
        stored document, so nothing is transformed twice), counted as
        `ModelReport.redone`. The documents the run skipped (changed
        meanwhile) are read again first: those written now move from
        skipped to upgraded. The documents the run left behind on purpose
        (failed, newer) are taken in a report of their own that is dropped:
        they were counted once.

        """
        report = run.report
        skipped = list(run.skipped.values())
        if skipped:
            again = ModelReport(report.model, report.target, report.direction)
            leg = self._pass(run.cls, run.collection, run.target, run.direction, again)
            ids = {"_id": {"$in": skipped}, VERSION_KEY: {"$ne": str(run.target)}}
            await self._pump(leg, ids, 0)
            report.migrated += again.migrated
            report.skipped -= again.migrated
        counts = ModelReport(report.model, report.target, report.direction)
        leg = self._pass(run.cls, run.collection, run.target, run.direction, counts)
        query: dict[str, Any] = {**self._scope(run.cls), VERSION_KEY: {"$ne": str(run.target)}}
        if skipped:
            query["_id"] = {"$nin": skipped, **self._scope(run.cls).get("_id", {})}
        await self._pump(leg, query, 0)
        run.report.redone += counts.migrated
        if counts.migrated:
            log.warning(
                "%s: %d documents written again: the server lost writes it had acknowledged",
                run.report.model,
                counts.migrated,
            )

    # ------------------------------------------------------------------
    # Surveying
    # ------------------------------------------------------------------
    def _pass(
        self,
        cls: type[VersionedModel],
        collection: Any,
        target: Version,
        direction: Direction,
        report: ModelReport,
    ) -> _Pass:
        graph = self.registry.graph(cls)
        head = cls.__parsed_version__

        def plan_for(raw: Any) -> Plan:
            return graph.plan(raw, target, head=head, downgrade=direction.down)

        return _Pass(cls, collection, target, direction, plan_for, report)

    def _scope(self, cls: type[VersionedModel]) -> dict[str, Any]:
        """The documents of the model the run takes: all, or the `only` ones."""
        if self.only is None:
            return {}
        return {"_id": {"$in": list(self.only.get(cls.__model__, ()))}}

    async def _survey(self, run: _Pass, merged: tuple[Any, ...] = ()) -> Survey:
        """Survey every document (not only those a stream finds: ``{$ne: target}``
        leaves out an array holding the target, which is no version).

        `merged` are collections whose documents a dry run counts too: those
        of former names the run would merge (a document both hold counts twice).

        """
        report = run.report
        rows: list[tuple[Any, int]] = []
        for collection in (run.collection, *merged):
            rows += await self.retry.call(
                f"counting the versions in {collection.name}",
                partial(count_versions, collection, self._scope(run.cls) or None),
            )
        chain: tuple[Step, ...] = ()
        others = 0
        for raw, n in sorted(rows, key=lambda r: short_repr(r[0])):
            plan = run.plan_for(raw)
            if plan.kind == "current":
                continue  # the target, perhaps in another BSON form (the int 2 for "2")
            name = _version_name(raw)
            report.by_version[name] = report.by_version.get(name, 0) + n
            if plan.error is not None and not self.options.continue_on_error:
                raise plan.error
            for s in plan.steps:
                report.steps[_label(s)] = report.steps.get(_label(s), 0) + n
            if len(plan.steps) > len(chain):
                chain = plan.steps
            if plan.kind != "migrate":
                others += n
        return Survey(report, rows, chain, others)

    def _due(self, cls: type[VersionedModel], target: Version) -> tuple[str, list[str]]:
        """The name the model has at `target`, and the former names renamed into it
        by steps at or below `target` (the most recent first)."""
        name = self.registry.name_at(cls, target)
        due = [
            old
            for old in self.registry.former_names(cls)
            if old != name and (self.registry.renamed_at(old) or target) <= target
        ]
        return name, due

    async def _rename_collections(
        self, cls: type[VersionedModel], report: ModelReport, target: Version, *, dry: bool
    ) -> tuple[Any, tuple[Any, ...]]:
        """Rename the collections of the model's former names into the name it has at
        `target`; return the collection to read, and the other collections a dry run
        counts.

        A run to a version before a ``rename_model`` step reads the collection
        of the name the model had then, and leaves the later names alone.
        `dry` renames nothing: it reads the first collection that exists, and
        counts the others it would merge into it.

        """
        name, due = self._due(cls, target)
        collection = self.database[name]
        if not due:
            return collection, ()
        names = await collection_names(self.database)
        exists = name in names
        others: list[Any] = []
        for old in due:
            if old not in names:
                continue
            rename = RenameReport(old, name)
            report.renames.append(rename)
            if dry:
                rename.collection = "merge" if exists else "rename"
                if exists:
                    others.append(self.database[old])
                else:
                    collection, exists = self.database[old], True
                continue
            await self.retry.call(
                f"moving collection {old} to {name}",
                partial(
                    rename_collection,
                    self.database,
                    rename,
                    batch_size=self.options.batch_size,
                    lock=self.lock,
                ),
            )
        return collection, tuple(others)

    async def _respell_versions(self, run: _Pass, rows: list[tuple[Any, int]]) -> None:
        """Rewrite the ``__version__`` of documents at the target stored in another
        form (``1.0``, ``Int64(1)``, ``"1.0"``) as the canonical string.

        No step touches them, as they are current; but a validator takes only
        the string (`atomdb_migrate.validators.json_schema`), and a query's
        default clauses only the forms `versions.version_forms` lists. A
        storage-only change: the filter names the form as surveyed (an array
        holding it is no version, and is left alone), so a document written
        meanwhile is left as its writer left it.

        """
        canonical = str(run.target)
        for raw, n in rows:
            if raw is None or (type(raw) is str and raw == canonical):
                continue
            if run.plan_for(raw).kind != "current":
                continue
            if self.options.dry_run:
                run.report.respelled += n
                continue
            query = {
                **self._scope(run.cls),
                "$and": [{VERSION_KEY: raw}, {VERSION_KEY: {"$not": {"$type": "array"}}}],
            }
            done = await self.retry.call(
                f"rewriting the __version__ {short_repr(raw)} of {run.collection.name} as "
                f"{canonical!r}",
                partial(run.collection.update_many, query, {"$set": {VERSION_KEY: canonical}}),
            )
            run.report.respelled += done.modified_count

    async def _rewrite_references(
        self, cls: type[VersionedModel], report: ModelReport, target: Version
    ) -> None:
        name, due = self._due(cls, target)
        for old in due:
            rename = next((r for r in report.renames if r.old == old), None)
            if rename is None:
                rename = RenameReport(old, name)
                report.renames.append(rename)
            await self.retry.call(
                f"rewriting the references to {old}",
                partial(
                    rewrite_references,
                    self.database,
                    rename,
                    skip=self.skip_collections,
                    batch_size=self.options.batch_size,
                    lock=self.lock,
                ),
            )

    # ------------------------------------------------------------------
    # Steps on the server
    # ------------------------------------------------------------------
    def _server_steps(
        self, collection: Any, chain: tuple[Step, ...], direction: Direction
    ) -> set[Step]:
        """The steps of the chain that run on the server (none where it runs no pipeline)."""
        steps = {
            s
            for s in chain
            if s.server_side
            and isinstance(s.downgrade_fn if direction.down else s.upgrade_fn, Operations)
        }
        if steps and self.server_side and self.options.max_rate is not None:
            _say_once(
                "--max-rate: steps of operations run on the client, in batches the rate "
                "allows (an update on the server cannot be throttled)"
            )
            return set()
        if steps and self.server_side and not runs_pipelines(collection):
            _say_once("this server runs no update pipeline: steps of operations run on the client")
            return set()
        return steps if self.server_side and self.only is None else set()

    def _at_start(self, run: _Pass, step: Step, raws: list[Any]) -> Any:
        """The ``__version__`` condition of the documents a server step starts from:
        each stored form of its version found, and its canonical string."""
        start = step.to_version if run.direction.down else step.from_version
        at_start = parse_version(start)
        forms = {version_key(r): r for r in [r for r in raws if _stored(r) == at_start] + [start]}
        values = list(forms.values())
        return {"$in": values} if len(values) > 1 else values[0]

    async def _count_refused(self, run: _Pass, step: Step, raws: list[Any]) -> int:
        """Dry run: how many documents stored at a server step's version it would refuse.

        The step's stages run in an aggregation, which writes nothing.

        """
        operations = step.downgrade_fn if run.direction.down else step.upgrade_fn
        assert isinstance(operations, Operations)
        stages = operations.refusing({VERSION_KEY: self._at_start(run, step, raws)})
        if not stages:
            return 0
        found = await self.retry.call(
            f"counting what step {_label(step)} would refuse",
            partial(aggregate, run.collection, stages),
        )
        return int(found[0]["refused"]) if found else 0

    async def _server_step(self, run: _Pass, step: Step, raws: list[Any]) -> bool:
        """Run one step of operations as ``update_many`` calls; False if the server refused it.

        The documents of the step's common shape are changed first, with
        plain stages (see `Operations.server_updates`); the others with the
        general pipeline.

        Documents where the step cannot run (a value that does not convert)
        are left as they are, at the version the step leaves, for the client
        path to report.

        """
        report = run.report
        operations = step.downgrade_fn if run.direction.down else step.upgrade_fn
        assert isinstance(operations, Operations)
        start, end = step.from_version, step.to_version
        if run.direction.down:
            start, end = end, start
        version = self._at_start(run, step, raws)
        expected = report.steps.get(_label(step), 0)
        self.progress.start(f"{report.model} {start} -> {end} (server)", expected)
        await self._hold_lock()
        at_start = {**self._scope(run.cls), VERSION_KEY: version}
        before = await self._count(run, at_start)
        retries = self.retry.retries
        modified = 0
        try:
            for query, pipeline in operations.server_updates({VERSION_KEY: version}, end):
                if modified and modified >= expected:
                    break  # the fast form took every document: no need to scan again
                await self.pace.before_write()
                await self._verify_lease()
                result = await self.retry.call(
                    f"running step {_label(step)} on the server",
                    partial(run.collection.update_many, query, pipeline),
                )
                modified += int(result.modified_count)
        except MigrateError as failed:
            # An attempt whose answer was lost may have changed documents:
            # what left the step's version is what the step did.
            lost = _answer_lost(failed)
            after = await self._recount(run, at_start)
            if after is not None:
                modified = before - after
            if modified:  # a step the server refused outright ran on the client
                self._count_server_step(run, step, end, modified)
            if lost:
                # Still at its version, though the call whose answer never came
                # may yet change them.
                run.report.unconfirmed += before - modified if after is None else after
            exc = getattr(failed, "error", None)
            if (
                not isinstance(failed, ServerError)
                or isinstance(failed, ServerUnavailableError)
                or not isinstance(exc, OperationFailure)
            ):
                raise
            _say_once(
                f"the server refused a pipeline update ({exc.details or exc}): "
                "steps of operations run on the client"
            )
            self.server_side = False
            return False
        finally:
            self.progress.advance(modified)
            self.progress.finish()
        if self.retry.retries > retries:
            # A call sent again: only the last answer's count is known, and an
            # attempt before may have changed documents. Count them instead.
            modified = before - await self._count(run, at_start)
        self._count_server_step(run, step, end, modified)
        return True

    def _count_server_step(self, run: _Pass, step: Step, end: str, modified: int) -> None:
        """Record what a server step changed, and carry it with the lease."""
        report = run.report
        report.server_steps[_label(step)] = modified
        if end == report.target:
            report.migrated += modified
        if self.lock is not None:
            self.lock.progress = self._progress()

    async def _count(self, run: _Pass, query: dict[str, Any]) -> int:
        """How many documents `query` finds (sent again while the server fails)."""
        return int(
            await self.retry.call(
                f"counting documents in {run.collection.name}",
                partial(run.collection.count_documents, query),
            )
        )

    async def _recount(self, run: _Pass, query: dict[str, Any]) -> int | None:
        """After a write stopped the run: how many documents `query` finds, asked
        once and briefly (None if the server does not say in time)."""
        try:
            return int(await asyncio.wait_for(run.collection.count_documents(query), RECOUNT_WAIT))
        except (PyMongoError, TimeoutError):
            return None

    # ------------------------------------------------------------------
    # Steps on the client
    # ------------------------------------------------------------------
    async def _stream_to(self, run: _Pass, end: Version, raws: list[Any]) -> None:
        """Take the documents on the way to `end` there: the version a server step leaves.

        The others wait for that step. What these documents do is not
        counted in the report: the server step, or the last pass, counts them
        (a document whose chain fails here is left for the last pass, which
        records it with ``continue_on_error``).

        """
        down = run.direction.down

        def before(version: Version | None) -> bool:
            return version is not None and (version > end if down else version < end)

        # Stored values before `end`, and the versions steps arrive at before
        # it (server steps store those in canonical form).
        behind: list[Any] = [r for r in raws if before(_stored(r))]
        for s in self.registry.graph(run.cls).steps:
            arrive = s.from_key if down else s.to_key
            if before(arrive):
                behind.append(str(arrive))
        total = sum(n for name, n in run.report.by_version.items() if before(_stored(name)))
        counts = ModelReport(run.report.model, str(end), run.report.direction)
        leg = self._pass(run.cls, run.collection, end, run.direction, counts)
        query = {**self._scope(run.cls), VERSION_KEY: {"$in": behind}}
        await self._pump(leg, query, total)

    async def _stream_rest(self, run: _Pass, raws: list[Any]) -> bool:
        """Take every document still not at the target there, and count it.

        With the toolkit's index, the documents at the stored values the
        survey found off the target (an array holding the target too), and
        at the versions steps store on the way, are read through it; without,
        every document not at the target. Returns whether the index served.

        """
        wanted: Any = {"$ne": str(run.target)}
        if await has_version_index(run.collection):
            off = [raw for raw in raws if run.plan_for(raw).kind != "current"]
            between = [
                str(v)
                for s in self.registry.graph(run.cls).steps
                for v in (s.from_key, s.to_key)
                if v != run.target
            ]
            forms = {version_key(v): v for v in off + between}
            wanted = {"$in": list(forms.values())}
        query = {**self._scope(run.cls), VERSION_KEY: wanted}
        await self._pump(run, query, max(run.report.pending - run.report.migrated, 0))
        return "$in" in wanted

    async def _pump(self, run: _Pass, query: dict[str, Any], total: int) -> None:
        """Read, transform and write the documents `query` finds, in ``_id`` order.

        One read and one write stay in flight while the next batch is
        transformed.

        """
        self.progress.start(run.cls.__model__, total)
        stream = self._read(run, query)
        reading = asyncio.ensure_future(anext(stream, None))
        writing: asyncio.Future[None] | None = None
        try:
            while (batch := await reading) is not None:
                reading = asyncio.ensure_future(anext(stream, None))
                writes, error = await self._prepare(run, batch)
                if writing is not None:
                    # Shielded: an interrupted run lets the write in flight
                    # finish and count it, below.
                    await asyncio.shield(writing)
                writing = None
                if writes:
                    await self.pace.before_write(len(writes))
                    writing = asyncio.ensure_future(self._paced_write(run, writes))
                if error is not None:
                    # What was transformed before the failure is written: each
                    # document is complete on its own.
                    if writing is not None:
                        await asyncio.shield(writing)
                    raise error
                self.progress.advance(len(batch))
            if writing is not None:
                await asyncio.shield(writing)
        finally:
            reading.cancel()
            if writing is not None and not writing.done():
                # Stopped early: let the write in flight finish, so what was
                # counted is what was written.
                with contextlib.suppress(Exception):
                    await writing
            self.progress.finish()

    async def _paced_write(self, run: _Pass, writes: list[_Write]) -> None:
        """`_write`, its documents counted by the pace once it has ended."""
        try:
            await self._write(run, writes)
        finally:
            self.pace.written(len(writes))

    async def _next_batch(
        self, stream: AsyncIterator[list[Document]], fault: Fault
    ) -> list[Document] | None:
        """The next batch of a read, or None at its end: within the call's deadline."""
        limit = fault.begin()
        return await bounded(anext(stream, None), limit, fault.operation, self.retry.on_wait)

    async def _read(self, run: _Pass, query: dict[str, Any]) -> AsyncIterator[list[Document]]:
        """The documents `query` finds, a batch at a time, in ``_id`` order.

        A read that fails transiently is sent again after the last document
        handed out: none is handed out twice, and none is missed.

        """
        size = min(self.options.batch_size, self.pace.largest_batch() or self.options.batch_size)
        fault = self.retry.fault(f"reading {run.collection.name}")
        last: list[Any] = []  # the last _id handed out, once there is one
        while True:
            try:
                for found in after(query, last[0]) if last else [query]:
                    cursor = run.collection.find(found, sort=[("_id", 1)], batch_size=size)
                    stream = batches(cursor, size)
                    while (batch := await self._next_batch(stream, fault)) is not None:
                        fault.clear()
                        # A document an index holds under several keys (a list as its
                        # version) may come twice, one after the other, from a server
                        # that does not remove the repeat: hand it out once.
                        batch = _once(batch, last)
                        if not batch:
                            continue
                        last[:] = [batch[-1]["_id"]]
                        yield batch
                return
            except PyMongoError as error:
                await fault.wait(error)

    async def _transform(self, run: _Pass, doc: Document) -> tuple[Plan, _Write | None]:
        """Classify a document and, where it migrates, make its conditional write.

        The one routine for a batch, a document read again, and a dry run's
        sample. Returns the document's plan, and its write: None when there
        is nothing to write, or when its chain failed and the run goes on
        past failures (it is recorded in the report then). A result that
        cannot be written (a value BSON cannot hold, over 16 MB) fails as a
        `StepResultError` naming the document and the step.

        """
        plan = run.plan_for(doc.get(VERSION_KEY))
        if plan.kind in ("current", "newer", "beyond"):
            return plan, None
        try:
            if plan.error is not None:
                plan.raise_for(doc.get("_id"))
            new, fields = await apply_chain(plan.steps, doc, downgrade=run.direction.down)
            try:
                write = guarded_write(doc, new, fields, expressions=self._expressions)
            except GuardTooLargeError as exc:
                raise _result_error(run, doc, plan, f"cannot be written safely: {exc}") from None
            except ValueError as exc:
                problem = f"gave a document that cannot be written: {exc}"
                raise _result_error(run, doc, plan, problem) from None
            return plan, _Write(doc, plan, write, new)
        except (StepError, ChainError, InvalidVersionError) as exc:
            if not self.options.continue_on_error:
                raise
            self._record_failure(run.report, doc.get("_id"), exc)
            return plan, None

    async def _prepare(
        self, run: _Pass, batch: list[Document]
    ) -> tuple[list[_Write], BaseException | None]:
        """The batch's writes, and the error that stopped it, if any.

        Steps are often synchronous: every `YIELD_EVERY` seconds the event
        loop gets a turn, so the write in flight goes on however slow the
        steps (the lease is renewed from a thread of its own).

        """
        writes: list[_Write] = []
        turn = time.monotonic()
        for doc in batch:
            try:
                plan, write = await self._transform(run, doc)
            except MigrateError as exc:
                return writes, exc
            if plan.kind == "newer":
                run.report.newer += 1
            elif plan.kind == "beyond":
                run.report.beyond += 1
            elif write is not None:
                writes.append(write)
            if time.monotonic() - turn > YIELD_EVERY:
                await asyncio.sleep(0)
                turn = time.monotonic()
        return writes, None

    async def _write(self, run: _Pass, writes: list[_Write]) -> None:
        """Write a batch; re-read and write again, once, what changed meanwhile.

        A write the server refuses fails its document (recorded, with
        ``continue_on_error``); otherwise the run stops after the batch, with
        what the batch could write written. A batch whose writes stop the run
        (the server failing past the retry window, the lease lost) is read
        back: what the server holds at the new version is counted, whatever
        answer was lost on the way.

        """
        report = run.report
        await self._hold_lock()
        try:
            done, skipped, refused = await self._write_batch(run, writes)
        except MigrateError as stopped:
            await self._count_stopped(run, writes, stopped)
            raise
        report.migrated += done
        report.skipped += len(skipped)
        run.skipped.update(skipped)
        if refused is not None:
            raise refused

    async def _write_batch(
        self, run: _Pass, writes: list[_Write]
    ) -> tuple[int, dict[bytes, Any], StepResultError | None]:
        """Write a batch: how many of its documents are at the pass's target after it,
        the ones skipped (changed meanwhile, twice), and the error to stop on, if any.

        A write that matched nothing was either changed meanwhile, or (after a
        fault) applied by an attempt whose answer was lost: the documents are
        read again, and those at the target are done.

        """
        result = await self._send(run, writes)
        refused = self._refused(run, writes, result.refused)
        if result.matched + len(result.refused) == len(writes):
            return result.matched, {}, refused
        # Changed meanwhile: read again once (by _id alone, which every
        # server finds by its index), and write if unchanged since.
        ids = [w.doc["_id"] for i, w in enumerate(writes) if i not in result.refused]
        found = await self._read_again(run, ids)
        again: list[_Write] = []
        done = 0
        skipped = {_key(i): i for i in ids}
        for doc in found:
            plan, write = await self._transform(run, doc)
            if write is not None:
                again.append(write)
            elif plan.kind == "current":
                # Ours (this write, or an attempt before it), or newer code's
                # meanwhile: done, not skipped.
                done += 1
            elif plan.kind in ("newer", "beyond"):
                continue
            skipped.pop(_key(doc["_id"]), None)
        skipped.update({_key(w.doc["_id"]): w.doc["_id"] for w in again})
        if not again:
            return done, skipped, refused
        second = await self._send(run, again)
        refused = refused or self._refused(run, again, second.refused)
        for i, w in enumerate(again):
            if i in second.refused:
                skipped.pop(_key(w.doc["_id"]), None)
        if second.matched + len(second.refused) == len(again):
            for w in again:
                skipped.pop(_key(w.doc["_id"]), None)
            return done + second.matched, skipped, refused
        # Changed a second time, or written by an attempt whose answer was
        # lost: which, the server says.
        ids = [w.doc["_id"] for i, w in enumerate(again) if i not in second.refused]
        for doc in await self._read_again(run, ids):
            if run.plan_for(doc.get(VERSION_KEY)).kind == "current":
                done += 1
                skipped.pop(_key(doc["_id"]), None)
        return done, skipped, refused

    async def _send(self, run: _Pass, writes: list[_Write]) -> Any:
        """One bulk write of conditional updates, the lease checked on the server first."""
        await self._verify_lease()
        return await self.retry.call(
            f"writing to {run.collection.name}",
            lambda: bulk_update(run.collection, [w.write for w in writes]),
        )

    async def _read_again(self, run: _Pass, ids: list[Any]) -> list[Document]:
        return await self.retry.call(
            f"reading {run.collection.name} again",
            lambda: to_list(run.collection.find({"_id": {"$in": ids}})),
        )

    async def _count_stopped(
        self, run: _Pass, writes: list[_Write], stopped: BaseException
    ) -> None:
        """Count, in a batch whose writes stopped the run, the documents at the target.

        Read once and briefly. A document not there whose write's answer was
        lost (a connection dropped or timed out) is unconfirmed: the server
        may still apply it; so is every document of the batch if the server
        does not answer the read.

        """
        ids = [w.doc["_id"] for w in writes]
        lost = _answer_lost(stopped)
        try:
            found = await asyncio.wait_for(
                to_list(run.collection.find({"_id": {"$in": ids}}, {VERSION_KEY: 1})),
                RECOUNT_WAIT,
            )
        except (PyMongoError, TimeoutError):
            run.report.unconfirmed += len(ids)
            return
        done = sum(1 for d in found if run.plan_for(d.get(VERSION_KEY)).kind == "current")
        run.report.migrated += done
        if lost:
            run.report.unconfirmed += len(ids) - done

    def _progress(self) -> dict[str, Any]:
        """What the run has written so far, by model, as the history records it (a copy)."""
        return copy.deepcopy({r.model: r.counts() for r in self.reports})

    async def _verify_lease(self) -> None:
        """Before a write: make sure on the server that the lease is still ours, and
        leave there what the run has written so far (`LeaseLock.verify`)."""
        if self.lock is None:
            return
        await self.retry.call(LEASE_CHECK, partial(self.lock.verify, self._progress()))

    def _record_failure(self, report: ModelReport, doc_id: Any, exc: BaseException) -> None:
        """Count a failed document, and keep the first ones in detail (secrets masked)."""
        report.failed += 1
        if len(report.failures) < MAX_FAILURES:
            report.failures.append(
                {
                    "model": report.model,
                    "_id": doc_id,
                    "step": getattr(exc, "source", None),
                    "error": self.redact(shorten(str(exc))),
                }
            )

    def _refused(
        self, run: _Pass, writes: list[_Write], refused: dict[int, str]
    ) -> StepResultError | None:
        """Fail the documents whose write the server refused; the error to stop on, if any."""
        first: StepResultError | None = None
        for index, reason in sorted(refused.items()):
            write = writes[index]
            problem = f"gave a document that cannot be written: the server refused it: {reason}"
            error = _result_error(run, write.doc, write.plan, problem)
            if self.options.continue_on_error:
                self._record_failure(run.report, write.doc.get("_id"), error)
            elif first is None:
                first = error
        return first

    async def _record_unreached(self, run: _Pass, raws: list[Any]) -> None:
        """Record, as failed, the documents whose version is an array holding the target.

        The streams find documents with ``{$ne: target}``, which leaves those
        out; with ``continue_on_error`` the survey did not refuse them either.

        """
        target = str(run.target)
        for raw in raws:
            plan = run.plan_for(raw)
            if type(raw) is not list or target not in raw or plan.error is None:
                continue
            query = {**self._scope(run.cls), VERSION_KEY: {"$eq": raw}}
            found = await self.retry.call(
                f"reading {run.collection.name}", partial(_find, run.collection, query)
            )
            for doc in found:
                if type(doc.get(VERSION_KEY)) is list:
                    self._record_failure(run.report, doc.get("_id"), plan.error)

    async def _sample(self, run: _Pass) -> None:
        """Dry run: run the chain on the first documents and restore each result."""
        if not self.options.sample:
            return
        query = {**self._scope(run.cls), VERSION_KEY: {"$ne": str(run.target)}}
        sample = await self.retry.call(
            f"reading {run.collection.name}",
            lambda: to_list(
                run.collection.find(query, sort=[("_id", 1)]).limit(self.options.sample)
            ),
        )
        for doc in sample:
            entry: dict[str, Any] = {
                "_id": doc.get("_id"),
                "from": _version_name(doc.get(VERSION_KEY)),
            }
            try:
                plan, write = await self._transform(run, doc)
                if plan.kind in ("current", "newer", "beyond"):
                    continue
                if write is not None and not run.direction.down:
                    with restore_check() as problems:
                        await run.cls.__new__(run.cls).__restorestate__(write.new)
                    if problems:
                        raise MigrateError(
                            "; ".join(problems), model=run.cls.__model__, doc_id=doc.get("_id")
                        )
                entry["ok"] = True
            except Exception as exc:
                entry.update(ok=False, error=self.redact(shorten(str(exc))))
            run.report.samples.append(entry)


def _result_error(run: _Pass, doc: Document, plan: Plan, problem: str) -> StepResultError:
    """A document whose chain ran, but whose result cannot be written (`problem`
    says why, after the step's name)."""
    last = plan.steps[-1]
    end = last.from_version if run.direction.down else last.to_version
    return StepResultError(
        problem,
        model=run.report.model,
        doc_id=doc.get("_id"),
        from_version=_version_name(doc.get(VERSION_KEY)),
        to_version=end,
        source=last.source,
    )


async def _find(collection: Any, query: dict[str, Any]) -> list[Document]:
    """Every document `query` finds: a new cursor each time it is called."""
    return await to_list(collection.find(query))


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.warning(message)


#: What the runner is doing while it checks its lease before a write.
LEASE_CHECK = "checking the migration lock"


def _answer_lost(stopped: BaseException) -> bool:
    """Whether a write that stopped the run may have gone unanswered: a try of its
    run of failures (the last one, or any before it) lost its connection.

    Never when the lease check before the write stopped it: the write was not sent.

    """
    if getattr(stopped, "operation", None) == LEASE_CHECK:
        return False
    return bool(getattr(stopped, "answer_lost", False)) or isinstance(
        getattr(stopped, "error", None), ConnectionFailure
    )
