"""BSON's value rules: the ranges of its integers, its dates, and values compared
as BSON stores them.

Python holds ``3 == 3.0 == Int64(3)`` and ``1 == True``; BSON stores each as
another type. `bson_kind` names the type a value is stored as, and
`same_value` compares type and value, all the way down.

Imports nothing of the package: every subpackage may use it.

"""

from __future__ import annotations

import calendar
import datetime
import struct
from collections.abc import Mapping
from typing import Any

from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

#: The range of a 32-bit int: PyMongo stores a Python int in it as one (the
#: server's bound, too, on a time limit, a batch size or a TTL).
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: The largest and smallest integers MongoDB stores (64 bits).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def datetime_to_millis(value: datetime.datetime) -> int:
    """The BSON date a datetime is stored as: milliseconds since the epoch, UTC.

    An aware datetime is taken to UTC first; a naive one is read as UTC.
    Microseconds are cut to the millisecond below (before 1970 too: one
    microsecond before the epoch is -1).

    Raises
    ------
    OverflowError
        If taking an aware datetime to UTC leaves the years 1 to 9999, as
        PyMongo then does.

    """
    offset = value.utcoffset()
    if offset is not None:
        value = value - offset
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


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
        return "int" if INT32_MIN <= value <= INT32_MAX else "long"
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
            return datetime_to_millis(a) == datetime_to_millis(b)
        except (OverflowError, ValueError):
            return bool(a == b)
    try:
        return bool(a == b)
    except Exception:  # values that cannot be compared are not the same
        return False


def same_document(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two documents are stored as the same BSON (see `same_value`)."""
    return same_value(a, b)
