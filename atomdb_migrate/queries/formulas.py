"""Query filters as formulas: parsed, evaluated in Python, written back.

`atomdb_migrate.queries` rewrites a filter condition by condition, so a
filter is first parsed into a formula (`atomdb_migrate.core.conditions`:
one condition per field and operator, an `Atom`, joined by `And`, `Or` and
`Not`; re-exported here). The negated operators become `Not`:
``{"a": {"$ne": 1}}`` is ``Not(Atom(a, $eq, 1))``, which is what MongoDB
means by it (a document without ``a`` matches). A formula is written back
as a filter by `render`, which joins conditions on one field into one
document again, so the server can use an index on it.

The grammar (anything else raises `InvalidQueryError`):

- ``$and``, ``$or``, ``$nor`` at any level of a filter;
- on a field (dotted paths, ``_id``): a value (equality, or a regex),
  ``$eq $ne $gt $gte $lt $lte $in $nin $exists $regex`` (with
  ``$options``), ``$not``, ``$elemMatch``, ``$type``.

"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bson import Decimal128, Int64, ObjectId, Regex

from ..core.conditions import (
    LOGICAL_OPERATORS,
    NOTHING,
    And,
    Atom,
    ElemMatch,
    Formula,
    Not,
    Or,
    conj,
    disj,
    is_operators,
    key_of,
    merge,
    neg,
    render,
)
from ..core.storage import VERSION_KEY
from ..exceptions import InvalidQueryError, short_repr
from .expressions import Converted, Expr, Field
from .matching import Unsure, matches, regex_of, type_names, values_at

#: Operators on a field, with the negations parsed into `Not`.
FIELD_OPERATORS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$regex",
    "$options",
    "$not",
    "$elemMatch",
    "$type",
)


#: Conditions that only ask what a value is (there, a document, null):
#: they hold the same for any document (see `queries`).
SHAPE_OPERATORS = ("$exists", "$type")


_COMPARABLE = (str, int, float, datetime, ObjectId, Int64, Decimal128, type(None))


# ----------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------
def parse(query: Any, *, where: str | None = None) -> Formula:
    """A filter as a formula.

    Raises
    ------
    InvalidQueryError
        For anything outside the grammar (see the module's docstring).

    """
    if not isinstance(query, Mapping):
        raise InvalidQueryError(where, f"a filter must be a dict, not {short_repr(query, 80)}")
    parts: list[Formula] = []
    for key, value in query.items():
        if not isinstance(key, str):
            raise InvalidQueryError(where, f"a field name must be a string, not {key!r}")
        if key.startswith("$"):
            parts.append(_logical(key, value, where))
        else:
            parts.append(_field_condition(_path(key), value, key))
    return conj(parts)


def _logical(op: str, value: Any, where: str | None) -> Formula:
    if op not in LOGICAL_OPERATORS:
        raise InvalidQueryError(
            where,
            f"operator {op!r} is not supported at the top of a filter: use "
            f"{', '.join(LOGICAL_OPERATORS)} or conditions on fields",
        )
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidQueryError(where, f"{op} needs a non-empty list of filters")
    items = [parse(item, where=where) for item in value]
    if op == "$and":
        return conj(items)
    joined = disj(items)
    return neg(joined) if op == "$nor" else joined


def _path(key: str) -> tuple[str, ...]:
    parts = tuple(key.split("."))
    if not key or any(not p for p in parts):
        raise InvalidQueryError(key, "a field path has an empty name")
    if any(p.startswith("$") for p in parts):
        raise InvalidQueryError(key, "a name in a field path may not start with '$'")
    if parts[0] == VERSION_KEY:
        raise InvalidQueryError(
            key,
            "a version-aware filter is written against the model's current fields; "
            "the versions are its to add",
        )
    return parts


def _field_condition(path: tuple[str, ...], value: Any, origin: str) -> Formula:
    if isinstance(value, Mapping) and "$ref" in value and "$id" in value:
        return Atom(path, "$eq", value, origin)  # a DBRef, compared whole
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if not is_operators(value):
            raise InvalidQueryError(origin, "mixes operators and field names: use one or the other")
        return _operators(path, value, origin)
    if isinstance(value, (re.Pattern, Regex)):
        return Atom(path, "$regex", regex_of(value), origin)
    return Atom(path, "$eq", value, origin)


def _operators(path: tuple[str, ...], ops: Mapping[str, Any], origin: str) -> Formula:
    parts: list[Formula] = []
    for op, arg in ops.items():
        if op not in FIELD_OPERATORS:
            raise InvalidQueryError(
                origin,
                f"operator {op!r} is not supported; version_filter knows "
                f"{' '.join(o for o in FIELD_OPERATORS if o != '$options')}",
            )
        if op == "$options":
            if "$regex" not in ops:
                raise InvalidQueryError(origin, "$options without $regex")
            continue
        parts.append(_operator(path, op, arg, ops, origin))
    return conj(parts)


def _operator(
    path: tuple[str, ...], op: str, arg: Any, ops: Mapping[str, Any], origin: str
) -> Formula:
    if op in ("$eq", "$ne"):
        if isinstance(arg, (re.Pattern, Regex)):
            raise InvalidQueryError(
                origin, f"{op} with a regular expression compares stored regexes: use $regex"
            )
        atom = Atom(path, "$eq", arg, origin)
        return atom if op == "$eq" else neg(atom)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not isinstance(arg, _COMPARABLE):
            raise InvalidQueryError(
                origin,
                f"{op} compares with a {type(arg).__name__}: version_filter compares "
                "with numbers, strings, dates, ObjectIds, bools and null only",
            )
        return Atom(path, op, arg, origin)
    if op in ("$in", "$nin"):
        if not isinstance(arg, (list, tuple)):
            raise InvalidQueryError(origin, f"{op} needs a list, not {short_repr(arg, 80)}")
        atom = Atom(path, "$in", list(arg), origin)
        return atom if op == "$in" else neg(atom)
    if op == "$exists":
        atom = Atom(path, "$exists", True, origin)
        return atom if arg else neg(atom)
    if op == "$regex":
        options = ops.get("$options", "")
        if not isinstance(arg, (str, re.Pattern, Regex)) or not isinstance(options, str):
            raise InvalidQueryError(origin, "$regex needs a string (and $options a string)")
        if set(options) - set("imsx"):
            raise InvalidQueryError(origin, f"$options {options!r}: only i, m, s and x are known")
        return Atom(path, "$regex", regex_of(arg, options), origin)
    if op == "$not":
        if isinstance(arg, (re.Pattern, Regex)):
            return neg(Atom(path, "$regex", regex_of(arg), origin))
        if not is_operators(arg):
            raise InvalidQueryError(origin, "$not needs operators (or a regex)")
        return neg(_operators(path, arg, origin))
    if op == "$type":
        try:
            return Atom(path, "$type", type_names(arg), origin)
        except ValueError as exc:
            raise InvalidQueryError(origin, f"$type: {exc}") from None
    # $elemMatch ({} matches a list holding a document or a list)
    if not isinstance(arg, Mapping):
        raise InvalidQueryError(origin, "$elemMatch needs a document")
    logical = any(k in LOGICAL_OPERATORS for k in arg)
    inner = (
        _operators((), arg, origin)
        if is_operators(arg) and not logical
        else parse(arg, where=origin)
    )
    on_element = is_operators(arg) and not logical
    return Atom(path, "$elemMatch", ElemMatch(inner, dict(arg), on_element), origin)


# ----------------------------------------------------------------------
# Evaluating in Python
# ----------------------------------------------------------------------
def evaluate(formula: Formula, doc: Any, *, whole: bool = False) -> bool:
    """Whether a known document (or, for paths ``()``, a value) satisfies a formula.

    With `whole`, a list at path ``()`` is one value (an element under
    ``$elemMatch``'s operators), not a list whose elements are tried too.

    Raises
    ------
    Unsure
        Where Python cannot decide it as the server would.

    """
    if isinstance(formula, bool):
        return formula
    if isinstance(formula, Atom):
        value = values_at(doc, formula.path) if formula.path else doc
        if isinstance(formula.arg, ElemMatch):
            return isinstance(value, list) and any(_element_matches(formula.arg, e) for e in value)
        return matches(formula.op, formula.arg, value, whole=whole and not formula.path)
    if isinstance(formula, Not):
        return not evaluate(formula.item, doc, whole=whole)
    if isinstance(formula, And):
        return all(evaluate(i, doc, whole=whole) for i in formula.items)
    if isinstance(formula, Or):
        return any(evaluate(i, doc, whole=whole) for i in formula.items)
    raise Unsure("a computed value")


def _element_matches(arg: ElemMatch, element: Any) -> bool:
    """Whether one element of a list satisfies an ``$elemMatch``, as the server tries it.

    Operators on the element ask each element as one value (a list inside
    the list too: ``{"$type": "array"}``, ``{"$eq": [3]}``). A filter on
    fields tries documents; a list inside the list it tries as a document
    too, which only an empty filter (``{}``) is decided on here.

    """
    if arg.on_element:
        return evaluate(arg.formula, element, whole=True)
    if isinstance(element, dict):
        return evaluate(arg.formula, element)
    if isinstance(element, list):
        if arg.formula is True:
            return True
        raise Unsure("$elemMatch with a filter on fields, on a list inside the list")
    return False


# ----------------------------------------------------------------------
# Walking a formula's conditions
# ----------------------------------------------------------------------
def map_conditions(
    formula: Formula, atom: Callable[[Atom], Formula], expr: Callable[[Expr], Formula]
) -> Formula:
    """A formula with each condition replaced by what `atom` or `expr` makes of it."""
    if isinstance(formula, bool):
        return formula
    if isinstance(formula, Atom):
        return atom(formula)
    if isinstance(formula, Expr):
        return expr(formula)
    if isinstance(formula, Not):
        return neg(map_conditions(formula.item, atom, expr))
    if isinstance(formula, And):
        return conj(map_conditions(i, atom, expr) for i in formula.items)
    assert isinstance(formula, Or)
    return disj(map_conditions(i, atom, expr) for i in formula.items)


def path_of(item: Atom | Expr) -> tuple[str, ...]:
    """The path a condition asks of (a computed one: the field it computes from)."""
    return item.path if isinstance(item, Atom) else item.value.field.parts


def conditions_of(formula: Formula) -> list[Atom | Expr]:
    """A formula's conditions, in order (a repeated one as often as it stands)."""
    if isinstance(formula, (Atom, Expr)):
        return [formula]
    if isinstance(formula, Not):
        return conditions_of(formula.item)
    if isinstance(formula, (And, Or)):
        return [c for i in formula.items for c in conditions_of(i)]
    return []


def size(formula: Formula) -> int:
    """How many conditions a formula holds."""
    if isinstance(formula, (Atom, Expr)):
        return 1
    if isinstance(formula, Not):
        return size(formula.item)
    if isinstance(formula, (And, Or)):
        return sum(size(i) for i in formula.items)
    return 0


__all__ = [
    "LOGICAL_OPERATORS",
    "NOTHING",
    "SHAPE_OPERATORS",
    "And",
    "Atom",
    "Converted",
    "ElemMatch",
    "Expr",
    "Field",
    "Formula",
    "Not",
    "Or",
    "conditions_of",
    "conj",
    "disj",
    "evaluate",
    "key_of",
    "map_conditions",
    "merge",
    "neg",
    "parse",
    "path_of",
    "render",
    "size",
]
