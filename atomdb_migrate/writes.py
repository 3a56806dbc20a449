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
from bson.decimal128 import Decimal128
from bson.errors import InvalidDocument
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from .documents import Document
from .exceptions import short_repr, shorten
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
def needs_expression(key: Any) -> bool:
    """Whether a top-level field name cannot be used as a path in a query or a $set.

    MongoDB reads a ``.`` in a path as nesting and a leading ``$`` as an
    operator; such names are reached with ``$getField`` and ``$setField``.

    """
    return not isinstance(key, str) or not key or "." in key or key.startswith("$")


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
#: The ``$type`` name of each BSON type `bson_kind` names.
TYPE_NAMES: dict[Any, str] = {
    "string": "string",
    "bool": "bool",
    "int": "int",
    "long": "long",
    "double": "double",
    "object": "object",
    "array": "array",
    "date": "date",
    type(None): "null",
    ObjectId: "objectId",
    Decimal128: "decimal",
    Regex: "regex",
    Timestamp: "timestamp",
}

#: Values larger than this, encoded, are matched by type and size when a
#: filter holding them whole would not fit in one command.
LARGE_VALUE = 64 * 1024

#: The stored document's top-level names, as an aggregation expression.
_NAMES = {"$map": {"input": {"$objectToArray": "$$ROOT"}, "in": "$$this.k"}}


def guard(
    old: Mapping[str, Any],
    fields: Iterable[Any] | None = None,
    *,
    complete: bool = False,
    large: bool = False,
    exact: bool = True,
) -> dict[str, Any]:
    """A filter matching the stored document only while it is as `old` was read.

    Each field is matched exactly: its value and its BSON type, an array as
    that array (not as any array holding it), null as null (not as a missing
    field), a missing field as missing.

    Parameters
    ----------
    old: dict
        The document as read.
    fields: iterable of str, optional
        The top-level fields the result depends on (what the steps looked
        at: see `atomdb_migrate.documents.StepDocument`, and what they
        changed). Each must still hold its value as read, or still be
        missing. None: every field of `old`.
    complete: bool
        With ``fields=None``, also require that the stored document has no
        other field: `old` may come from a projection, and the steps looked
        at all of it.
    large: bool
        Match values over `LARGE_VALUE` by type and encoded size instead of
        whole, so that the filter fits in a command beside a large update.
    exact: bool
        True pins each value's BSON type. False is for mongomock, which has
        no ``$type: "null"`` and no ``"long"``: values are matched without
        their type.

    Only query operators are used (on some servers an aggregation
    expression in a filter reads the whole collection), except for names
    with a ``.`` or a leading ``$``, large values that must be matched by
    size, and `complete`. Inside arrays and embedded documents, numbers are
    matched by value: a concurrent change of a nested number's type alone is
    not seen.

    The ``_id`` and the version as read are always matched; a document read
    without a version matches only while it has none. Names that are not
    strings are left out: a stored document has none.

    """
    names = list(old) if fields is None else [k for k in fields if isinstance(k, str)]
    query: dict[str, Any] = {"_id": old["_id"]}
    expressions: list[Any] = []
    for key in dict.fromkeys([*names, VERSION_KEY]):
        if key == "_id":
            continue
        present = key in old
        value = old[key] if present else None
        kind = TYPE_NAMES.get(bson_kind(value)) if present else None
        if needs_expression(key):
            # Presence is asked of the document's names: some servers give
            # a missing $getField a type other than "missing".
            named = {"$in": [{"$literal": key}, _NAMES]}
            if not present:
                expressions.append({"$not": [named]})
                continue
            got = {"$getField": {"field": {"$literal": key}, "input": "$$ROOT"}}
            expressions.append(named)
            if kind:
                expressions.append({"$eq": [{"$type": got}, kind]})
            expressions.append(_same_as(got, value, large))
        elif not present:
            query[key] = {"$exists": False}
        elif type(value) is list:
            # {k: v} alone also matches an array holding v; of v's size, and
            # holding each of v's elements, it is v.
            query[key] = {"$eq": value, "$size": len(value)}
            if value and exact:
                query[key]["$all"] = value
        elif large and _size(value) > LARGE_VALUE:
            query[key] = {"$type": kind} if kind else {"$exists": True}
            expressions.append(_same_as(f"${key}", value, large))
        else:
            condition: dict[str, Any] = {"$eq": value}
            if value is None:
                condition = {"$type": "null"} if exact else {"$eq": None, "$exists": True}
            elif kind and exact:
                condition["$type"] = kind
            condition["$not"] = {"$type": "array"}
            query[key] = condition
    if fields is None and complete:
        count = {"$size": {"$objectToArray": "$$ROOT"}}
        expressions.append({"$eq": [count, len(old)]})
    if expressions:
        query["$expr"] = expressions[0] if len(expressions) == 1 else {"$and": expressions}
    return query


def _size(value: Any) -> int:
    return len(bson.encode({"v": value}))


def _same_as(got: Any, value: Any, large: bool) -> Any:
    """An expression true where `got` holds `value` (or, if large, its type and size)."""
    if large and _size(value) > LARGE_VALUE:
        return {"$eq": [{"$bsonSize": {"v": got}}, _size(value)]}
    return {"$eq": [got, {"$literal": value}]}


def unchanged_filter(old: Document) -> dict[str, Any]:
    """A filter matching the stored document only if it still holds all of `old`'s fields."""
    return guard(old)


# ----------------------------------------------------------------------
# What cannot be written
# ----------------------------------------------------------------------
def result_problem(new: Mapping[str, Any]) -> str | None:
    """Why a step's result cannot be stored, or None when it can.

    Its top-level names must be strings, its values ones BSON holds (not a
    set, not an object), and its size MongoDB's 16 MB at most.

    """
    odd = [k for k in new if not isinstance(k, str)]
    if odd:
        return f"the result has a field named {short_repr(odd[0], 60)}, which is not a string"
    try:
        size = len(bson.encode(new))
    except (InvalidDocument, TypeError, ValueError, OverflowError) as exc:
        return f"the result cannot be stored as BSON: {shorten(str(exc))}"
    if size > MAX_DOCUMENT_SIZE:
        return f"the result is {_mb(size)}, over MongoDB's 16 MB limit for a document"
    return None


def fits(query: dict[str, Any], update: Any) -> bool:
    """Whether a conditional update fits in one command."""
    size = len(bson.encode({"q": query})) + len(bson.encode({"u": update}))
    return size <= MAX_DOCUMENT_SIZE + COMMAND_OVERHEAD


def conditional_update(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    fields: Iterable[Any] | None = None,
    *,
    complete: bool = False,
    expressions: bool = True,
) -> tuple[dict[str, Any], Any]:
    """The filter and the update that take `old`, if still stored as read, to `new`.

    The filter matches the fields given (None: all of them) and the fields
    the update changes or removes (a step may write around the document's
    own methods). Where the filter and the update together would not fit in
    one command, values over `LARGE_VALUE` are matched by type and size.

    `expressions` False (for mongomock) matches arrays without aggregation
    expressions (see `guard`).

    Raises
    ------
    ValueError
        If `new` cannot be stored, or the update does not fit even so; the
        message says why.

    """
    problem = result_problem(new)
    if problem is not None:
        raise ValueError(problem)
    update = document_diff(old, new)
    if fields is not None:
        fields = {*fields, *_written(update)}
    query = guard(old, fields, complete=complete, exact=expressions)
    if not fits(query, update):
        query = guard(old, fields, complete=complete, large=True, exact=expressions)
        if not fits(query, update):
            raise ValueError(
                "the update, with its filter, is over MongoDB's 16 MB limit for a command"
            )
    return query, update


def _written(update: Any) -> list[Any]:
    """The top-level fields an update from `document_diff` sets or removes."""
    if isinstance(update, dict):
        return [*update.get("$set", {}), *update.get("$unset", {})]
    found: list[Any] = []
    root = update[0]["$replaceWith"] if update else None
    while isinstance(root, dict) and "$setField" in root:
        found.append(root["$setField"]["field"]["$literal"])
        root = root["$setField"]["input"]
    return found


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
