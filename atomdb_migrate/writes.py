"""Conditional writes: change a stored document only if it is as it was read.

Both the lazy path (write-back) and the eager runner turn an upgraded
document into an update of exactly the top-level fields the steps changed
(`document_diff`), filtered on the fields as they were read (`guard`). A
document another process changed in between no longer matches and is left
alone; a field another process added meanwhile is kept, as the update does
not touch it.

Values are compared as BSON stores them, type and value, all the way down
(`same_value`): Python holds ``3 == 3.0 == Int64(3)`` and ``1 == True``, but
a step that turns the double ``3.0`` into the int ``3`` changed the stored
document, and that change must be written.

"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson.binary import Binary
from bson.datetime_ms import _datetime_to_millis
from bson.errors import InvalidDocument
from bson.int64 import Int64

from .documents import Document
from .exceptions import shorten
from .versions import VERSION_KEY

#: A conditional update: its filter and its update (a document, or a pipeline).
Write = tuple[dict[str, Any], Any]

#: The largest document MongoDB stores.
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024

#: What a single write command may carry beyond that (MongoDB's allowance).
COMMAND_OVERHEAD = 16 * 1024

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# ----------------------------------------------------------------------
# Values as BSON stores them
# ----------------------------------------------------------------------
def bson_kind(value: Any) -> Any:
    """The BSON type a Python value is stored as (a name, or a type for the rest)."""
    kind = type(value)
    if kind is str:
        return "string"
    if kind is bool:
        return "bool"
    if kind is Int64:
        return "long"
    if kind is int or isinstance(value, int):
        return "int" if _INT32_MIN <= value <= _INT32_MAX else "long"
    if kind is float:
        return "double"
    if kind is dict or kind is list or kind is tuple:
        return "object" if kind is dict else "array"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Binary):
        return ("binary", value.subtype)
    if isinstance(value, bytes):
        return ("binary", 0)
    if isinstance(value, datetime.datetime):
        return "date"
    return kind


def same_value(a: Any, b: Any) -> bool:
    """Whether two values are stored as the same BSON: type and value, all the way down.

    ``3`` and ``3.0``, ``1`` and ``True``, ``1`` and ``Int64(1)`` differ;
    so do ``0.0`` and ``-0.0``, and documents with the same fields in
    another order. NaN is the same as NaN.

    """
    if a is b:
        return True
    kind = bson_kind(a)
    if kind != bson_kind(b):
        return False
    if kind == "object":
        if len(a) != len(b):
            return False
        return all(
            ka == kb and same_value(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if kind == "array":
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if kind == "double":
        return bool(struct.pack("<d", a) == struct.pack("<d", b))
    if kind == "date":
        try:
            return _datetime_to_millis(a) == _datetime_to_millis(b)
        except (OverflowError, ValueError):
            return bool(a == b)
    try:
        return bool(a == b)
    except Exception:  # values that cannot be compared are not the same
        return False


def same_document(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two documents are stored as the same BSON (see `same_value`)."""
    return same_value(a, b)


# ----------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------
def needs_expression(key: str) -> bool:
    """Whether a top-level field name cannot be used as a path in a query or a $set.

    MongoDB reads a ``.`` in a path as nesting and a leading ``$`` as an
    operator; such names are reached with ``$getField`` and ``$setField``.

    """
    return not key or "." in key or key.startswith("$")


def document_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Any:
    """The update that turns the stored document `old` into `new`; empty if none.

    Normally ``$set`` and ``$unset`` of the top-level fields that differ (as
    BSON stores them). Where such a field's name holds a ``.`` or starts
    with ``$``, an update pipeline that sets them with ``$setField``.

    """
    changed = {
        k: v for k, v in new.items() if k != "_id" and (k not in old or not same_value(old[k], v))
    }
    removed = [k for k in old if k not in new]
    if any(needs_expression(k) for k in (*changed, *removed)):
        root: Any = "$$ROOT"
        for key, value in changed.items():
            root = _set_field(key, root, {"$literal": value})
        for key in removed:
            root = _set_field(key, root, "$$REMOVE")
        return [{"$replaceWith": root}]
    update: dict[str, Any] = {}
    if changed:
        update["$set"] = changed
    if removed:
        update["$unset"] = dict.fromkeys(removed, "")
    return update


def _set_field(name: str, base: Any, value: Any) -> dict[str, Any]:
    return {"$setField": {"field": {"$literal": name}, "input": base, "value": value}}


# ----------------------------------------------------------------------
# The filter
# ----------------------------------------------------------------------
def guard(
    old: Mapping[str, Any], fields: Iterable[str] | None = None, *, complete: bool = False
) -> dict[str, Any]:
    """A filter matching the stored document only while it is as `old` was read.

    Parameters
    ----------
    old: dict
        The document as read.
    fields: iterable of str, optional
        The top-level fields the result depends on (what the steps looked
        at: see `atomdb_migrate.documents.StepDocument`). Each must still
        hold its value as read, or still be missing. None: every field of
        `old`.
    complete: bool
        With ``fields=None``, also require that the stored document has no
        other field: `old` may come from a projection, and the steps looked
        at all of it.

    The ``_id`` and the version as read are always matched; a document read
    without a version matches only while it has none.

    """
    names = list(old) if fields is None else [*fields]
    query: dict[str, Any] = {"_id": old["_id"]}
    expressions: list[Any] = []
    for key in dict.fromkeys([*names, VERSION_KEY]):
        if key == "_id":
            continue
        present = key in old
        value = old[key] if present else None
        if needs_expression(key):
            got = {"$getField": {"field": {"$literal": key}, "input": "$$ROOT"}}
            if present:
                expressions.append({"$eq": [got, {"$literal": value}]})
                expressions.append({"$ne": [{"$type": got}, "missing"]})
            else:
                expressions.append({"$eq": [{"$type": got}, "missing"]})
        elif not present:
            query[key] = {"$exists": False}
        else:
            query[key] = {"$eq": value} if isinstance(value, Mapping) else value
    if fields is None and complete:
        count = {"$size": {"$objectToArray": "$$ROOT"}}
        expressions.append({"$eq": [count, len(old)]})
    if expressions:
        query["$expr"] = expressions[0] if len(expressions) == 1 else {"$and": expressions}
    return query


def unchanged_filter(old: Document) -> dict[str, Any]:
    """A filter matching the stored document only if it still holds all of `old`'s fields."""
    return guard(old)


# ----------------------------------------------------------------------
# What cannot be written
# ----------------------------------------------------------------------
def write_problem(new: Mapping[str, Any], query: dict[str, Any], update: Any) -> str | None:
    """Why a conditional update cannot be sent, or None when it can.

    A step's result may hold values BSON cannot encode (a set, an object),
    be larger than MongoDB's 16 MB, or make an update that, with its filter,
    goes over what one command may carry.

    """
    try:
        size = len(bson.encode(new))
        if size > MAX_DOCUMENT_SIZE:
            return f"the result is {_mb(size)}, over MongoDB's 16 MB limit for a document"
        command = len(bson.encode({"q": query, "u": update if isinstance(update, dict) else {}}))
        if not isinstance(update, dict):
            command += len(bson.encode({"u": update}))
    except (InvalidDocument, TypeError, ValueError, OverflowError) as exc:
        return f"the result cannot be stored as BSON: {shorten(str(exc))}"
    if command > MAX_DOCUMENT_SIZE + COMMAND_OVERHEAD:
        return (
            f"the conditional update is {_mb(command)} (its filter holds the fields as read), "
            "over MongoDB's 16 MB limit for a command"
        )
    return None


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
