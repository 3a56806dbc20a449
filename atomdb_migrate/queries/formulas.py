"""Query filters as formulas: parsed, simplified, evaluated and written back.

`atomdb_migrate.queries` rewrites a filter condition by condition, so a
filter is first parsed into a formula of one condition per field and
operator (`Atom`), joined by `And`, `Or` and `Not`. The negated operators
become `Not`: ``{"a": {"$ne": 1}}`` is ``Not(Atom(a, $eq, 1))``, which is
what MongoDB means by it (a document without ``a`` matches). A formula is
written back as a filter by `render`, which joins conditions on one field
into one document again, so the server can use an index on it.

The grammar (anything else raises `InvalidQueryError`):

- ``$and``, ``$or``, ``$nor`` at any level of a filter;
- on a field (dotted paths, ``_id``): a value (equality, or a regex),
  ``$eq $ne $gt $gte $lt $lte $in $nin $exists $regex`` (with
  ``$options``), ``$not``, ``$elemMatch``, ``$type``.

"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from bson import Decimal128, Int64, ObjectId, Regex

from ..core.storage import VERSION_KEY
from ..exceptions import InvalidQueryError, short_repr
from ..operations.paths import MISSING
from .expressions import Converted, Expr, Field, condition_expr
from .matching import NUMBER_TYPES, Unsure, freeze, matches, regex_of, type_names, values_at

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

#: Operators joining filters.
LOGICAL_OPERATORS = ("$and", "$or", "$nor")

#: Conditions that only ask what a value is (there, a document, null):
#: they hold the same for any document (see `queries`).
SHAPE_OPERATORS = ("$exists", "$type")

#: A filter no document matches (and the server answers from the ``_id`` index).
NOTHING: dict[str, Any] = {"_id": {"$in": []}}

_COMPARABLE = (str, int, float, datetime, ObjectId, Int64, Decimal128, type(None))


# ----------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------
@dataclass(frozen=True)
class ElemMatch:
    """An ``$elemMatch`` argument: its formula (paths relative to an element) and as given."""

    formula: Formula = field(compare=False)
    raw: Any = field(compare=False)
    #: Whether it holds operators on the element itself (``{"$gt": 1}``), not a
    #: filter on the element's fields (``{"k": 1}``).
    on_element: bool = field(default=False, compare=False)

    @property
    def frozen_key(self) -> Any:
        return ("elemMatch", freeze(self.raw))


@dataclass(frozen=True)
class Atom:
    """One condition: the value at `path` satisfies `op` with `arg`.

    `op` is one of ``$eq $gt $gte $lt $lte $in $exists $regex $type
    $elemMatch`` (``$exists`` with True; ``$regex`` with its pattern and
    option letters; ``$type`` with a frozenset of type names).

    """

    path: tuple[str, ...]
    op: str
    arg: Any
    #: The field of the filter the condition comes from, for messages.
    origin: str = field(default="", compare=False)

    @property
    def key(self) -> Any:
        return ("atom", self.path, self.op, freeze(self.arg))

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class And:
    items: tuple[Formula, ...]

    @property
    def key(self) -> Any:
        return ("and", tuple(key_of(i) for i in self.items))


@dataclass(frozen=True)
class Or:
    items: tuple[Formula, ...]

    @property
    def key(self) -> Any:
        return ("or", tuple(key_of(i) for i in self.items))


@dataclass(frozen=True)
class Not:
    item: Formula

    @property
    def key(self) -> Any:
        return ("not", key_of(self.item))


Formula = Union[bool, Atom, Expr, And, Or, Not]  # noqa: UP007 - a runtime alias


def key_of(formula: Formula) -> Any:
    return formula if isinstance(formula, bool) else formula.key


def _missing_satisfies(atom: Atom) -> bool | None:
    try:
        return evaluate(atom, MISSING)
    except Unsure:
        return None


def _flatten(items: Any, kind: type[And] | type[Or], absorbing: bool) -> dict[Any, Formula] | bool:
    """The parts of a conjunction (`kind` And, `absorbing` False) or a disjunction (Or,
    True), flattened and without repeats; `absorbing` where one part, or a part and its
    negation, decide it."""
    flat: dict[Any, Formula] = {}
    for item in items:
        for part in item.items if isinstance(item, kind) else (item,):
            if part is absorbing:
                return absorbing
            if part is not (not absorbing):
                flat.setdefault(key_of(part), part)
    for part in flat.values():
        if isinstance(part, Not) and key_of(part.item) in flat:
            return absorbing
    return flat


def conj(items: Any) -> Formula:
    """The conjunction of formulas, simplified."""
    flat = _flatten(items, And, False)
    if isinstance(flat, bool):
        return flat
    # A condition that a missing value fails says the field is there.
    present = {
        p.path
        for p in flat.values()
        if isinstance(p, Atom) and p.op != "$exists" and _missing_satisfies(p) is False
    }
    kept = [
        p
        for p in flat.values()
        if not (isinstance(p, Atom) and p.op == "$exists" and p.path in present and p.arg is True)
    ]
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else And(tuple(kept))


def disj(items: Any) -> Formula:
    """The disjunction of formulas, simplified."""
    flat = _flatten(items, Or, True)
    if isinstance(flat, bool):
        return flat
    kept = list(flat.values())
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else Or(tuple(kept))


def neg(item: Formula) -> Formula:
    """The negation of a formula."""
    if isinstance(item, bool):
        return not item
    if isinstance(item, Not):
        return item.item
    return Not(item)


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


def _is_operators(value: Any) -> bool:
    if not isinstance(value, Mapping) or not value:
        return False
    dollar = [isinstance(k, str) and k.startswith("$") for k in value]
    return all(dollar) if dollar[0] else False


def _field_condition(path: tuple[str, ...], value: Any, origin: str) -> Formula:
    if isinstance(value, Mapping) and "$ref" in value and "$id" in value:
        return Atom(path, "$eq", value, origin)  # a DBRef, compared whole
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if not _is_operators(value):
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
        if not _is_operators(arg):
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
        if _is_operators(arg) and not logical
        else parse(arg, where=origin)
    )
    on_element = _is_operators(arg) and not logical
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
# Writing a formula back as a filter
# ----------------------------------------------------------------------
def render(formula: Formula) -> dict[str, Any]:
    """A formula as a MongoDB filter."""
    if formula is True:
        return {}
    if formula is False:
        return dict(NOTHING)
    return _sugar(_render(formula))


def _argument(atom: Atom) -> dict[str, Any]:
    if atom.op == "$regex":
        pattern, options = atom.arg
        return {"$regex": pattern, "$options": options} if options else {"$regex": pattern}
    if atom.op == "$type":
        names = sorted(atom.arg)
        if atom.arg == frozenset(NUMBER_TYPES):
            return {"$type": "number"}
        return {"$type": names[0] if len(names) == 1 else names}
    if atom.op == "$elemMatch":
        return {"$elemMatch": atom.arg.raw}
    return {atom.op: atom.arg}


def _render(formula: Formula) -> dict[str, Any]:
    if isinstance(formula, bool):
        return {} if formula else dict(NOTHING)
    if isinstance(formula, Atom):
        return {formula.dotted: _argument(formula)}
    if isinstance(formula, Expr):
        return {"$expr": condition_expr(formula)}
    if isinstance(formula, Not):
        inner = formula.item
        if isinstance(inner, Atom):
            if inner.op == "$eq":
                return {inner.dotted: {"$ne": inner.arg}}
            if inner.op == "$in":
                return {inner.dotted: {"$nin": inner.arg}}
            if inner.op == "$exists":
                return {inner.dotted: {"$exists": False}}
            return {inner.dotted: {"$not": _argument(inner)}}
        if isinstance(inner, Expr):
            return {"$expr": {"$not": [condition_expr(inner)]}}
        return {"$nor": [_render(inner)]}
    if isinstance(formula, Or):
        return {"$or": [_render(i) for i in formula.items]}
    rendered = [_render(i) for i in formula.items]
    merged = merge(rendered)
    return merged if merged is not None else {"$and": rendered}


def merge(filters: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Filters joined in one document, where no two say different things of one key."""
    merged: dict[str, Any] = {}
    for one in filters:
        for key, value in one.items():
            if key not in merged:
                merged[key] = value
                continue
            before = merged[key]
            if (
                key.startswith("$")
                or not _is_operators(before)
                or not _is_operators(value)
                or before.keys() & value.keys()
            ):
                return None
            merged[key] = {**before, **value}
    return merged


def _sugar(query: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"$eq": 1}}`` as ``{"a": 1}``, throughout."""
    out: dict[str, Any] = {}
    for key, value in query.items():
        if key in LOGICAL_OPERATORS:
            out[key] = [_sugar(v) for v in value]
        elif (
            not key.startswith("$")
            and isinstance(value, dict)
            and list(value) == ["$eq"]
            and not isinstance(value["$eq"], (dict, re.Pattern, Regex))
        ):
            out[key] = value["$eq"]
        else:
            out[key] = value
    return out


__all__ = [
    "And",
    "Atom",
    "Converted",
    "Expr",
    "Field",
    "Formula",
    "Not",
    "Or",
    "conj",
    "disj",
    "evaluate",
    "neg",
    "parse",
    "render",
]
