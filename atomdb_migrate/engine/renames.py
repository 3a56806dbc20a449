"""Moving a model's data to its new name (``ops.rename_model``), eagerly.

atom-db names a model's collection after its ``__model__`` (module path
plus class name) and writes ``__model__`` into every reference it stores, so
a class moved to another module strands its data. For a step with
``rename_model(old, new)``, ``atomdb-migrate upgrade``:

1. renames the collection ``old`` to ``new``; if both exist (the new code
   already saved documents under the new name) it moves the documents the
   new collection lacks, by ``_id``, and drops the old one: a document saved
   by the new code wins, and one it deleted (from both names, see
   `atomdb_migrate.model.VersionedModel.delete`) is not brought back, even
   when deleted while the merge moves it;
2. rewrites ``__model__: old`` to ``new`` in the references stored in every
   collection of the database, at any depth and inside lists, with updates
   guarded on the fields they change, so a concurrent write is never lost.

Both are safe to repeat: a run killed half-way is resumed by the next one.
Until then, `atomdb_migrate.model` reads the old collection for references
it does not find in the new one, and the old name restores as the new model.

"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pymongo.errors import BulkWriteError

from ..core.documents import Document, copy_document
from ..core.storage import VERSION_KEY
from ..core.writes import Write, guarded_write, unchanged_filter
from ..driver.mongo import batches, bulk_update, collection_names, exact_filters
from ..exceptions import MigrateError, short_repr
from ..operations.rename_model import rename_references
from ..steps.versions import stored_version, version_key

if TYPE_CHECKING:
    from .lock import LeaseLock

log = logging.getLogger("atomdb_migrate")

#: The error code of a duplicate key.
DUPLICATE_KEY = 11000


#: What became of a former name's collection: nothing to move ("none"),
#: "renamed", "merged", or, in a dry run, what would be ("rename", "merge").
CollectionMove = Literal["none", "renamed", "merged", "rename", "merge"]


@dataclass
class RenameReport:
    """What renaming one model's data did."""

    #: The former and the new ``__model__`` name.
    old: str
    new: str
    #: "renamed", "merged", or "none" (no collection under the old name).
    collection: CollectionMove = "none"
    #: Documents moved from the old collection when both existed.
    moved: int = 0
    #: Of the documents both collections held: copies in the new collection
    #: replaced by the old one's at a higher version, and copies in the old
    #: collection dropped because the new one's is at the same or a higher
    #: version.
    replaced: int = 0
    discarded: int = 0
    #: Documents whose references were rewritten, in any collection.
    references: int = 0
    #: Documents the merge inserted and has not yet checked the old collection
    #: still holds (see `rename_collection`): kept across a call sent again
    #: after a transient fault, which would no longer find them there.
    unchecked: list[Document] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, Any]:
        return {
            "from": self.old,
            "collection": self.collection,
            "moved": self.moved,
            "replaced": self.replaced,
            "discarded": self.discarded,
            "references": self.references,
        }


async def rename_collection(
    database: Any, report: RenameReport, *, batch_size: int = 1000, lock: LeaseLock | None = None
) -> None:
    """Rename (or merge) the collection of the old name into the new one."""
    names = await collection_names(database)
    if report.old not in names:
        return
    await _check(lock)
    if report.new not in names:
        await database[report.old].rename(report.new)
        report.collection = "renamed"
        log.info("renamed collection %s to %s", report.old, report.new)
        return
    source, target = database[report.old], database[report.new]
    if report.unchecked:  # a call sent again: check what the last one may have inserted
        await _undo_deleted(source, target, report.unchecked)
        report.unchecked = []
    async for batch in batches(source.find({}, sort=[("_id", 1)]), batch_size):
        await _check(lock)
        report.unchecked = batch  # an insert that fails may have inserted some
        try:
            await target.insert_many(batch, ordered=False)
            inserted = batch
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            taken = {e["index"] for e in errors}
            inserted = [d for i, d in enumerate(batch) if i not in taken]
            await _keep_newer(target, [batch[i] for i in sorted(taken)], report)
        report.moved += len(inserted)
        report.moved -= await _undo_deleted(source, target, inserted)
        report.unchecked = []
    await database.drop_collection(report.old)
    report.collection = "merged"
    log.info(
        "merged collection %s into %s (%d documents moved, %d replaced by a newer copy, "
        "%d older copies dropped)",
        report.old,
        report.new,
        report.moved,
        report.replaced,
        report.discarded,
    )


async def _undo_deleted(source: Any, target: Any, inserted: list[Document]) -> int:
    """Take out of `target` the copies just inserted from `source` that the new code
    deleted meanwhile (`VersionedModel.delete` removes the old copy first); return
    how many.

    Between the merge's read of a batch and its insert, the new code may have
    read a document under the former name and deleted it: the insert would
    bring it back. A copy is taken out only as it was inserted, so a save by
    the new code since then is kept. (A run killed between the insert and
    this check leaves such a document: the next run no longer finds it under
    the former name.)

    """
    if not inserted:
        return 0
    ids = [d["_id"] for d in inserted]
    still = {version_key(d["_id"]) async for d in source.find({"_id": {"$in": ids}}, {"_id": 1})}
    gone = [d for d in inserted if version_key(d["_id"]) not in still]
    undone = 0
    for doc in gone:
        exact = unchanged_filter(doc, complete=True, exact=exact_filters(target))
        undone += int((await target.delete_one(exact)).deleted_count)
        log.info(
            "%s _id=%s: deleted under %s while the merge moved it: not brought back",
            target.name,
            short_repr(doc["_id"]),
            source.name,
        )
    return undone


def _version_of(doc: Document) -> tuple[Any, ...]:
    """A stored version's rank: unreadable versions rank below every readable one."""
    try:
        return (1, stored_version(doc.get(VERSION_KEY)))
    except MigrateError:
        return (0,)


async def _keep_newer(target: Any, copies: list[Document], report: RenameReport) -> None:
    """Of two copies of a document, keep the one at the higher version.

    `copies` are the old collection's documents the new collection also
    holds. An old copy at a higher version (the model moved away and back,
    and the later code saved it under the former name) replaces the new
    one, unless that changed meanwhile; at the same version, the new
    collection's copy (saved under the model's name now) is kept.

    """
    if not copies:
        return
    stored = {d["_id"]: d async for d in target.find({"_id": {"$in": [c["_id"] for c in copies]}})}
    for copy in copies:
        current = stored.get(copy["_id"])
        if current is None or _version_of(current) >= _version_of(copy):
            report.discarded += 1
            log.warning(
                "%s _id=%s: kept the copy in %s at version %s, dropped the one in %s at %s",
                report.new,
                short_repr(copy["_id"]),
                report.new,
                short_repr(current.get(VERSION_KEY)) if current else "?",
                report.old,
                short_repr(copy.get(VERSION_KEY)),
            )
            continue
        held = (
            {VERSION_KEY: current[VERSION_KEY]}
            if VERSION_KEY in current
            else {VERSION_KEY: {"$exists": False}}
        )
        done = await target.replace_one({"_id": copy["_id"], **held}, copy)
        if done.matched_count:
            report.replaced += 1
        else:
            report.discarded += 1


async def referring(
    database: Any, old: str, new: str, *, skip: tuple[str, ...] = (), batch_size: int = 1000
) -> AsyncIterator[tuple[str, Document, Document]]:
    """The documents that refer to the model under its former name `old`.

    Every document of every collection but `skip` (not the views) is read:
    references may sit at any depth. Yields the collection's name, the
    document as read, and the document with its references renamed to `new`.
    In the model's own collection, a document's own ``__model__`` is the
    step's to change (with the version): only the references it holds count.

    """
    for name in sorted(await collection_names(database)):
        if name in skip:
            continue
        own = name in (new, old)
        async for batch in batches(database[name].find({}), batch_size):
            for doc in batch:
                changed = copy_document(doc)
                if rename_references(changed, old, new, top=not own):
                    yield name, doc, changed


async def count_references(database: Any, old: str, new: str, *, skip: tuple[str, ...] = ()) -> int:
    """How many documents still refer to the model under its former name `old`."""
    return sum([1 async for _ in referring(database, old, new, skip=skip)])


async def rewrite_references(
    database: Any,
    report: RenameReport,
    *,
    skip: tuple[str, ...] = (),
    batch_size: int = 1000,
    lock: LeaseLock | None = None,
) -> None:
    """Rewrite the references to the old name in every collection but `skip`.

    Each document found by `referring` gets an update of the top-level fields
    that hold references, matched on their values as read.

    """
    writes: dict[str, list[Write]] = {}
    async for name, doc, changed in referring(
        database, report.old, report.new, skip=skip, batch_size=batch_size
    ):
        pending = writes.setdefault(name, [])
        try:
            expressions = exact_filters(database)
            pending.append(guarded_write(doc, changed, (), expressions=expressions))
        except ValueError as exc:
            log.warning("%s: references of _id=%r not rewritten: %s", name, doc.get("_id"), exc)
            continue
        if len(pending) >= batch_size:
            report.references += await _write(database[name], pending, lock)
            writes[name] = []
    for name, pending in writes.items():
        if pending:
            report.references += await _write(database[name], pending, lock)


async def _check(lock: LeaseLock | None) -> None:
    """Before a write: the lease is still ours, asked of the server (`LeaseLock.verify`),
    so that a lock cleared with ``unlock --force`` and taken by another runner stops
    the rename before its next write, as it stops the runner's batches."""
    if lock is None:
        return
    verify = getattr(lock, "verify", None)
    if verify is None:  # a lock that only tells from its own clock
        lock.check()
        return
    await verify()


async def _write(collection: Any, writes: list[Write], lock: LeaseLock | None) -> int:
    await _check(lock)
    result = await bulk_update(collection, writes)
    matched = result.matched
    if result.refused:
        log.warning(
            "%s: the server refused to rewrite the references of %d documents: %s",
            collection.name,
            len(result.refused),
            next(iter(result.refused.values())),
        )
    if matched + len(result.refused) < len(writes):
        log.info(
            "%s: %d documents changed while their references were rewritten; "
            "their references keep the old name, which still restores as the new model",
            collection.name,
            len(writes) - matched,
        )
    return matched
