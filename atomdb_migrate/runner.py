"""The eager engine: bring every stored document of a model to a version.

For one model the runner:

1. surveys the collection with one aggregation: how many documents sit at
   each stored version other than the target; plans the chain for each, and
   refuses to start if a chain is broken (nothing has been written then);
2. streams the documents not at the target in ``_id`` order, in batches,
   reading the next batch while it writes the current one;
3. runs each document's chain in memory, on a copy;
4. writes the batch with one unordered bulk write of conditional updates
   (see `atomdb_migrate.writes`): each matches the document as it was read
   and sets or unsets only the fields its steps changed, the version among
   them. A document changed meanwhile does not match: it is re-read once
   and its chain run again; if it changed again it is skipped and counted.

The version stored in each document is the checkpoint: a run killed at any
point leaves every document either untouched or fully at its new version,
and the next run carries on with the documents still behind.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from packaging.version import Version
from pymongo.errors import OperationFailure

from .documents import Document
from .exceptions import (
    ChainError,
    InvalidVersionError,
    MigrateError,
    StepError,
    StepResultError,
    short_repr,
    shorten,
)
from .history import MAX_FAILURES
from .model import VersionedModel, restore_check
from .mongo import batches, bulk_update, collection_names, count_versions, is_mongomock, to_list
from .ops import Operations
from .registry import MigrationRegistry
from .renames import RenameReport, rename_collection, rewrite_references
from .versions import (
    VERSION_KEY,
    Step,
    apply_chain,
    parse_version,
    stored_version,
    version_key,
)
from .writes import conditional_update

if TYPE_CHECKING:
    from .lock import LeaseLock

log = logging.getLogger("atomdb_migrate")

#: The default number of documents per batch.
DEFAULT_BATCH_SIZE = 1000

#: How many documents a dry run transforms and restores.
DEFAULT_SAMPLE = 20


class Progress(Protocol):
    """What the runner tells about its progress (see `atomdb_migrate.progress`)."""

    def start(self, model: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...


class _Quiet:
    def start(self, model: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class ModelReport:
    """What a run did (or, dry, would do) to one model's documents."""

    #: The model's ``__model__`` name.
    model: str
    #: The version documents are taken to.
    target: str
    #: "upgrade" or "downgrade".
    direction: str = "upgrade"
    #: Documents not at the target when the run started, by stored version.
    by_version: dict[str, int] = field(default_factory=dict)
    #: Documents each step applies to, by "from -> to".
    steps: dict[str, int] = field(default_factory=dict)
    #: Documents written at the target version.
    migrated: int = 0
    #: Documents changed by someone else twice while the run read them.
    skipped: int = 0
    #: Documents whose chain failed (with --continue-on-error).
    failed: int = 0
    #: Documents newer than the code, left alone.
    newer: int = 0
    #: Documents already past the target the other way (e.g. ahead of --to), left alone.
    beyond: int = 0
    #: The first failures: model, _id, step, error.
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Dry run: the sampled documents, each with its restore check.
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Steps run on the server, by "from -> to": the documents each changed
    #: (dry run: the documents each would change).
    server_steps: dict[str, int] = field(default_factory=dict)
    #: Renames of the model's former names (``ops.rename_model``).
    renames: list[RenameReport] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Documents found not at the target at the start."""
        return sum(self.by_version.values())

    def counts(self) -> dict[str, Any]:
        """The counts, as the history records them."""
        verb = "upgraded" if self.direction == "upgrade" else "downgraded"
        return {
            "target": self.target,
            "steps": self.steps,
            verb: self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "newer": self.newer,
            "beyond": self.beyond,
            "server_steps": self.server_steps,
            "renames": [r.counts() for r in self.renames],
        }


def _label(step: Step) -> str:
    return f"{step.from_version} -> {step.to_version}"


def _version_name(raw: Any) -> str:
    """A stored version value as shown: its canonical form, or its repr if it is none."""
    try:
        return str(stored_version(raw))
    except MigrateError:
        return short_repr(raw, 40)


#: How long the transform of a batch may hold the event loop before it lets
#: the lease's renewal (and the write in flight) run.
YIELD_EVERY = 0.05


class _Write:
    """One conditional update, and the document and chain it comes from."""

    __slots__ = ("doc", "new", "plan", "query", "update")

    def __init__(
        self, doc: Document, plan: _Plan, query: dict[str, Any], update: Any, new: Document
    ) -> None:
        self.doc, self.plan, self.query, self.update, self.new = doc, plan, query, update, new


class _Plan:
    """What to do with documents at one stored version."""

    __slots__ = ("error", "kind", "steps")

    def __init__(self, kind: str, steps: tuple[Step, ...] = (), error: MigrateError | None = None):
        self.kind = kind  # "migrate", "current", "newer", "beyond", "error"
        self.steps = steps
        self.error = error


class Runner:
    """Runs upgrades and downgrades of whole collections.

    Parameters
    ----------
    database:
        The database (PyMongo async or Motor).
    batch_size: int
        Documents per read and per bulk write.
    continue_on_error: bool
        Record documents whose chain fails and go on, instead of stopping.
    dry_run: bool
        Write nothing: survey, and run the chain on a sample.
    sample: int
        With ``dry_run``: how many documents to transform and restore.
    progress: Progress, optional
        Told the total and each batch.
    lock: LeaseLock, optional
        Checked before every write: the run stops if its lease is lost.
    server_side: bool
        Run the steps made only of operations as server-side updates (see
        `atomdb_migrate.ops`); False runs every step on the client path.
    skip_collections: tuple of str
        Collections never scanned for references (the lock and the history).
    only: mapping, optional
        Only these documents: their ``_id``, by ``__model__`` name (to retry
        the documents a run recorded as failed). Their steps run on the
        client.
    redact: callable, optional
        Masks the secrets in a failure's message before the report keeps it
        (a step's error may quote a URL).

    """

    def __init__(
        self,
        database: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        continue_on_error: bool = False,
        dry_run: bool = False,
        sample: int = DEFAULT_SAMPLE,
        progress: Progress | None = None,
        lock: LeaseLock | None = None,
        registry: MigrationRegistry | None = None,
        server_side: bool = True,
        skip_collections: tuple[str, ...] = (),
        only: Mapping[str, Sequence[Any]] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.database = database
        self.batch_size = batch_size
        self.continue_on_error = continue_on_error
        self.dry_run = dry_run
        self.sample = sample
        self.progress: Progress = progress or _Quiet()
        self.lock = lock
        self.registry = registry or MigrationRegistry.instance()
        self.server_side = server_side
        self.skip_collections = skip_collections
        self.only = only
        self.redact: Callable[[str], str] = redact or str
        #: The documents of the model being run: all of them, or `only` its ids.
        self._scope: dict[str, Any] = {}
        self._expressions = True
        #: A report per model run, added when the run starts: what a run that
        #: stopped on an error did is there too.
        self.reports: list[ModelReport] = []

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------
    async def upgrade(self, cls: type[VersionedModel], to: Any = None) -> ModelReport:
        """Bring the model's documents to `to` (default: the model's version)."""
        head = cls.__parsed_version__
        target = head if to is None else parse_version(to, model=cls.__model__, what="--to")
        if target > head:
            raise ChainError(
                f"cannot upgrade to {to}: it is past the model's version {cls.__version__}",
                model=cls.__model__,
            )
        return await self._run(cls, target, downgrade=False)

    async def downgrade(self, cls: type[VersionedModel], to: Any) -> ModelReport:
        """Take the model's documents back to `to`, through the downgrade functions.

        Raises
        ------
        MissingDowngradeError
            Before anything is written, if a step between the model's version
            and `to` has no downgrade function.

        """
        target = parse_version(to, model=cls.__model__, what="--to")
        if target > cls.__parsed_version__:
            raise ChainError(
                f"cannot downgrade to {to}: it is past the model's version {cls.__version__}; "
                "run downgrade with the code of a version at least as new",
                model=cls.__model__,
            )
        self.registry.graph(cls).plan_downgrade(cls.__parsed_version__, target)
        return await self._run(cls, target, downgrade=True)

    # ------------------------------------------------------------------
    # The engine
    # ------------------------------------------------------------------
    async def _run(
        self, cls: type[VersionedModel], target: Version, downgrade: bool
    ) -> ModelReport:
        report = ModelReport(cls.__model__, str(target), "downgrade" if downgrade else "upgrade")
        self.reports.append(report)
        collection = self.database[cls.__model__]
        if not downgrade:
            collection = await self._rename_collections(cls, report)
        self._scope = {}
        self._expressions = not is_mongomock(self.database)
        if self.only is not None:
            self._scope = {"_id": {"$in": list(self.only.get(cls.__model__, ()))}}
        query = {**self._scope, VERSION_KEY: {"$ne": str(target)}}
        plan_for = self._planner(cls, target, downgrade)

        # 1. Survey every document, and refuse to start on a broken chain.
        # (Not only those `query` finds: {$ne: target} leaves out an array
        # holding the target, which is no version.)
        rows = await count_versions(collection, self._scope or None)
        raws = [raw for raw, _ in rows]
        others = 0  # documents newer, beyond the target, or with a broken chain
        chain: tuple[Step, ...] = ()
        for raw, n in sorted(rows, key=lambda r: short_repr(r[0])):
            plan = plan_for(raw)
            if plan.kind == "current":
                continue  # the target in another BSON form (the int 2 for "2")
            name = _version_name(raw)
            report.by_version[name] = report.by_version.get(name, 0) + n
            if plan.kind == "error" and not self.continue_on_error:
                assert plan.error is not None
                raise plan.error
            for s in plan.steps:
                report.steps[_label(s)] = report.steps.get(_label(s), 0) + n
            if len(plan.steps) > len(chain):
                chain = plan.steps  # the longest chain holds every other one
            if plan.kind != "migrate":
                others += n
        server = self._server_steps(collection, chain, downgrade)

        if self.dry_run:
            for s in server:
                report.server_steps[_label(s)] = report.steps.get(_label(s), 0)
            await self._sample(cls, collection, query, plan_for, report, downgrade)
            return report
        # 2. References to every former name, in every collection, rewritten
        # to the model's name: on every run while the model has former names,
        # documents pending or not, and before any document passes the step
        # renaming it (a run killed in between repeats this).
        if not downgrade:
            for old in self.registry.former_names(cls):
                rename = next((r for r in report.renames if r.old == old), None)
                if rename is None:
                    rename = RenameReport(old, cls.__model__)
                    report.renames.append(rename)
                await rewrite_references(
                    self.database,
                    rename,
                    skip=self.skip_collections,
                    batch_size=self.batch_size,
                    lock=self.lock,
                )
        if not report.pending:
            return report

        # 3. Steps made of operations on the server; the steps between them
        # on the client, up to the version each server step leaves.
        python: list[Step] = []
        for s in chain:
            if s not in server or not self.server_side:
                python.append(s)
                continue
            if python:
                end = s.to_key if downgrade else s.from_key
                await self._stream(cls, collection, end, downgrade, report, raws, final=False)
                python = []
            if not await self._server_step(collection, s, downgrade, report, raws):
                python.append(s)

        # 4. Everything still not at the target, on the client: the steps
        # after the last server step, and documents a server step left alone.
        # When the server steps changed every document the survey counted,
        # nothing is left: the collection is not read again.
        done = (
            bool(chain)
            and not others
            and all(
                report.server_steps.get(_label(s)) == report.steps.get(_label(s)) for s in chain
            )
        )
        if not done:
            await self._stream(cls, collection, target, downgrade, report, raws, final=True)
        await self._record_unreached(collection, str(target), raws, plan_for, report)
        return report

    async def _record_unreached(
        self, collection: Any, target: str, raws: list[Any], plan_for: Any, report: ModelReport
    ) -> None:
        """Record, as failed, the documents whose version is an array holding the target.

        The streams find documents with ``{$ne: target}``, which leaves those
        out; with ``continue_on_error`` the survey did not refuse them either.

        """
        for raw in raws:
            plan = plan_for(raw)
            if type(raw) is not list or target not in raw or plan.error is None:
                continue
            async for doc in collection.find({**self._scope, VERSION_KEY: {"$eq": raw}}):
                if type(doc.get(VERSION_KEY)) is list:
                    self._record_failure(report, doc.get("_id"), plan.error)

    def _planner(
        self, cls: type[VersionedModel], target: Version, downgrade: bool
    ) -> Callable[[Any], _Plan]:
        """The plan for documents at each stored version (computed once per version)."""
        plans: dict[Any, _Plan] = {}

        def plan_for(raw: Any) -> _Plan:
            key = version_key(raw)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = self._plan(cls, raw, target, downgrade)
            return plan

        return plan_for

    async def _rename_collections(self, cls: type[VersionedModel], report: ModelReport) -> Any:
        """Rename the collections of the model's former names; return the collection to read.

        A dry run renames nothing: it reads the old collection while the new
        one does not exist yet.

        """
        collection = self.database[cls.__model__]
        former = self.registry.former_names(cls)
        if not former:
            return collection
        names = await collection_names(self.database)
        for old in former:
            if old not in names:
                continue
            rename = RenameReport(old, cls.__model__)
            report.renames.append(rename)
            if self.dry_run:
                rename.collection = "merge" if cls.__model__ in names else "rename"
                if cls.__model__ not in names:
                    collection = self.database[old]
                continue
            await rename_collection(
                self.database, rename, batch_size=self.batch_size, lock=self.lock
            )
        return collection

    def _server_steps(self, collection: Any, chain: tuple[Step, ...], downgrade: bool) -> set[Step]:
        """The steps of the chain that run on the server (none on mongomock)."""
        steps = {
            s
            for s in chain
            if s.server_side
            and isinstance(s.downgrade_fn if downgrade else s.upgrade_fn, Operations)
        }
        if steps and self.server_side and is_mongomock(collection):
            _say_once("mongomock runs no pipeline updates: steps of operations run on the client")
            return set()
        return steps if self.server_side and not self._scope else set()

    async def _server_step(
        self, collection: Any, step: Step, downgrade: bool, report: ModelReport, raws: list[Any]
    ) -> bool:
        """Run one step of operations as ``update_many`` calls; False if the server refused it.

        The documents of the step's common shape are changed first, with
        plain stages (see `Operations.server_updates`); the others with the
        general pipeline.

        Documents where the step cannot run (a value that does not convert)
        are left as they are, at the version the step leaves, for the client
        path to report.

        """
        ops = step.downgrade_fn if downgrade else step.upgrade_fn
        assert isinstance(ops, Operations)
        start, end = step.from_version, step.to_version
        if downgrade:
            start, end = end, start
        values = list(dict.fromkeys([r for r in raws if _same_version(r, start)] + [start]))
        version: Any = {"$in": values} if len(values) > 1 else values[0]
        self.progress.start(
            f"{report.model} {start} -> {end} (server)", report.steps.get(_label(step), 0)
        )
        if self.lock is not None:
            self.lock.check()
        modified = 0
        expected = report.steps.get(_label(step), 0)
        try:
            for query, pipeline in ops.server_updates({VERSION_KEY: version}, end):
                if modified and modified >= expected:
                    break  # the fast form took every document: no need to scan again
                result = await collection.update_many(query, pipeline)
                modified += int(result.modified_count)
        except OperationFailure as exc:
            _say_once(
                f"the server refused a pipeline update ({exc.details or exc}): "
                "steps of operations run on the client"
            )
            self.server_side = False
            return False
        finally:
            self.progress.advance(modified)
            self.progress.finish()
        report.server_steps[_label(step)] = modified
        if end == report.target:
            report.migrated += modified
        return True

    async def _stream(
        self,
        cls: type[VersionedModel],
        collection: Any,
        target: Version,
        downgrade: bool,
        report: ModelReport,
        raws: list[Any],
        *,
        final: bool,
    ) -> None:
        """Stream the documents not at `target` through their chains, and write them.

        One read and one write stay in flight while the next batch is
        transformed. Only the final pass counts in the report: the earlier
        ones take documents to the version a server step leaves, and a
        document whose chain fails there (with ``continue_on_error``) is
        left for the final pass, which records it.

        """
        plan_for = self._planner(cls, target, downgrade)
        counts = report if final else ModelReport(report.model, str(target), report.direction)
        if final:
            query: dict[str, Any] = {**self._scope, VERSION_KEY: {"$ne": str(target)}}
        else:
            # Only the documents on the way to `target`: the others wait for
            # the server step that leaves it.
            behind = [r for r in raws if _before(r, target, downgrade)]
            behind += _chain_versions(self.registry, cls, target, downgrade)
            query = {**self._scope, VERSION_KEY: {"$in": behind}}
        # The total is an estimate for the progress bar: the survey's counts.
        if final:
            total = max(report.pending - report.migrated, 0)
        else:
            total = sum(n for r, n in report.by_version.items() if _before(r, target, downgrade))
        self.progress.start(cls.__model__, total)
        stream = batches(
            collection.find(query, sort=[("_id", 1)], batch_size=self.batch_size),
            self.batch_size,
        )
        reading = asyncio.ensure_future(anext(stream, None))
        writing: asyncio.Future[None] | None = None
        try:
            while (batch := await reading) is not None:
                reading = asyncio.ensure_future(anext(stream, None))
                writes, error = await self._prepare(batch, plan_for, counts, downgrade)
                if writing is not None:
                    # Shielded: an interrupted run lets the write in flight
                    # finish and count it, below.
                    await asyncio.shield(writing)
                writing = None
                if writes:
                    writing = asyncio.ensure_future(
                        self._write(collection, writes, plan_for, counts, downgrade)
                    )
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

    def _plan(self, cls: type[VersionedModel], raw: Any, target: Version, downgrade: bool) -> _Plan:
        model = cls.__model__
        try:
            stored = stored_version(raw, model=model)
        except InvalidVersionError as exc:
            return _Plan("error", error=exc)
        if stored == target:
            return _Plan("current")
        if stored > cls.__parsed_version__:
            return _Plan("newer")
        graph = self.registry.graph(cls)
        try:
            if downgrade:
                if stored < target:
                    return _Plan("beyond")
                return _Plan("migrate", graph.plan_downgrade(stored, target))
            if stored > target:
                return _Plan("beyond")
            return _Plan("migrate", graph.plan_upgrade(stored, target))
        except ChainError as exc:
            return _Plan("error", error=exc)

    async def _transform(
        self, doc: Document, plan: _Plan, report: ModelReport, downgrade: bool
    ) -> _Write | None:
        """The write that takes a document to the target; None if its chain failed and
        the run goes on (it is recorded in the report).

        A result that cannot be written (a value BSON cannot encode, over
        16 MB) fails as a `StepResultError` naming the document and the step.

        """
        try:
            if plan.kind == "error":
                assert plan.error is not None
                raise plan.error
            new, _ = await apply_chain(plan.steps, doc, downgrade=downgrade)
            try:
                query, update = conditional_update(doc, new, expressions=self._expressions)
            except ValueError as exc:
                raise _result_error(report.model, doc, plan, str(exc), downgrade) from None
            return _Write(doc, plan, query, update, new)
        except (StepError, ChainError, InvalidVersionError) as exc:
            if not self.continue_on_error:
                raise
            self._record_failure(report, doc.get("_id"), exc)
            return None

    async def _prepare(
        self,
        batch: list[Document],
        plan_for: Any,
        report: ModelReport,
        downgrade: bool,
    ) -> tuple[list[_Write], BaseException | None]:
        """The batch's writes, and the error that stopped it, if any.

        Steps are often synchronous: every `YIELD_EVERY` seconds the event
        loop gets a turn, so the lease is renewed and the write in flight
        goes on, however slow the steps.

        """
        writes: list[_Write] = []
        turn = time.monotonic()
        for doc in batch:
            plan = plan_for(doc.get(VERSION_KEY))
            if plan.kind == "newer":
                report.newer += 1
                continue
            if plan.kind == "beyond":
                report.beyond += 1
                continue
            if plan.kind == "current":
                continue
            try:
                write = await self._transform(doc, plan, report, downgrade)
            except MigrateError as exc:
                return writes, exc
            if write is not None:
                writes.append(write)
            if time.monotonic() - turn > YIELD_EVERY:
                await asyncio.sleep(0)
                turn = time.monotonic()
        return writes, None

    async def _write(
        self,
        collection: Any,
        writes: list[_Write],
        plan_for: Any,
        report: ModelReport,
        downgrade: bool,
    ) -> None:
        """Write a batch; re-read and write again, once, what changed meanwhile.

        A write the server refuses fails its document (recorded, with
        ``continue_on_error``); otherwise the run stops after the batch, with
        what the batch could write written.

        """
        if self.lock is not None:
            self.lock.check()
        result = await bulk_update(collection, [(w.query, w.update) for w in writes])
        refused = self._refused(writes, result.refused, report, downgrade)
        unmatched = len(writes) - result.matched - len(result.refused)
        retried = 0
        if unmatched > 0:
            # Changed meanwhile: read again once, and write if unchanged since.
            ids = [w.doc["_id"] for i, w in enumerate(writes) if i not in result.refused]
            again: list[_Write] = []
            # By _id alone, so that the _id index finds them on every server.
            cursor = collection.find({"_id": {"$in": ids}})
            for doc in await to_list(cursor):
                plan = plan_for(doc.get(VERSION_KEY))
                if plan.kind not in ("migrate", "error"):
                    continue
                write = await self._transform(doc, plan, report, downgrade)
                if write is not None:
                    again.append(write)
            if again:
                if self.lock is not None:
                    self.lock.check()
                second = await bulk_update(collection, [(w.query, w.update) for w in again])
                refused = refused or self._refused(again, second.refused, report, downgrade)
                retried = second.matched
                unmatched -= len(second.refused)
        report.migrated += result.matched + retried
        report.skipped += unmatched - retried
        if refused is not None:
            raise refused

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
        self, writes: list[_Write], refused: dict[int, str], report: ModelReport, downgrade: bool
    ) -> StepResultError | None:
        """Fail the documents whose write the server refused; the error to stop on, if any."""
        first: StepResultError | None = None
        for index, reason in sorted(refused.items()):
            write = writes[index]
            error = _result_error(
                report.model, write.doc, write.plan, f"the server refused it: {reason}", downgrade
            )
            if self.continue_on_error:
                self._record_failure(report, write.doc.get("_id"), error)
            elif first is None:
                first = error
        return first

    async def _sample(
        self,
        cls: type[VersionedModel],
        collection: Any,
        query: dict[str, Any],
        plan_for: Any,
        report: ModelReport,
        downgrade: bool,
    ) -> None:
        """Dry run: run the chain on the first documents and restore each result."""
        if not self.sample:
            return
        cursor = collection.find(query, sort=[("_id", 1)]).limit(self.sample)
        for doc in await to_list(cursor):
            plan = plan_for(doc.get(VERSION_KEY))
            if plan.kind not in ("migrate", "error"):
                continue
            entry: dict[str, Any] = {
                "_id": doc.get("_id"),
                "from": _version_name(doc.get(VERSION_KEY)),
            }
            try:
                write = await self._transform(doc, plan, report, downgrade)
                if write is not None and not downgrade:
                    with restore_check() as problems:
                        await cls.__new__(cls).__restorestate__(write.new)
                    if problems:
                        raise MigrateError(
                            "; ".join(problems), model=cls.__model__, doc_id=doc.get("_id")
                        )
                entry["ok"] = True
            except Exception as exc:
                entry.update(ok=False, error=self.redact(shorten(str(exc))))
            report.samples.append(entry)


def _result_error(
    model: str, doc: Document, plan: _Plan, problem: str, downgrade: bool
) -> StepResultError:
    """A document whose chain ran, but whose result cannot be written."""
    last = plan.steps[-1]
    end = last.from_version if downgrade else last.to_version
    return StepResultError(
        f"gave a document that cannot be written: {problem}",
        model=model,
        doc_id=doc.get("_id"),
        from_version=_version_name(doc.get(VERSION_KEY)),
        to_version=end,
        source=last.source,
    )


def _stored(raw: Any) -> Version | None:
    """A stored ``__version__`` value parsed (None, if it is not a version)."""
    try:
        return stored_version(raw)
    except InvalidVersionError:
        return None


def _same_version(raw: Any, version: str) -> bool:
    return _stored(raw) == parse_version(version)


def _before(raw: Any, target: Version, downgrade: bool) -> bool:
    """Whether a stored version comes before `target` on the way there."""
    version = _stored(raw)
    if version is None:
        return False
    return version > target if downgrade else version < target


def _chain_versions(
    registry: MigrationRegistry, cls: type[VersionedModel], target: Version, downgrade: bool
) -> list[str]:
    """The canonical versions steps arrive at before `target` (server steps store these)."""
    found: list[Any] = []
    for s in registry.graph(cls).steps:
        arrive = s.from_key if downgrade else s.to_key
        if (arrive > target) if downgrade else (arrive < target):
            found.append(str(arrive))
    return found


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.warning(message)
