"""Where the value at a path comes from, through one operation: its query-source form.

`atomdb_migrate.queries.translation` asks each condition of a filter, on
documents after an operation, of the documents before it. For that, each
operation on documents says where the value at a path then comes from, case
by case (`sources`): the stored value at another path (``move_field``), a
constant (``add_field``), a converted value (``convert``), and under which
condition on the stored document each case holds.

The forms are registered by the operation's type (``@sources.register``,
as Alembic's ``toimpl.py`` registers each operation's implementation), so
that a new operation adds its form here, in one place. The conditions are
the operations' own path checks (`atomdb_migrate.operations.paths`: "the
value is there", "a value can be set here"), written as formulas.

"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..core.conditions import Atom, Formula, conj, disj, neg
from ..operations.base import Operation
from ..operations.fields import (
    AddField,
    Convert,
    CopyField,
    MoveField,
    RemoveField,
    SetDefaultWhereMissing,
)
from ..operations.paths import (
    MISSING,
    MODEL_KEY,
    exists_formula,
    is_document_formula,
    is_null_formula,
    prefixes,
    settable_formula,
)
from .expressions import Converted, Expr, Field
from .formulas import evaluate, path_of
from .matching import Unsure

# ----------------------------------------------------------------------
# Where a value comes from, in the document as stored before an operation
# ----------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    """A value an operation set (`value` at the path `rest` inside it; `MISSING` for none)."""

    value: Any
    rest: tuple[str, ...] = ()


@dataclass(frozen=True)
class Doc:
    """Some document whose contents are not known (made by setting a path inside it)."""


@dataclass(frozen=True)
class Shape:
    """The stored value at `parts`, of the same kind but with other contents."""

    parts: tuple[str, ...]


Source = Field | Converted | Const | Doc | Shape

#: Each case: a condition on the stored document, and where the value then comes from.
Cases = list[tuple[Formula, Source]]


class Refused(Exception):
    """A condition the operation (or step) stands in the way of: its field, and why."""

    def __init__(self, item: Atom | Expr, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = item.origin or ".".join(path_of(item))


def _within(path: tuple[str, ...], parts: tuple[str, ...]) -> tuple[str, ...] | None:
    """What follows `parts` in `path`, if `path` is `parts` or inside it."""
    return path[len(parts) :] if path[: len(parts)] == parts else None


def _above(path: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether `path` holds `parts` (a strict prefix of it)."""
    return len(path) < len(parts) and parts[: len(path)] == path


@functools.singledispatch
def sources(op: Operation, path: tuple[str, ...]) -> Cases | None:
    """Where the value at `path` after `op` comes from; None where `op` leaves it alone.

    Each operation on documents registers its own form by type (below):
    a new one adds ``@sources.register(NewOperation)``. Operations on the
    collection change no document and ``rename_model`` is mapped apart
    (`translation`): they have none.

    An embedded model a carried value creates (null or missing before) holds
    its ``__model__`` after; a default is set only inside embedded models
    that are there (see `ops.blocked`).

    """
    raise TypeError(op)  # pragma: no cover - every operation on documents has its form


def _set_inside(settable: Formula, path: tuple[str, ...], target: tuple[str, ...]) -> Cases | None:
    """Above a default's path: a document where the default was set, else as stored."""
    if _above(path, target):
        return [(settable, Doc()), (neg(settable), Field(path))]
    return None


@sources.register(AddField)
def _add_field(op: AddField, path: tuple[str, ...]) -> Cases | None:
    settable = settable_formula(op.parts, op.embedded())
    rest = _within(path, op.parts)
    if rest is not None:
        return [(settable, Const(op.default, rest)), (neg(settable), Field(path))]
    return _set_inside(settable, path, op.parts)


@sources.register(SetDefaultWhereMissing)
def _set_default_where_missing(op: SetDefaultWhereMissing, path: tuple[str, ...]) -> Cases | None:
    settable = settable_formula(op.parts, op.embedded())
    rest = _within(path, op.parts)
    if rest is not None:
        there = exists_formula(op.parts)
        return [
            (disj([there, neg(settable)]), Field(path)),
            (conj([neg(there), settable]), Const(op.default, rest)),
        ]
    return _set_inside(settable, path, op.parts)


@sources.register(RemoveField)
def _remove_field(op: RemoveField, path: tuple[str, ...]) -> Cases | None:
    rest = _within(path, op.parts)
    if rest is not None:
        chain = conj([is_document_formula(p) for p in prefixes(op.parts)])
        return [(chain, Const(MISSING)), (neg(chain), Field(path))]
    return [(True, Shape(path))] if _above(path, op.parts) else None


@sources.register(CopyField)
def _copy_field(op: CopyField, path: tuple[str, ...]) -> Cases | None:
    return _carried(op, path, removes_source=False)


@sources.register(MoveField)
def _move_field(op: MoveField, path: tuple[str, ...]) -> Cases | None:
    return _carried(op, path, removes_source=True)  # rename_field too


def _carried(
    op: CopyField | MoveField, path: tuple[str, ...], removes_source: bool
) -> Cases | None:
    """A value carried from one path to another, and removed from the first (`removes_source`)."""
    embedded = op.embedded()
    src, dst = op.src_parts, op.dst_parts
    moved = conj([exists_formula(src), settable_formula(dst, embedded, carry=True)])
    rest = _within(path, dst)
    if rest is not None:
        return [(moved, Field(src + rest)), (neg(moved), Field(path))]
    made = path[:-1]
    if path[-1:] == (MODEL_KEY,) and _above(made, dst) and made in embedded:
        created = conj([moved, disj([neg(Atom(made, "$exists", True)), is_null_formula(made)])])
        return [(created, Const(embedded[made])), (neg(created), Field(path))]
    if removes_source and _within(path, src) is not None:
        return [(moved, Const(MISSING)), (neg(moved), Field(path))]
    if _above(path, dst):
        return [(moved, Doc()), (neg(moved), Field(path))]
    if removes_source and _above(path, src):
        return [(True, Shape(path))]
    return None


@sources.register(Convert)
def _convert(op: Convert, path: tuple[str, ...]) -> Cases | None:
    rest = _within(path, op.parts)
    if rest is None:
        return [(True, Shape(path))] if _above(path, op.parts) else None
    there = conj([exists_formula(op.parts), neg(Atom(op.parts, "$eq", None))])
    # A list, or a document (but atom-db's JSON date for "datetime"), never
    # converts: the step fails, and the document stays as it is stored.
    kinds = {"array"} if op.to == "datetime" else {"array", "object"}
    whole = Atom(op.parts, "$type", frozenset(kinds))
    if rest and op.to == "datetime":
        raise Refused(
            Atom(path, "$exists", True),
            f"{op!r} leaves a document it fails on as it is, so what is inside "
            "the field depends on whether it converts",
        )
    after: Source = Converted(op.to, Field(path)) if not rest else Const(MISSING)
    return [
        (conj([there, neg(whole)]), after),
        (disj([neg(there), whole]), Field(path)),
    ]


def decide(atom: Atom, value: Any, item: Atom | Expr | None = None) -> bool:
    """Whether a condition holds for a value an operation sets (`Const`); refused (for
    `item`, the filter's condition) where Python cannot decide it as the server would."""
    try:
        return evaluate(Atom((), atom.op, atom.arg), value)
    except Unsure as exc:
        raise Refused(
            item or atom, f"the condition cannot be decided on the value the step sets ({exc})"
        ) from None


__all__ = ["Cases", "Const", "Doc", "Refused", "Shape", "Source", "decide", "sources"]
