"""MongoDB's query conditions, evaluated in Python on known values.

`atomdb_migrate.queries` maps a filter back through a step's operations.
Where an operation sets a constant (``ops.add_field("views", 0)``) the
condition on the field is decided here, once, for every document the
operation sets it in: ``{"views": {"$gt": 0}}`` is false for all of them.

Only what `queries` needs is here: the operators of its grammar on
scalars, documents and lists, with MongoDB's rules (numbers compare across
their types, a bool is not a number, a list matches when the list or one of
its elements does, null matches a missing value). A path that runs into a
list inside a constant is not followed: `Unsure` is raised instead, and
the caller refuses the filter rather than guess.

"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from bson import Code, DBRef, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp

from ..core.bson_rules import bson_kind
from ..core.conditions import NUMBER_TYPES, freeze, missing_satisfies
from ..operations.paths import MISSING
from .regexes import pcre_only

#: ``$type`` codes by name, and the alias ``number``.
TYPE_CODES = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}
_NAMES_BY_CODE = {code: name for name, code in TYPE_CODES.items()}


class Unsure(Exception):
    """The condition cannot be decided in Python exactly as the server would."""


def type_names(spec: Any) -> frozenset[str]:
    """The ``$type`` names a ``$type`` argument stands for.

    Raises
    ------
    ValueError
        For a name or code that is no BSON type.

    """
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    names: set[str] = set()
    for item in specs:
        if item == "number":
            names.update(NUMBER_TYPES)
        elif isinstance(item, str) and item in TYPE_CODES:
            names.add(item)
        elif (
            isinstance(item, (int, float)) and not isinstance(item, bool) and item in _NAMES_BY_CODE
        ):
            names.add(_NAMES_BY_CODE[int(item)])
        else:
            raise ValueError(f"{item!r} is not a BSON type name or code")
    if not names:
        raise ValueError("$type needs at least one type")
    return frozenset(names)


def type_of(value: Any) -> str:
    """The ``$type`` name of a value as PyMongo stores it."""
    kind = bson_kind(value)
    if isinstance(kind, str):  # string, bool, int, long, double, object, array, date
        return kind
    if isinstance(kind, tuple) or isinstance(value, UUID):  # ("binary", subtype)
        return "binData"
    for types, name in _OTHER_TYPES:
        if isinstance(value, types):
            return name
    raise Unsure(f"a {type(value).__name__} value")


#: The types `bson_kind` does not name, by ``$type`` name (Code before str, its base).
_OTHER_TYPES: tuple[tuple[Any, str], ...] = (
    (type(None), "null"),
    (Code, "javascript"),
    (str, "string"),
    (float, "double"),
    (ObjectId, "objectId"),
    (Timestamp, "timestamp"),
    (MinKey, "minKey"),
    (MaxKey, "maxKey"),
    (DBRef, "object"),
    ((re.Pattern, Regex), "regex"),
    (Decimal128, "decimal"),
)


def _number(value: Any) -> float | int | Decimal | None:
    """A number as Python compares numbers exactly (a Decimal128 as a Decimal), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        return float("nan") if number.is_nan() else number
    return None


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _millis(value: datetime) -> datetime:
    """A datetime as BSON stores it: in UTC, to the millisecond."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=None)


def equal(a: Any, b: Any) -> bool:
    """Whether two values are equal as MongoDB compares them (``1 == 1.0``, ``1 != True``)."""
    x, y = _number(a), _number(b)
    if x is not None or y is not None:
        if x is None or y is None:
            return False
        if _nan(x) or _nan(y):
            return _nan(x) and _nan(y)
        return bool(x == y)
    kind_a, kind_b = type_of(a), type_of(b)
    if kind_a != kind_b:
        return False
    if kind_a == "object":
        return list(a) == list(b) and all(equal(a[k], b[k]) for k in a)
    if kind_a == "array":
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if kind_a == "date":
        return bool(_millis(a) == _millis(b))
    if kind_a == "regex":
        return _regex_parts(a) == _regex_parts(b)
    return bool(a == b)


def compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 where `a` and `b` are of one comparable kind, None where they are not."""
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        if _nan(x) or _nan(y):
            return 0 if _nan(x) and _nan(y) else None
        return int(x > y) - int(x < y)
    if x is not None or y is not None:
        return None
    kind = type_of(a)
    if kind != type_of(b) or kind not in ("string", "date", "objectId", "bool"):
        return None
    if kind == "date":
        a, b = _millis(a), _millis(b)
    elif kind == "objectId":
        a, b = a.binary, b.binary
    return int(a > b) - int(a < b)


def _regex_parts(value: Any) -> tuple[str, str]:
    if isinstance(value, (Regex, re.Pattern)):
        return str(value.pattern), _flag_letters(int(value.flags))
    raise TypeError(value)


def _flag_letters(flags: int) -> str:
    letters = ""
    for letter, flag in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)):
        if flags & flag:
            letters += letter
    return letters


def regex_of(pattern: Any, options: str = "") -> tuple[str, str]:
    """A regex argument (text, compiled or `bson.Regex`) as its pattern and option letters."""
    if isinstance(pattern, (re.Pattern, Regex)):
        text, letters = _regex_parts(pattern)
        return text, "".join(sorted(set(letters + options)))
    return str(pattern), "".join(sorted(set(options)))


def regex_search(pattern: str, options: str, text: str) -> bool:
    """Whether a regex finds a match in a string, as the server's PCRE would.

    Python's ``re`` decides only patterns that it reads as PCRE does (see
    `regexes.pcre_only`).

    Raises
    ------
    Unsure
        For anything else.

    """
    different = pcre_only(pattern, options, text)
    if different is not None:
        raise Unsure(
            f"regex {pattern!r} on {text!r}: decided by the server's PCRE only ({different})"
        )
    flags = 0
    for letter in options:
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}.get(letter, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = re.search(pattern, text, flags) is not None
        except re.error as exc:
            raise Unsure(f"regex {pattern!r}: {exc}") from None
    if caught:  # a nested set, say: a reading `re` itself says may change
        raise Unsure(f"regex {pattern!r}: decided by the server's PCRE only ({caught[0].message})")
    return found


def is_regex(value: Any) -> bool:
    return isinstance(value, (re.Pattern, Regex))


def _candidates(value: Any) -> list[Any]:
    """A value and, for a list, its elements: what most operators try."""
    if isinstance(value, list):
        return [value, *value]
    return [value]


def _equals(value: Any, target: Any, whole: bool = False) -> bool:
    candidates = [value] if whole else _candidates(value)
    if is_regex(target):
        pattern, options = regex_of(target)
        return any(isinstance(v, str) and regex_search(pattern, options, v) for v in candidates)
    return any(equal(v, target) for v in candidates)


def matches(op: str, arg: Any, value: Any, *, whole: bool = False) -> bool:
    """Whether a value (or `MISSING`) satisfies one condition, as the server decides.

    `op` is one of ``$eq $gt $gte $lt $lte $in $exists $regex $type``;
    the negations (``$ne``, ``$nin``, ``$not``) are the caller's. With
    `whole`, a list is one value, its elements are not tried (an element
    under ``$elemMatch``'s operators).

    """
    if value is MISSING:
        found = missing_satisfies(op, arg)
        if found is None:
            raise Unsure(f"operator {op}")
        return found
    if op == "$exists":
        return bool(arg)
    if op == "$eq":
        return _equals(value, arg, whole)
    if op == "$in":
        return any(_equals(value, item, whole) for item in arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if arg is None:
            return op in ("$gte", "$lte") and _equals(value, None, whole)
        for v in _candidates(value)[1:] if isinstance(value, list) and not whole else [value]:
            order = compare(v, arg)
            if order is not None and (
                (op == "$gt" and order > 0)
                or (op == "$gte" and order >= 0)
                or (op == "$lt" and order < 0)
                or (op == "$lte" and order <= 0)
            ):
                return True
        return False
    if op == "$regex":
        pattern, options = arg
        candidates = [value] if whole else _candidates(value)
        return any(isinstance(v, str) and regex_search(pattern, options, v) for v in candidates)
    if op == "$type":
        kinds = {type_of(value)}
        if isinstance(value, list) and not whole:
            kinds.update(type_of(v) for v in value)
        return bool(kinds & arg)
    raise Unsure(f"operator {op}")  # $elemMatch is `formulas.evaluate`'s


def values_at(doc: Any, parts: Sequence[str]) -> Any:
    """The value at a path of a known document, or `MISSING`.

    Raises
    ------
    Unsure
        Where the path runs into a list (MongoDB then looks into each
        element, which this does not follow).

    """
    current = doc
    for name in parts:
        if isinstance(current, list):
            raise Unsure("a path into a list")
        if not isinstance(current, dict):
            return MISSING
        current = current.get(name, MISSING)
        if current is MISSING:
            return MISSING
    return current


__all__ = [
    "Unsure",
    "compare",
    "equal",
    "freeze",
    "matches",
    "type_names",
    "type_of",
    "values_at",
]
