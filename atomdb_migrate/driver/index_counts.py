"""The stored versions counted on the toolkit's index, where the server can.

`count_versions` groups every document of a collection by its
``__version__`` (one scan). Where the collection has the toolkit's index on
``{__version__: 1, _id: 1}`` and the server answers a count on it from the
index alone (MongoDB's ``COUNT_SCAN``), `indexed_version_counts` counts
instead each known form of a version (`core.versions.version_forms`, which
no two match the same document) with one count, and groups by a read of
the index the few documents at any other value (``$nin`` of the forms: a
version written by hand, a newer one, a document without a version). The
sum is every document, each counted once.

The index is used only while it serves exactly: present, finished (a
count's plan reads it), and not multikey (an array in ``__version__`` would
match a form's equality and be counted twice). Otherwise, or on a server
whose counts fetch every document (SecantusDB's plan is ``FETCH`` over
``IXSCAN``, slower than the scan), the callers scan. A run that drops the
index for a bulk rewrite (`engine.version_index`) leaves the readers
scanning meanwhile: the index is absent, or its plan is not yet the count's.

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.errors import PyMongoError

from ..core.storage import VERSION_INDEX, VERSION_INDEX_KEYS, VERSION_KEY
from ..core.versions import version_key
from .mongo import aggregate, has_version_index, index_specs, is_mongomock

__all__ = ["counts_on_index", "drop_version_index", "indexed_version_counts"]

#: A stored value and its BSON type: each form counted apart (as `count_versions` does).
_BY_FORM = {"v": f"${VERSION_KEY}", "t": {"$type": f"${VERSION_KEY}"}}


def counts_on_index(plan: Any) -> bool:
    """Whether a count's explained plan reads only the toolkit's index, exactly:
    a ``COUNT_SCAN`` of an index that is not multikey."""
    text = repr(plan)
    return "COUNT_SCAN" in text and "'isMultiKey': True" not in text


async def _explain_count(collection: Any, form: Any) -> Any:
    """The winning plan of counting the documents at `form` (None: no answer)."""
    command = {"count": collection.name, "query": {VERSION_KEY: form}}
    try:
        found = await collection.database.command("explain", command, verbosity="queryPlanner")
    except PyMongoError:
        return None
    return found.get("queryPlanner", {}).get("winningPlan")


async def indexed_version_counts(
    collection: Any, forms: Sequence[Any]
) -> list[tuple[Any, int]] | None:
    """Documents per stored ``__version__`` value, counted on the index: one count per
    form in `forms` (each a form of `version_forms`), one grouping of the rest.

    Returns None (the caller scans) when the index does not serve the count
    (see the module's docstring). A numeric form counts every number equal
    to it (``2``, ``2.0``, ``Int64(2)``), under the form given.

    """
    if not forms or is_mongomock(collection) or not await has_version_index(collection):
        return None
    if not counts_on_index(await _explain_count(collection, forms[0])):
        return None
    rows: list[tuple[Any, int]] = []
    for form in forms:
        n = await collection.count_documents({VERSION_KEY: form})
        if n:
            rows.append((form, n))
    counts: dict[Any, list[Any]] = {}
    rest: list[dict[str, Any]] = [
        {"$match": {VERSION_KEY: {"$nin": list(forms)}}},
        {"$group": {"_id": _BY_FORM, "n": {"$sum": 1}}},
    ]
    for row in await aggregate(collection, rest):
        raw = row["_id"].get("v")
        counts.setdefault(version_key(raw), [raw, 0])[1] += row["n"]
    return rows + [(raw, n) for raw, n in counts.values()]


def _is_ours(spec: dict[str, Any]) -> bool:
    """Whether an index specification is the toolkit's: its name and its keys."""
    return (
        spec.get("name") == VERSION_INDEX
        and list(spec.get("key", {}).items()) == VERSION_INDEX_KEYS
    )


async def has_own_version_index(collection: Any) -> bool:
    """Whether the toolkit's own index (`VERSION_INDEX`, on its keys) is there: the
    one `drop_version_index` drops."""
    return any(_is_ours(s) for s in await index_specs(collection))


async def drop_version_index(collection: Any) -> bool:
    """Drop the toolkit's index (by its name, `VERSION_INDEX`, and its keys); return
    whether it was there. An index on the same keys under another name is
    the user's: it stays."""
    if not await has_own_version_index(collection):
        return False
    await collection.drop_index(VERSION_INDEX)
    return True
