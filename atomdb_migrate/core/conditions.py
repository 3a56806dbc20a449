"""Conditions on a document's paths, joined into formulas and written as a filter.

A formula is one condition per path and operator (`Atom`), joined by
`And`, `Or` and `Not`, or a constant (True, False). The negated operators
are `Not`: ``{"a": {"$ne": 1}}`` is ``Not(Atom(a, $eq, 1))``, which is
what MongoDB means by it (a document without ``a`` matches). `conj`,
`disj` and `neg` build formulas simplified; `render` writes one as a
MongoDB filter, joining the conditions on one field into one document, so
the server can use an index on it.

Two parts of the package build formulas, and both from here:

- the operations (`atomdb_migrate.operations.paths`) write their path
  checks ("the value is there", "a value can be set here") as formulas, and
  their query conditions (the fast form of a step) as those formulas
  rendered (`filters_of`);
- the queries (`atomdb_migrate.queries`) parse a filter into a formula,
  map it back through the steps, and render it again.

A condition on a value the server computes (`Computed`, ``$expr``) is the
queries' own kind: it renders itself.

"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from bson import Regex

#: The ``$type`` names of BSON's number types.
NUMBER_TYPES = ("int", "long", "double", "decimal")

#: Operators joining filters.
LOGICAL_OPERATORS = ("$and", "$or", "$nor")

#: A filter no document matches (and the server answers from the ``_id`` index).
NOTHING: dict[str, Any] = {"_id": {"$in": []}}


def freeze(value: Any) -> Any:
    """A hashable key for a value that keeps BSON's distinctions (``1``, ``1.0``, ``True``)."""
    if isinstance(value, dict):
        return ("dict", tuple((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(v) for v in value)))
    frozen = getattr(value, "frozen_key", None)
    if frozen is not None:
        return frozen
    return (type(value).__name__, repr(value))


def missing_satisfies(op: str, arg: Any) -> bool | None:
    """Whether a missing value satisfies one condition, as the server decides; None
    for an operator this does not know.

    Null matches a missing value (``$eq``, ``$in``, and ``$gte``/``$lte``
    with null); nothing else does, but ``{"$exists": False}``.

    """
    if op == "$exists":
        return not arg
    if op in ("$eq", "$gte", "$lte"):
        return arg is None
    if op == "$in":
        return any(item is None for item in arg)
    if op in ("$gt", "$lt", "$regex", "$type"):
        return False
    return None


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


class Computed:
    """A condition on a value the server computes from the document, written as
    ``$expr`` (`atomdb_migrate.queries.expressions.Expr`)."""

    @property
    def key(self) -> Any:
        """What tells two conditions apart (equal keys: the same condition)."""
        raise NotImplementedError

    def expression(self) -> Any:
        """The aggregation expression true where the condition holds."""
        raise NotImplementedError


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


Formula = Union[bool, Atom, Computed, And, Or, Not]  # noqa: UP007 - a runtime alias


def key_of(formula: Formula) -> Any:
    return formula if isinstance(formula, bool) else formula.key


def _missing_satisfies(atom: Atom) -> bool | None:
    if isinstance(atom.arg, ElemMatch):
        return False  # a missing value is no list
    return missing_satisfies(atom.op, atom.arg)


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
# Writing a formula as a filter
# ----------------------------------------------------------------------
def render(formula: Formula) -> dict[str, Any]:
    """A formula as a MongoDB filter."""
    if formula is True:
        return {}
    if formula is False:
        return dict(NOTHING)
    return _sugar(_render(formula))


def filters_of(formula: Formula) -> list[dict[str, Any]]:
    """A formula as filters that all hold where it holds, for the caller to join with
    others: of a conjunction, one for each path its conditions name (in the order
    named) and one for each of its other parts; none for True."""
    if formula is True:
        return []
    groups: dict[Any, list[Formula]] = {}
    for i, item in enumerate(formula.items if isinstance(formula, And) else (formula,)):
        condition = item.item if isinstance(item, Not) else item
        groups.setdefault(condition.path if isinstance(condition, Atom) else i, []).append(item)
    return [render(group[0] if len(group) == 1 else And(tuple(group))) for group in groups.values()]


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
    if isinstance(formula, Computed):
        return {"$expr": formula.expression()}
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
        if isinstance(inner, Computed):
            return {"$expr": {"$not": [inner.expression()]}}
        return {"$nor": [_render(inner)]}
    if isinstance(formula, Or):
        return {"$or": [_render(i) for i in formula.items]}
    rendered = [_render(i) for i in formula.items]
    merged = merge(rendered)
    return merged if merged is not None else {"$and": rendered}


def is_operators(value: Any) -> bool:
    """Whether a field's condition is a document of operators (``{"$gt": 1}``)."""
    if not isinstance(value, Mapping) or not value:
        return False
    dollar = [isinstance(k, str) and k.startswith("$") for k in value]
    return all(dollar) if dollar[0] else False


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
                or not is_operators(before)
                or not is_operators(value)
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
    "NOTHING",
    "NUMBER_TYPES",
    "And",
    "Atom",
    "Computed",
    "ElemMatch",
    "Formula",
    "Not",
    "Or",
    "conj",
    "disj",
    "filters_of",
    "freeze",
    "key_of",
    "merge",
    "missing_satisfies",
    "neg",
    "render",
]
