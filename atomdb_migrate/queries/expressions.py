"""Conditions on computed values, as aggregation expressions for ``$expr``.

A field that ``ops.convert`` changes has, in a legacy document, a value
the server can compute (the operation's own server expression) but no
index holds. A condition on it becomes ``$expr``: the same question asked
of the computed value, with the query language's rules kept (``$gt`` only
within a kind of value, null matching a missing value, ``$regex`` only on
strings).

"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bson import Decimal128

from ..core.conditions import NUMBER_TYPES, Computed, freeze
from ..operations.conversions import conversion_expr
from ..operations.paths import literal
from .matching import Unsure, is_regex, regex_of, type_of


@dataclass(frozen=True)
class Field:
    """The stored value at a path."""

    parts: tuple[str, ...]

    @property
    def key(self) -> Any:
        return ("field", self.parts)


@dataclass(frozen=True)
class Converted:
    """A value as ``ops.convert`` makes it (null and missing left as they are)."""

    to: str
    inner: Field | Converted

    @property
    def key(self) -> Any:
        return ("convert", self.to, self.inner.key)

    @property
    def field(self) -> Field:
        inner = self.inner
        return inner if isinstance(inner, Field) else inner.field


@dataclass(frozen=True)
class Expr(Computed):
    """One condition on a value the server computes (`Converted`): written as ``$expr``."""

    op: str
    arg: Any
    value: Converted
    origin: str = field(default="", compare=False)

    @property
    def key(self) -> Any:
        return ("expr", self.op, freeze(self.arg), self.value.key)

    def expression(self) -> Any:
        return condition_expr(self)


def value_expr(value: Field | Converted) -> Any:
    """The expression of a value: a field, or a conversion of one."""
    if isinstance(value, Field):
        return "$" + ".".join(value.parts)
    inner = value_expr(value.inner)
    # Where the conversion fails (its result is then a document), the value
    # stays as stored: the step leaves such a document as it is.
    kept = {
        "$let": {
            "vars": {"made": conversion_expr(value.to, "$$v")},
            "in": {"$cond": [{"$eq": [{"$type": "$$made"}, "object"]}, "$$v", "$$made"]},
        }
    }
    return {
        "$let": {
            "vars": {"v": inner},
            "in": {"$cond": [{"$in": [{"$type": "$$v"}, ["missing", "null"]]}, "$$v", kept]},
        }
    }


def _kinds(value: Any) -> list[str]:
    """The ``$type`` names a value compares with (``$gt`` and the like).

    A conversion makes a number, a string, a bool or a date; where it fails,
    the value stays as stored (an ObjectId, bytes, a Timestamp...), and is
    compared as stored. A list or a document is never the computed value
    (`queries.sources` asks those of the field as stored): none for them.

    """
    try:
        kind = type_of(value)
    except Unsure:
        return []
    if kind in NUMBER_TYPES:
        return list(NUMBER_TYPES)
    return [] if kind in ("object", "array") else [kind]


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, Decimal128) and value.to_decimal().is_nan()


def _is(v: Any, names: list[str]) -> Any:
    return {"$in": [{"$type": v}, names]}


def _equals(v: Any, target: Any) -> Any:
    if target is None:
        return _is(v, ["null", "missing"])
    if is_regex(target):
        return _regex(v, regex_of(target))
    kinds = _kinds(target)
    if not kinds:  # a computed value is never a list or a document
        return False
    return {"$and": [_is(v, kinds), {"$eq": [v, literal(target)]}]}


def _regex(v: Any, arg: tuple[str, str]) -> Any:
    pattern, options = arg
    match = {"$regexMatch": {"input": v, "regex": pattern, "options": options}}
    return {"$cond": [{"$eq": [{"$type": v}, "string"]}, match, False]}


def condition_expr(condition: Expr) -> Any:
    """A condition on a computed scalar (or null, or missing) as a boolean expression."""
    return {
        "$let": {
            "vars": {"value": value_expr(condition.value)},
            "in": _condition("$$value", condition),
        }
    }


def _condition(v: str, condition: Expr) -> Any:
    op, arg = condition.op, condition.arg
    if op == "$eq":
        return _equals(v, arg)
    if op == "$in":
        return {"$or": [_equals(v, item) for item in arg]} if arg else False
    if op == "$exists":
        return {"$ne": [{"$type": v}, "missing"]}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if arg is None:
            return _is(v, ["null", "missing"]) if op in ("$gte", "$lte") else False
        kinds = _kinds(arg)
        if not kinds:
            return False
        if _is_nan(arg):  # NaN is only equal to NaN, and neither above nor below
            return _equals(v, arg) if op in ("$gte", "$lte") else False
        compared = {"$and": [_is(v, kinds), {op: [v, literal(arg)]}]}
        if kinds == list(NUMBER_TYPES):  # aggregation orders NaN below every number
            compared["$and"].append({"$ne": [v, literal(float("nan"))]})
        return compared
    if op == "$regex":
        return _regex(v, arg)
    if op == "$type":
        return _is(v, sorted(arg))
    if op == "$elemMatch":  # a computed value is never a list
        return False
    raise ValueError(op)  # pragma: no cover - the grammar has no other


__all__ = ["Converted", "Expr", "Field", "condition_expr", "value_expr"]
