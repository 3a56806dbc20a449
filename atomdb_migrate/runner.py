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
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from packaging.version import Version
from pymongo import UpdateOne

from .exceptions import ChainError, InvalidVersionError, MigrateError, StepError
from .history import MAX_FAILURES
from .model import VersionedModel, restore_check
from .registry import MigrationRegistry
from .versions import (
    BASE_VERSION,
    VERSION_KEY,
    Document,
    Step,
    copy_document,
    parse_version,
    run_chain,
)
from .writes import document_diff, unchanged_filter

if TYPE_CHECKING:
    from .lock import LeaseLock

log = logging.getLogger("atomdb_migrate")

#: A conditional update: its filter and its update document.
Write = tuple[dict[str, Any], dict[str, Any]]

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
        }


def _label(step: Step) -> str:
    return f"{step.from_version} -> {step.to_version}"


def _version_name(raw: Any) -> str:
    return BASE_VERSION if raw is None else str(raw)


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

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------
    async def upgrade(self, cls: type[VersionedModel], to: Any = None) -> ModelReport:
        """Bring the model's documents to `to` (default: the model's version)."""
        head = cls.__parsed_version__
        target = head if to is None else parse_version(to, model=cls.__model__)
        if target > head:
            raise ChainError(
                f"cannot upgrade to {target}: the model's version is {head}", model=cls.__model__
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
        target = parse_version(to, model=cls.__model__)
        self.registry.graph(cls).plan_downgrade(cls.__parsed_version__, target)
        return await self._run(cls, target, downgrade=True)

    # ------------------------------------------------------------------
    # The engine
    # ------------------------------------------------------------------
    async def _run(
        self, cls: type[VersionedModel], target: Version, downgrade: bool
    ) -> ModelReport:
        report = ModelReport(cls.__model__, str(target), "downgrade" if downgrade else "upgrade")
        collection = self.database[cls.__model__]
        query = {VERSION_KEY: {"$ne": str(target)}}
        plans: dict[tuple[str, str], _Plan] = {}

        def plan_for(raw: Any) -> _Plan:
            key = (type(raw).__name__, repr(raw))
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = self._plan(cls, raw, target, downgrade)
            return plan

        # 1. Survey, and refuse to start on a broken chain.
        rows = await count_versions(collection, query)
        for row in sorted(rows, key=lambda r: repr(r["_id"])):
            plan = plan_for(row["_id"])
            report.by_version[_version_name(row["_id"])] = row["n"]
            if plan.kind == "error" and not self.continue_on_error:
                assert plan.error is not None
                raise plan.error
            for s in plan.steps:
                report.steps[_label(s)] = report.steps.get(_label(s), 0) + row["n"]

        if self.dry_run:
            await self._sample(cls, collection, query, plan_for, report, downgrade)
            return report
        if not report.pending:
            return report

        # 2-4. Stream, transform, write: one read and one write in flight
        # while the next batch is transformed.
        self.progress.start(cls.__model__, report.pending)
        batches = _batches(
            collection.find(query, sort=[("_id", 1)], batch_size=self.batch_size),
            self.batch_size,
        )
        reading = asyncio.ensure_future(anext(batches, None))
        writing: asyncio.Future[None] | None = None
        try:
            while (batch := await reading) is not None:
                reading = asyncio.ensure_future(anext(batches, None))
                ops, ids, error = await self._prepare(batch, plan_for, report, downgrade)
                if writing is not None:
                    await writing
                writing = None
                if ops:
                    writing = asyncio.ensure_future(
                        self._write(collection, ops, ids, plan_for, report, downgrade)
                    )
                if error is not None:
                    # What was transformed before the failure is written: each
                    # document is complete on its own.
                    if writing is not None:
                        await writing
                    raise error
                self.progress.advance(len(batch))
            if writing is not None:
                await writing
        finally:
            reading.cancel()
            if writing is not None and not writing.done():
                # Stopped early: let the write in flight finish, so what was
                # counted is what was written.
                with contextlib.suppress(Exception):
                    await writing
            self.progress.finish()
        return report

    def _plan(self, cls: type[VersionedModel], raw: Any, target: Version, downgrade: bool) -> _Plan:
        model = cls.__model__
        try:
            stored = parse_version(
                BASE_VERSION if raw is None else raw, model=model, what="stored __version__"
            )
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
    ) -> Document | None:
        """The document at the target, or None if its chain failed and the run goes on."""
        try:
            if plan.kind == "error":
                assert plan.error is not None
                raise plan.error
            return await run_chain(plan.steps, copy_document(doc), downgrade=downgrade)
        except (StepError, ChainError, InvalidVersionError) as exc:
            if not self.continue_on_error:
                raise
            report.failed += 1
            if len(report.failures) < MAX_FAILURES:
                report.failures.append(
                    {
                        "model": report.model,
                        "_id": doc.get("_id"),
                        "step": getattr(exc, "source", None),
                        "error": str(exc),
                    }
                )
            return None

    async def _prepare(
        self,
        batch: list[Document],
        plan_for: Any,
        report: ModelReport,
        downgrade: bool,
    ) -> tuple[list[Write], list[Any], BaseException | None]:
        """The batch's writes, and the error that stopped it, if any."""
        ops: list[Write] = []
        ids: list[Any] = []
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
                new = await self._transform(doc, plan, report, downgrade)
            except MigrateError as exc:
                return ops, ids, exc
            if new is not None:
                ops.append((unchanged_filter(doc), document_diff(doc, new)))
                ids.append(doc["_id"])
        return ops, ids, None

    async def _write(
        self,
        collection: Any,
        ops: list[Write],
        ids: list[Any],
        plan_for: Any,
        report: ModelReport,
        downgrade: bool,
    ) -> None:
        if self.lock is not None:
            self.lock.check()
        matched = await _bulk_write(collection, ops)
        retried = 0
        if matched < len(ops):
            # Changed meanwhile: read again once, and write if unchanged since.
            again: list[Write] = []
            cursor = collection.find({"_id": {"$in": ids}, VERSION_KEY: {"$ne": report.target}})
            for doc in await _to_list(cursor):
                plan = plan_for(doc.get(VERSION_KEY))
                if plan.kind not in ("migrate", "error"):
                    continue
                new = await self._transform(doc, plan, report, downgrade)
                if new is not None:
                    again.append((unchanged_filter(doc), document_diff(doc, new)))
            if again:
                if self.lock is not None:
                    self.lock.check()
                retried = await _bulk_write(collection, again)
        report.migrated += matched + retried
        report.skipped += len(ops) - matched - retried

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
        for doc in await _to_list(cursor):
            plan = plan_for(doc.get(VERSION_KEY))
            if plan.kind not in ("migrate", "error"):
                continue
            entry: dict[str, Any] = {
                "_id": doc.get("_id"),
                "from": _version_name(doc.get(VERSION_KEY)),
            }
            try:
                new = await self._transform(doc, plan, report, downgrade)
                if new is not None and not downgrade:
                    with restore_check() as problems:
                        await cls.__new__(cls).__restorestate__(new)
                    if problems:
                        raise MigrateError(
                            "; ".join(problems), model=cls.__model__, doc_id=doc.get("_id")
                        )
                entry["ok"] = True
            except Exception as exc:
                entry.update(ok=False, error=str(exc))
            report.samples.append(entry)


def _is_mongomock(collection: Any) -> bool:
    """Whether a collection is mongomock's (mongomock-motor dresses it as Motor's)."""
    return any(
        kind.__module__.split(".")[0] in ("mongomock", "mongomock_motor")
        for kind in type(collection).__mro__
    )


async def _bulk_write(collection: Any, ops: list[Write]) -> int:
    """One unordered bulk write; how many documents matched.

    mongomock (the in-memory backend) cannot run PyMongo >= 4.11's bulk
    writes, so there each update is sent on its own, with the same filters.

    """
    if not _is_mongomock(collection):
        requests = [UpdateOne(query, update) for query, update in ops]
        return int((await collection.bulk_write(requests, ordered=False)).matched_count)
    global _WARNED
    if not _WARNED:
        log.info("mongomock: writing updates one at a time (no bulk writes)")
        _WARNED = True
    matched = 0
    for query, update in ops:
        matched += (await collection.update_one(query, update)).matched_count
    return matched


_WARNED = False


async def count_versions(collection: Any, query: dict[str, Any] | None = None) -> list[Any]:
    """Documents per stored version, with one aggregation: ``[{_id: version, n: count}]``.

    Documents without a version are grouped under ``None``.

    """
    pipeline: list[dict[str, Any]] = [{"$group": {"_id": f"${VERSION_KEY}", "n": {"$sum": 1}}}]
    if query:
        pipeline.insert(0, {"$match": query})
    cursor = collection.aggregate(pipeline)
    if inspect.isawaitable(cursor):  # PyMongo's async client; Motor returns the cursor
        cursor = await cursor
    return await _to_list(cursor)


async def _to_list(cursor: Any) -> list[Any]:
    return list(await cursor.to_list(length=None))


async def _batches(cursor: Any, size: int) -> AsyncIterator[list[Document]]:
    batch: list[Document] = []
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
