"""Conditional writes: change a stored document only if it is as it was read.

Both the lazy path (write-back) and the eager runner turn an upgraded
document into an update of exactly the top-level fields the steps changed,
filtered on every field of the document as it was read. A document another
process changed in between (any field, by ``save()`` or by a partial update)
no longer matches and is left alone; a field another process added meanwhile
is kept, as the update does not touch it.

"""

from __future__ import annotations

from typing import Any

from .versions import VERSION_KEY, Document


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
