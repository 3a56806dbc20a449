"""Saving a versioned object: a replace that never writes over a newer document.

atom-db's ``save()`` replaces the whole document unconditionally; a
`VersionedModel` saves through `guarded_replace`, which matches the stored
document only at a version the code knows to be no newer than its own.

"""

from typing import Any

from pymongo.errors import DuplicateKeyError

from ..core.documents import Document
from ..core.storage import VERSION_KEY
from ..exceptions import ConflictError, NewerDocumentError
from ..steps.registry import MigrationRegistry
from ..steps.versions import stored_version

#: How many times `save()` re-reads a document whose version it did not expect.
SAVE_ATTEMPTS = 5


def _known_versions(cls: Any) -> list[str]:
    """The version strings not newer than the model's that its steps know."""
    head = cls.__parsed_version__
    graph = MigrationRegistry.instance().graph(cls)
    return [str(v) for v in graph.known_versions(head) if v <= head]


def duplicate_id(exc: DuplicateKeyError) -> bool:
    """Whether a duplicate key error is of the ``_id`` (a document stored with it),
    not of another unique index (mongomock names no key for the ``_id``)."""
    pattern = (exc.details or {}).get("keyPattern")
    return pattern is None or list(pattern) == ["_id"]


def stored_filter(state: Document) -> dict[str, Any]:
    """A filter matching a document's ``_id`` and its version as stored."""
    if VERSION_KEY in state:
        return {"_id": state["_id"], VERSION_KEY: state[VERSION_KEY]}
    return {"_id": state["_id"], VERSION_KEY: {"$exists": False}}


async def guarded_replace(cls: Any, state: Document) -> Any:
    """Replace (or insert) a document unless the stored one is newer than the code.

    The common case is one write: a replace that matches the ``_id`` and any
    version the model knows to be no newer than its own, or no version. When
    that finds a document at another version, the stored version is read
    and compared, and the replace is retried on exactly that version.

    Raises
    ------
    NewerDocumentError
        If the stored document is newer than the model's version.
    ConflictError
        If the stored document kept changing between reads and writes.
    DuplicateKeyError
        If the document breaks a unique index other than the ``_id``'s.

    """
    db = cls.objects
    doc_id = state["_id"]
    known = {
        "_id": doc_id,
        "$or": [{VERSION_KEY: {"$in": _known_versions(cls)}}, {VERSION_KEY: {"$exists": False}}],
    }
    try:
        return await db.replace_one(known, state, upsert=True)
    except DuplicateKeyError as exc:
        if not duplicate_id(exc):
            raise  # another unique index: not for a retry
        # stored at a version not in the list: look at it
    for _ in range(SAVE_ATTEMPTS):
        stored = await db.find_one({"_id": doc_id}, {VERSION_KEY: 1})
        if stored is None:
            try:
                return await db.replace_one(known, state, upsert=True)
            except DuplicateKeyError as exc:
                if not duplicate_id(exc):
                    raise
                continue  # inserted meanwhile
        version = stored_version(stored.get(VERSION_KEY), model=cls.__model__, doc_id=doc_id)
        if version > cls.__parsed_version__:
            raise NewerDocumentError(
                cls.__model__, doc_id, str(version), cls.__version__, action="save over it"
            )
        result = await db.replace_one(stored_filter(stored), state)
        if result.matched_count:
            return result
    raise ConflictError(cls.__model__, doc_id, SAVE_ATTEMPTS)
