"""Conditional writes: change a stored document only if it is as it was read.

Both the lazy path (write-back) and the eager runner turn an upgraded
document into an update of exactly the top-level fields the steps changed,
filtered on every field of the document as it was read. A document another
process changed in between (any field, by ``save()`` or by a partial update)
no longer matches and is left alone; a field another process added meanwhile
is kept, as the update does not touch it.

"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pymongo import UpdateOne

from .versions import VERSION_KEY, Document

log = logging.getLogger("atomdb_migrate")

#: A conditional update: its filter and its update document.
Write = tuple[dict[str, Any], dict[str, Any]]


def unchanged_filter(old: Document) -> dict[str, Any]:
    """A filter matching the stored document only if it still holds `old`'s fields.

    A document read without ``__version__`` matches only while it has none.
    Embedded documents are compared with ``$eq``, so keys starting with ``$``
    inside them are never read as operators.

    """
    query: dict[str, Any] = {k: {"$eq": v} if isinstance(v, dict) else v for k, v in old.items()}
    if VERSION_KEY not in old:
        query[VERSION_KEY] = {"$exists": False}
    return query


def document_diff(old: Document, new: Document) -> dict[str, Any]:
    """The update (``$set`` and ``$unset`` of top-level keys) that turns old into new."""
    changed = {k: v for k, v in new.items() if k != "_id" and (k not in old or old[k] != v)}
    removed = {k: "" for k in old if k not in new}
    update: dict[str, Any] = {}
    if changed:
        update["$set"] = changed
    if removed:
        update["$unset"] = removed
    return update


def is_mongomock(collection: Any) -> bool:
    """Whether a collection is mongomock's (mongomock-motor dresses it as Motor's)."""
    return any(
        kind.__module__.split(".")[0] in ("mongomock", "mongomock_motor")
        for kind in type(collection).__mro__
    )


async def bulk_update(collection: Any, ops: list[Write]) -> int:
    """One unordered bulk write; how many documents matched.

    mongomock (the in-memory backend) cannot run PyMongo >= 4.11's bulk
    writes, so there each update is sent on its own, with the same filters.

    """
    if not is_mongomock(collection):
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


async def to_list(cursor: Any) -> list[Any]:
    return list(await cursor.to_list(length=None))


async def batches(cursor: Any, size: int) -> AsyncIterator[list[Document]]:
    batch: list[Document] = []
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
