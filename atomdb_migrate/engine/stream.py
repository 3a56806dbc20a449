"""The client stream: a model's documents read, run through their steps and written.

`Stream.pump` reads the documents a query finds in ``_id`` order, in
batches, and reads the next batch while it writes the current one. Each
document's chain runs in memory (`Stream.transform`), on a lazy copy that
records the fields the steps look at (`atomdb_migrate.core.documents`), and
the batch is written with one unordered bulk write of conditional updates
(`atomdb_migrate.core.writes`): each matches the document's ``_id``, its
version as read and the fields its steps looked at or wrote, as read, and
sets or unsets only the fields its steps changed, the version among them.

A document whose steps looked at a field someone changed meanwhile does not
match: it is read again once and its chain run again; if it changed again
it is skipped and counted. A change to a field the steps never looked at is
kept, and the document upgraded without a re-read. A document whose chain
fails stops the stream, or (``continue_on_error``) is recorded and left.

The functions at the end choose what the runner's reads take: the documents
on the way to a server step's version (`behind`), and every document still
behind at the end (`rest`). The runner reads each through `Stream.pump`.

"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from functools import partial
from typing import Any

import bson
from packaging.version import Version
from pymongo.errors import PyMongoError

from ..core.documents import Document
from ..core.storage import VERSION_KEY
from ..core.writes import Write, guarded_write
from ..driver.mongo import after, batches, bulk_update, has_version_index, to_list
from ..driver.retry import Fault, Retry, bounded
from ..exceptions import (
    ChainError,
    GuardTooLargeError,
    InvalidVersionError,
    MigrateError,
    StepError,
    StepResultError,
    shorten,
)
from ..model.versioned import restore_check
from ..steps.versions import Plan, apply_chain, version_key
from .history import MAX_FAILURES
from .lease import RECOUNT_WAIT, Lease, answer_lost
from .leg import Leg, stored_or_none, version_name
from .options import RunOptions
from .pace import Pace
from .report import ModelReport, Progress

#: How long the transform of a batch may hold the event loop before it lets
#: the write in flight (and any other task) run.
YIELD_EVERY = 0.05


class PendingWrite:
    """One conditional update, and the document and chain it comes from."""

    __slots__ = ("doc", "new", "plan", "write")

    def __init__(self, doc: Document, plan: Plan, write: Write, new: Document) -> None:
        self.doc, self.plan, self.write, self.new = doc, plan, write, new


class Stream:
    """Reads, transforms and writes documents, a batch at a time.

    Parameters
    ----------
    options
        The run's options (batch size, continue-on-error, the dry run's sample).
    retry
        The run's `Retry`, for every call to the server.
    pace
        The rate limit and the replication-lag pause, before each write.
    progress
        Told the total of each read and each batch.
    lease
        Held and checked before each write.
    redact
        Masks the secrets in a failure's message before the report keeps it.
    expressions
        Whether the writes' filters may pin BSON types (not on mongomock).

    """

    def __init__(
        self,
        options: RunOptions,
        retry: Retry,
        pace: Pace,
        progress: Progress,
        lease: Lease,
        *,
        redact: Callable[[str], str] = str,
        expressions: bool = True,
    ) -> None:
        self.options, self.retry, self.pace, self.progress = options, retry, pace, progress
        self.lease, self.redact, self.expressions = lease, redact, expressions

    # ------------------------------------------------------------------
    # The pipeline: read, transform, write
    # ------------------------------------------------------------------
    async def pump(self, leg: Leg, query: dict[str, Any], total: int) -> None:
        """Read, transform and write the documents `query` finds, in ``_id`` order.

        One read and one write stay in flight while the next batch is
        transformed.

        """
        self.progress.start(leg.cls.__model__, total)
        stream = self._read(leg, query)
        reading = asyncio.ensure_future(anext(stream, None))
        writing: asyncio.Future[None] | None = None
        try:
            while (batch := await reading) is not None:
                reading = asyncio.ensure_future(anext(stream, None))
                writes, error = await self._prepare(leg, batch)
                if writing is not None:
                    # Shielded: an interrupted run lets the write in flight
                    # finish and count it, below.
                    await asyncio.shield(writing)
                writing = None
                if writes:
                    await self.pace.before_write(len(writes))
                    writing = asyncio.ensure_future(self._paced_write(leg, writes))
                if error is not None:
                    # What was transformed before the failure is written: each
                    # document is complete on its own.
                    if writing is not None:
                        await asyncio.shield(writing)
                    raise error
                self.progress.advance(migrating(leg, (d.get(VERSION_KEY) for d in batch)))
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

    async def _paced_write(self, leg: Leg, writes: list[PendingWrite]) -> None:
        """`_write`, its documents counted by the pace once it has ended."""
        try:
            await self._write(leg, writes)
        finally:
            self.pace.written(len(writes))

    async def _next_batch(
        self, stream: AsyncIterator[list[Document]], fault: Fault
    ) -> list[Document] | None:
        """The next batch of a read, or None at its end: within the call's deadline."""
        limit = fault.begin()
        return await bounded(anext(stream, None), limit, fault.operation, self.retry.on_wait)

    async def _read(self, leg: Leg, query: dict[str, Any]) -> AsyncIterator[list[Document]]:
        """The documents `query` finds, a batch at a time, in ``_id`` order.

        A read that fails transiently is sent again after the last document
        handed out: none is handed out twice, and none is missed.

        """
        size = min(self.options.batch_size, self.pace.largest_batch() or self.options.batch_size)
        fault = self.retry.fault(f"reading {leg.collection.name}")
        last: list[Any] = []  # the last _id handed out, once there is one
        while True:
            try:
                for found in after(query, last[0]) if last else [query]:
                    cursor = leg.collection.find(found, sort=[("_id", 1)], batch_size=size)
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

    async def transform(self, leg: Leg, doc: Document) -> tuple[Plan, PendingWrite | None]:
        """Classify a document and, where it migrates, make its conditional write.

        The one routine for a batch, a document read again, and a dry run's
        sample. Returns the document's plan, and its write: None when there
        is nothing to write, or when its chain failed and the run goes on
        past failures (it is recorded in the report then). A result that
        cannot be written (a value BSON cannot hold, over 16 MB) fails as a
        `StepResultError` naming the document and the step.

        """
        plan = leg.plan_for(doc.get(VERSION_KEY))
        if plan.kind in ("current", "newer", "beyond"):
            return plan, None
        try:
            if plan.error is not None:
                plan.raise_for(doc.get("_id"))
            new, fields = await apply_chain(plan.steps, doc, downgrade=leg.direction.down)
            try:
                write = guarded_write(doc, new, fields, expressions=self.expressions)
            except GuardTooLargeError as exc:
                raise result_error(leg, doc, plan, f"cannot be written safely: {exc}") from None
            except ValueError as exc:
                problem = f"gave a document that cannot be written: {exc}"
                raise result_error(leg, doc, plan, problem) from None
            return plan, PendingWrite(doc, plan, write, new)
        except (StepError, ChainError, InvalidVersionError) as exc:
            if not self.options.continue_on_error:
                raise
            self.record_failure(leg.report, doc.get("_id"), exc)
            return plan, None

    async def _prepare(
        self, leg: Leg, batch: list[Document]
    ) -> tuple[list[PendingWrite], BaseException | None]:
        """The batch's writes, and the error that stopped it, if any.

        Steps are often synchronous: every `YIELD_EVERY` seconds the event
        loop gets a turn, so the write in flight goes on however slow the
        steps (the lease is renewed from a thread of its own).

        """
        writes: list[PendingWrite] = []
        turn = time.monotonic()
        for doc in batch:
            try:
                plan, write = await self.transform(leg, doc)
            except MigrateError as exc:
                return writes, exc
            if plan.kind == "newer":
                leg.report.newer += 1
            elif plan.kind == "beyond":
                leg.report.beyond += 1
            elif write is not None:
                writes.append(write)
            if time.monotonic() - turn > YIELD_EVERY:
                await asyncio.sleep(0)
                turn = time.monotonic()
        return writes, None

    # ------------------------------------------------------------------
    # Writing a batch
    # ------------------------------------------------------------------
    async def _write(self, leg: Leg, writes: list[PendingWrite]) -> None:
        """Write a batch; re-read and write again, once, what changed meanwhile.

        A write the server refuses fails its document (recorded, with
        ``continue_on_error``); otherwise the run stops after the batch, with
        what the batch could write written. A batch whose writes stop the run
        (the server failing past the retry window, the lease lost) is read
        back: what the server holds at the new version is counted, whatever
        answer was lost on the way.

        """
        report = leg.report
        await self.lease.hold()
        try:
            done, skipped, refused = await self._write_batch(leg, writes)
        except MigrateError as stopped:
            await self._count_stopped(leg, writes, stopped)
            raise
        report.migrated += done
        report.skipped += len(skipped)
        leg.skipped.update(skipped)
        if refused is not None:
            raise refused

    async def _write_batch(
        self, leg: Leg, writes: list[PendingWrite]
    ) -> tuple[int, dict[bytes, Any], StepResultError | None]:
        """Write a batch: how many of its documents are at the leg's target after it,
        the ones skipped (changed meanwhile, twice), and the error to stop on, if any.

        A write that matched nothing was either changed meanwhile, or (after a
        fault) applied by an attempt whose answer was lost: the documents are
        read again, and those at the target are done.

        """
        result = await self._send(leg, writes)
        refused = self._refused(leg, writes, result.refused)
        if result.matched + len(result.refused) == len(writes):
            return result.matched, {}, refused
        # Changed meanwhile: read again once (by _id alone, which every
        # server finds by its index), and write if unchanged since.
        ids = [w.doc["_id"] for i, w in enumerate(writes) if i not in result.refused]
        found = await self._read_again(leg, ids)
        again: list[PendingWrite] = []
        done = 0
        skipped = {id_key(i): i for i in ids}
        for doc in found:
            plan, write = await self.transform(leg, doc)
            if write is not None:
                again.append(write)
            elif plan.kind == "current":
                # Ours (this write, or an attempt before it), or newer code's
                # meanwhile: done, not skipped.
                done += 1
            elif plan.kind in ("newer", "beyond"):
                continue
            skipped.pop(id_key(doc["_id"]), None)
        skipped.update({id_key(w.doc["_id"]): w.doc["_id"] for w in again})
        if not again:
            return done, skipped, refused
        second = await self._send(leg, again)
        refused = refused or self._refused(leg, again, second.refused)
        for i, w in enumerate(again):
            if i in second.refused:
                skipped.pop(id_key(w.doc["_id"]), None)
        if second.matched + len(second.refused) == len(again):
            for w in again:
                skipped.pop(id_key(w.doc["_id"]), None)
            return done + second.matched, skipped, refused
        # Changed a second time, or written by an attempt whose answer was
        # lost: which, the server says.
        ids = [w.doc["_id"] for i, w in enumerate(again) if i not in second.refused]
        for doc in await self._read_again(leg, ids):
            if leg.plan_for(doc.get(VERSION_KEY)).kind == "current":
                done += 1
                skipped.pop(id_key(doc["_id"]), None)
        return done, skipped, refused

    async def _send(self, leg: Leg, writes: list[PendingWrite]) -> Any:
        """One bulk write of conditional updates, the lease checked on the server first."""
        await self.lease.verify()
        return await self.retry.call(
            f"writing to {leg.collection.name}",
            lambda: bulk_update(leg.collection, [w.write for w in writes]),
        )

    async def _read_again(self, leg: Leg, ids: list[Any]) -> list[Document]:
        return await self.retry.call(
            f"reading {leg.collection.name} again",
            lambda: to_list(leg.collection.find({"_id": {"$in": ids}})),
        )

    async def _count_stopped(
        self, leg: Leg, writes: list[PendingWrite], stopped: BaseException
    ) -> None:
        """Count, in a batch whose writes stopped the run, the documents at the target.

        Read once and briefly. A document not there whose write's answer was
        lost (a connection dropped or timed out) is unconfirmed: the server
        may still apply it; so is every document of the batch if the server
        does not answer the read.

        """
        ids = [w.doc["_id"] for w in writes]
        lost = answer_lost(stopped)
        try:
            found = await asyncio.wait_for(
                to_list(leg.collection.find({"_id": {"$in": ids}}, {VERSION_KEY: 1})),
                RECOUNT_WAIT,
            )
        except (PyMongoError, TimeoutError):
            leg.report.unconfirmed += len(ids)
            return
        done = sum(1 for d in found if leg.plan_for(d.get(VERSION_KEY)).kind == "current")
        leg.report.migrated += done
        if lost:
            leg.report.unconfirmed += len(ids) - done

    # ------------------------------------------------------------------
    # Failures
    # ------------------------------------------------------------------
    def record_failure(self, report: ModelReport, doc_id: Any, exc: BaseException) -> None:
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
        self, leg: Leg, writes: list[PendingWrite], refused: dict[int, str]
    ) -> StepResultError | None:
        """Fail the documents whose write the server refused; the error to stop on, if any."""
        first: StepResultError | None = None
        for index, reason in sorted(refused.items()):
            write = writes[index]
            problem = f"gave a document that cannot be written: the server refused it: {reason}"
            error = result_error(leg, write.doc, write.plan, problem)
            if self.options.continue_on_error:
                self.record_failure(leg.report, write.doc.get("_id"), error)
            elif first is None:
                first = error
        return first

    async def record_unreached(self, leg: Leg, raws: list[Any]) -> None:
        """Record, as failed, the documents whose version is an array holding the target.

        The streams find documents with ``{$ne: target}``, which leaves those
        out; with ``continue_on_error`` the survey did not refuse them either.

        """
        target = str(leg.target)
        for raw in raws:
            plan = leg.plan_for(raw)
            if type(raw) is not list or target not in raw or plan.error is None:
                continue
            query = {**leg.scope(), VERSION_KEY: {"$eq": raw}}
            found = await self.retry.call(
                f"reading {leg.collection.name}", partial(_find, leg.collection, query)
            )
            for doc in found:
                if type(doc.get(VERSION_KEY)) is list:
                    self.record_failure(leg.report, doc.get("_id"), plan.error)

    # ------------------------------------------------------------------
    # Dry run
    # ------------------------------------------------------------------
    async def sample(self, leg: Leg, raws: list[Any]) -> None:
        """Dry run: run the chain on the first documents it takes (of those stored at
        the survey's values `raws` it does not leave alone) and restore each result.

        Downgrading, the code's model restores the result by taking it back
        up through the chain (the lazy path, writing nothing back): the older
        release's models are not at hand. The sample checks that each
        document downgrades without error through the steps' Python forms
        (the server steps' too), gives a document that can be written, and
        that what it gives upgrades again and restores with the code's model.

        """
        if not self.options.sample:
            return
        taken = [raw for raw in raws if leg.plan_for(raw).kind not in LEFT_ALONE]
        query = {**leg.scope(), VERSION_KEY: {"$in": taken}}
        sample = await self.retry.call(
            f"reading {leg.collection.name}",
            lambda: to_list(
                leg.collection.find(query, sort=[("_id", 1)]).limit(self.options.sample)
            ),
        )
        for doc in sample:
            entry: dict[str, Any] = {
                "_id": doc.get("_id"),
                "from": version_name(doc.get(VERSION_KEY)),
            }
            try:
                plan, write = await self.transform(leg, doc)
                if plan.kind in ("current", "newer", "beyond"):
                    continue
                if write is not None:
                    with restore_check() as problems:
                        await leg.cls.__new__(leg.cls).__restorestate__(write.new)
                    if problems:
                        raise MigrateError(
                            "; ".join(problems), model=leg.cls.__model__, doc_id=doc.get("_id")
                        )
                entry["ok"] = True
            except Exception as exc:
                entry.update(ok=False, error=self.redact(shorten(str(exc))))
            leg.report.samples.append(entry)


# ----------------------------------------------------------------------
# What the runner's reads take
# ----------------------------------------------------------------------
def behind(leg: Leg, end: Version, raws: list[Any]) -> tuple[Leg, dict[str, Any], int]:
    """The read of the documents on the way to `end` (the version a server step starts
    from): a leg to `end`, counted apart, its query and its total.

    The others wait for that step. What these documents do is not counted in
    `leg`'s report: the server step, or the last read, counts them (a document
    whose chain fails here is left for the last read, which records it with
    ``continue_on_error``).

    """
    down = leg.direction.down

    def before(version: Version | None) -> bool:
        return version is not None and (version > end if down else version < end)

    # Stored values before `end`, and the versions steps arrive at before
    # it (server steps store those in canonical form).
    wanted: list[Any] = [r for r in raws if before(stored_or_none(r))]
    for s in leg.graph.steps:
        arrive = s.from_key if down else s.to_key
        if before(arrive):
            wanted.append(str(arrive))
    total = counted(
        leg, {k: n for k, n in leg.report.by_version.items() if before(stored_or_none(k))}
    )
    counts = ModelReport(leg.report.model, str(end), leg.report.direction)
    return leg.toward(end, counts), {**leg.scope(), VERSION_KEY: {"$in": wanted}}, total


async def rest(leg: Leg, raws: list[Any]) -> tuple[dict[str, Any], int, bool]:
    """The read of every document still not at the target: its query, its total, and
    whether the toolkit's index serves it.

    With the index, the documents at the stored values the survey found off
    the target (an array holding the target too), and at the versions steps
    store on the way, are read through it; without, every document not at
    the target.

    """
    wanted: Any = {"$ne": str(leg.target)}
    if await has_version_index(leg.collection):
        off = [raw for raw in raws if leg.plan_for(raw).kind != "current"]
        between = [
            str(v) for s in leg.graph.steps for v in (s.from_key, s.to_key) if v != leg.target
        ]
        forms = {version_key(v): v for v in off + between}
        wanted = {"$in": list(forms.values())}
    total = max(counted(leg, leg.report.by_version) - leg.report.migrated, 0)
    return {**leg.scope(), VERSION_KEY: wanted}, total, "$in" in wanted


#: The plans of documents a run reads but leaves as they are: its progress
#: does not count them.
LEFT_ALONE = ("current", "newer", "beyond")


def migrating(leg: Leg, raws: Iterable[Any]) -> int:
    """How many of the stored ``__version__`` values `raws` (one a document) the leg
    migrates, or fails to: not those at the target, newer than the code, or beyond
    the target, which it leaves alone."""
    return sum(1 for raw in raws if leg.plan_for(raw).kind not in LEFT_ALONE)


def counted(leg: Leg, by_version: Mapping[str, int]) -> int:
    """Of the documents `by_version` counts (by version name, as the survey does),
    those the leg migrates or fails to (see `migrating`): a progress's total."""
    return sum(n for name, n in by_version.items() if leg.plan_for(name).kind not in LEFT_ALONE)


def result_error(leg: Leg, doc: Document, plan: Plan, problem: str) -> StepResultError:
    """A document whose chain ran, but whose result cannot be written (`problem`
    says why, after the step's name)."""
    last = plan.steps[-1]
    end = last.from_version if leg.direction.down else last.to_version
    return StepResultError(
        problem,
        model=leg.report.model,
        doc_id=doc.get("_id"),
        from_version=version_name(doc.get(VERSION_KEY)),
        to_version=end,
        source=last.source,
    )


def id_key(doc_id: Any) -> bytes:
    """An ``_id`` as a key: its BSON, which tells ``1``, ``1.0`` and ``True`` apart."""
    return bson.encode({"_id": doc_id})


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


async def _find(collection: Any, query: dict[str, Any]) -> list[Document]:
    """Every document `query` finds: a new cursor each time it is called."""
    return await to_list(collection.find(query))
