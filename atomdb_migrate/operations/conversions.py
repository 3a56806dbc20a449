"""Values: what a step may store, and converting them (in Python and on the server).

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bson import Int64, ObjectId

from ..core.bson_rules import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN
from ..core.storage import JSON_DATE_PARTS, JSON_DATE_TAGS, JSON_TIME_PARTS, JSON_TYPE_KEY
from ..exceptions import (
    ConversionError,
    short_repr,
)
from .paths import (
    _FAILED,
    _FLOAT_REGEX,
    _FLOAT_TEXT,
    _INT_REGEX,
    _INT_TEXT,
    _type_is,
)

#: The parts of atom-db's JSON form of a datetime (a date's lack the time's: 0).
_DATETIME_PARTS = (*JSON_DATE_PARTS, *JSON_TIME_PARTS)

_PLAIN = (str, int, float, bool, type(None), datetime, ObjectId, bytes)


def encodable(text: str) -> bool:
    """Whether a string can be stored: BSON holds UTF-8, which has no lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(value: Any, what: str) -> Any:
    """Refuse a default that MongoDB would not store as it is given."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} {value!r} does not fit in 64 bits")
    if isinstance(value, str) and not encodable(value):
        raise ValueError(
            f"{what} {value!r} is not valid UTF-8 (a lone surrogate): BSON cannot hold it"
        )
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list):
        for item in value:
            check_value(item, what)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key or not encodable(key):
                raise ValueError(f"{what}: key {key!r} cannot be stored")
            check_value(item, what)
        return value
    raise ValueError(
        f"{what} {value!r}: a {type(value).__name__} is not stored as it is given; "
        "use str, int, float, bool, None, datetime, a list or a dict of those"
    )


def _format_float(value: float) -> str:
    """A float as the server's ``$toString`` writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def convert_value(value: Any, to: str) -> Any:
    """Convert one value as `convert` does; raise `ConversionError` where it cannot.

    ``None`` is not passed here: `convert` leaves it as it is.

    """
    kind = int if _is_int(value) else type(value)  # bson.Int64 is an int
    if to == "int":
        if kind is bool:
            return int(value)
        if kind is int:
            return value if type(value) in (int, Int64) else int(value)
        if kind is float:
            if math.isfinite(value) and INT64_MIN <= math.trunc(value) <= INT64_MAX:
                return math.trunc(value)
        elif kind is str and _INT_TEXT.fullmatch(value):
            number = int(value)
            if INT64_MIN <= number <= INT64_MAX:
                return number
    elif to == "float":
        if kind in (bool, int):
            return float(value)
        if kind is float:
            return value
        if kind is str and _FLOAT_TEXT.fullmatch(value):
            parsed = float(value)
            if math.isfinite(parsed):
                return parsed
    elif to == "str":
        if kind is str:
            return value
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return str(value)
        if kind is float:
            return _format_float(value)
    elif to == "bool":
        if kind is bool:
            return value
        if kind in (int, float):
            return value != 0
        if kind is str:
            word = value.lower()
            if word in ("true", "1"):
                return True
            if word in ("false", "0"):
                return False
    elif to == "datetime":
        if kind is datetime:
            return value
        if isinstance(value, dict) and value.get(JSON_TYPE_KEY) in JSON_DATE_TAGS:
            parts: dict[str, int] = {}
            for key, low, high, default in _DATETIME_PARTS:
                part: Any = value.get(key)
                if part is None and default is not None:
                    part = default
                if not _is_int(part) or not low <= part <= high:
                    break
                parts[key] = int(part)
            else:
                try:
                    y, mo, d, h, mi, sec, us = parts.values()
                    return datetime(y, mo, d, h, mi, sec, us // 1000 * 1000)
                except ValueError:
                    pass
    raise ConversionError(f"cannot convert {short_repr(value)} to {to}")


def conversion_expr(to: str, v: str) -> Any:
    """The server form of `convert_value`: the value, or `_FAILED`."""
    kind = {"$type": v}
    no_newline = {"$eq": [{"$indexOfCP": [v, "\n"]}, -1]}

    def parse(regex: str, target: str) -> Any:
        return {
            "$cond": [
                {"$and": [{"$regexMatch": {"input": v, "regex": regex}}, no_newline]},
                {"$convert": {"input": v, "to": target, "onError": _FAILED}},
                _FAILED,
            ]
        }

    def is_(*kinds: str) -> Any:
        return {"$in": [kind, list(kinds)]}

    branches: list[tuple[Any, Any]]
    if to == "int":
        # As PyMongo stores a Python int: 32 bits where it fits, else 64.
        branches = [
            (is_("bool"), {"$cond": [v, 1, 0]}),
            (is_("int", "long"), v),
            (
                is_("double"),
                _narrow({"$convert": {"input": v, "to": "long", "onError": _FAILED}}),
            ),
            (is_("string"), _narrow(parse(_INT_REGEX, "long"))),
        ]
    elif to == "float":
        branches = [
            (is_("bool"), {"$cond": [v, 1.0, 0.0]}),
            (is_("int", "long"), {"$toDouble": v}),
            (is_("double"), v),
            (is_("string"), parse(_FLOAT_REGEX, "double")),
        ]
    elif to == "str":
        branches = [
            (is_("string"), v),
            (is_("bool"), {"$cond": [v, "true", "false"]}),
            (is_("int", "long", "double"), {"$toString": v}),
        ]
    elif to == "bool":
        branches = [
            (is_("bool"), v),
            (is_("int", "long", "double"), {"$ne": [v, 0]}),
            (is_("string"), _bool_from_text(v)),
        ]
    elif to == "datetime":
        branches = [
            (is_("date"), v),
            (
                {
                    "$and": [
                        is_("object"),
                        {"$in": [f"{v}.{JSON_TYPE_KEY}", list(JSON_DATE_TAGS)]},
                    ]
                },
                _date_from_json_expr(v),
            ),
        ]
    else:  # pragma: no cover - checked by convert()
        raise ValueError(to)
    return {
        "$switch": {
            "branches": [{"case": case, "then": then} for case, then in branches],
            "default": _FAILED,
        }
    }


def _bool_from_text(v: str) -> Any:
    """A string as `convert_value` reads a bool (``"true"``/``"1"``, ``"false"``/``"0"``,
    in any case), or `_FAILED`."""
    word = {"$toLower": v}
    return {
        "$switch": {
            "branches": [
                {"case": {"$in": [word, ["true", "1"]]}, "then": True},
                {"case": {"$in": [word, ["false", "0"]]}, "then": False},
            ],
            "default": _FAILED,
        }
    }


def _narrow(long: Any) -> Any:
    """A 64-bit integer (or `_FAILED`) as a 32-bit one where it fits."""
    fits = {
        "$and": [
            _type_is("$$n", "long"),
            {"$gte": ["$$n", INT32_MIN]},
            {"$lte": ["$$n", INT32_MAX]},
        ]
    }
    return {"$let": {"vars": {"n": long}, "in": {"$cond": [fits, {"$toInt": "$$n"}, "$$n"]}}}


def _date_from_json_expr(v: str) -> Any:
    """atom-db's JSON form of a datetime to a date, or `_FAILED` (never a server error)."""
    parts: dict[str, Any] = {}
    checks: list[Any] = []
    for key, low, high, default in _DATETIME_PARTS:
        raw = f"{v}.{key}"
        # A missing or null part takes its default.
        part = raw if default is None else {"$ifNull": [raw, default]}
        parts[key] = part
        checks.append(
            {
                "$and": [
                    {"$in": [{"$type": part}, ["int", "long"]]},
                    {"$gte": [part, low]},
                    {"$lte": [part, high]},
                ]
            }
        )
    made = {
        "$dateFromParts": {
            "year": parts["year"],
            "month": parts["month"],
            "day": parts["day"],
            "hour": parts["hour"],
            "minute": parts["minute"],
            "second": parts["second"],
            "millisecond": {"$trunc": {"$divide": [parts["microsecond"], 1000]}},
        }
    }
    return {
        "$cond": [
            {"$and": checks},
            {
                # A day past the month's end rolls over on the server: refuse it.
                "$let": {
                    "vars": {"made": made},
                    "in": {
                        "$cond": [
                            {"$eq": [{"$dayOfMonth": "$$made"}, parts["day"]]},
                            "$$made",
                            _FAILED,
                        ]
                    },
                }
            },
            _FAILED,
        ]
    }
