"""Version-aware filters: a filter on today's fields that finds legacy documents too.

Until ``atomdb-migrate upgrade`` has run, a collection holds documents at
older versions. `version_filter` takes a filter written against the
model's current fields and maps each condition back through the steps of
every older version: where a field was renamed or moved, the condition is
asked of the old path; where a step set a constant (``add_field``), it is
decided in Python, once; where ``convert`` changed a value, it is asked of
the converted value with ``$expr``. The clause of each version goes under
``$or`` with the version's ``__version__`` values.

The mapping is exact: on a collection of documents at any version of the
chain, the result selects what the original filter selects once every
document is upgraded. Where it cannot be (a field a Python step computes),
`UntranslatableQueryError` says so; a Python step can declare what it
changes (``changes = [...]``) to let conditions on other fields through.

"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson import Decimal128
from packaging.version import Version

from ..core.storage import VERSION_KEY
from ..exceptions import ConversionError, InvalidQueryError, UntranslatableQueryError
from ..operations.base import Operation
from ..operations.collection import CollectionOperation
from ..operations.conversions import convert_value
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
from ..operations.rename_model import RenameModel
from ..operations.running import Operations
from ..steps.registry import MigrationRegistry
from ..steps.versions import Step, StepGraph, version_forms, version_key
from .expressions import Converted, Expr, Field
from .formulas import (
    SHAPE_OPERATORS,
    And,
    Atom,
    ElemMatch,
    Formula,
    Not,
    Or,
    conj,
    disj,
    evaluate,
    key_of,
    neg,
    parse,
    render,
)
from .matching import Unsure, equal, freeze, is_regex, regex_of, values_at

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


class _Refused(Exception):
    """A condition the operation (or step) stands in the way of: its field, and why."""

    def __init__(self, item: Atom | Expr, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = item.origin or ".".join(_path_of(item))


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
    (`_through_operation`): they have none.

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
        raise _Refused(
            Atom(path, "$exists", True),
            f"{op!r} leaves a document it fails on as it is, so what is inside "
            "the field depends on whether it converts",
        )
    after: Source = Converted(op.to, Field(path)) if not rest else Const(MISSING)
    return [
        (conj([there, neg(whole)]), after),
        (disj([neg(there), whole]), Field(path)),
    ]


# ----------------------------------------------------------------------
# Mapping conditions back through an operation
# ----------------------------------------------------------------------
def _decide(atom: Atom, value: Any, item: Atom | Expr | None = None) -> bool:
    try:
        return evaluate(Atom((), atom.op, atom.arg), value)
    except Unsure as exc:
        raise _Refused(
            item or atom, f"the condition cannot be decided on the value the step sets ({exc})"
        ) from None


def _is_shape(atom: Atom) -> bool:
    return atom.op in SHAPE_OPERATORS or (atom.op == "$eq" and atom.arg is None)


def _atom_from(atom: Atom, source: Source, what: str) -> Formula:
    if isinstance(source, Field):
        return Atom(source.parts, atom.op, atom.arg, atom.origin)
    if isinstance(source, Converted):
        if _to_datetime(source) and _holds_documents(atom.arg):
            raise _Refused(
                atom,
                f"{what} leaves a document it fails on as it is: compare the converted "
                "value with a date",
            )
        return Expr(atom.op, atom.arg, source, atom.origin)
    if isinstance(source, Const):
        try:
            value = values_at(source.value, source.rest) if source.rest else source.value
        except Unsure:
            raise _Refused(
                atom, f"the path runs into a list inside the value {what} sets"
            ) from None
        return _decide(atom, value)
    if not _is_shape(atom):
        raise _Refused(atom, f"{what} changes what {atom.dotted!r} holds")
    if isinstance(source, Doc):
        return _decide(atom, {})
    return Atom(source.parts, atom.op, atom.arg, atom.origin)


def _to_datetime(value: Converted | Field) -> bool:
    """Whether a conversion on the way is to a datetime (which takes a document)."""
    if isinstance(value, Field):
        return False
    return value.to == "datetime" or _to_datetime(value.inner)


def _holds_documents(arg: Any) -> bool:
    if isinstance(arg, ElemMatch):
        return True
    if isinstance(arg, (dict, list, tuple)):
        return isinstance(arg, dict) or any(isinstance(v, (dict, list)) for v in arg)
    return False


def _converted(value: Any, chain: Converted | Field) -> Any:
    """A known value taken through the conversions of `chain`, innermost first."""
    if isinstance(chain, Field):
        return value
    inner = _converted(value, chain.inner)
    if inner is MISSING or inner is None:
        return inner
    try:
        return convert_value(inner, chain.to)
    except ConversionError:
        return inner  # the step leaves such a document as it is


def _replace_field(chain: Converted | Field, source: Field | Converted) -> Converted | Field:
    if isinstance(chain, Field):
        return source
    return Converted(chain.to, _replace_field(chain.inner, source))


def _expr_from(expr: Expr, source: Source, what: str) -> Formula:
    if isinstance(source, (Field, Converted)):
        value = _replace_field(expr.value, source)
        assert isinstance(value, Converted)
        return Expr(expr.op, expr.arg, value, expr.origin)
    if isinstance(source, Const):
        try:
            known = values_at(source.value, source.rest) if source.rest else source.value
            converted = _converted(known, expr.value)
        except Unsure:
            raise _Refused(expr, f"the path runs into a list in the value {what} sets") from None
        return _decide(Atom((), expr.op, expr.arg), converted, expr)
    raise _Refused(expr, f"{what} changes what {'.'.join(expr.value.field.parts)!r} holds")


def _through_operation(formula: Formula, op: Operation) -> Formula:
    if isinstance(op, CollectionOperation):
        return formula  # indexes and validators change no document
    if isinstance(op, RenameModel):
        # References were mapped for documents at every version (`_through_reference_scans`).
        return _map(
            formula,
            lambda a: _rename_model(a, op) if a.path == (MODEL_KEY,) else a,
            lambda e: _rename_model_expr(e, op),
        )

    def atom(a: Atom) -> Formula:
        cases = sources(op, a.path)
        if cases is None:
            return a
        return disj(conj([guard, _atom_from(a, source, repr(op))]) for guard, source in cases)

    def expr(e: Expr) -> Formula:
        cases = sources(op, e.value.field.parts)
        if cases is None:
            return e
        return disj(conj([guard, _expr_from(e, source, repr(op))]) for guard, source in cases)

    return _split_touched(formula, op, lambda f: _map(f, atom, expr))


def _split_touched(
    formula: Formula, op: Operation, mapped: Callable[[Formula], Formula]
) -> Formula:
    """The formula through `op`: the parts it leaves alone as they are, the others mapped
    condition by condition or split on the operation's guards (`_factored`), the smaller."""
    if isinstance(formula, (And, Or)):
        touched = [i for i in formula.items if _touches(i, op)]
        if len(touched) < len(formula.items):
            join = conj if isinstance(formula, And) else disj
            kept = [i for i in formula.items if not _touches(i, op)]
            return join([*kept, _split_touched(join(touched), op, mapped)])
    if not _touches(formula, op):
        return formula
    plain = mapped(formula)
    factored = _factored(formula, op)
    return plain if factored is None or size(factored) >= size(plain) else factored


def _touches(formula: Formula, op: Operation) -> bool:
    return any(sources(op, _path_of(c)) is not None for c in _conditions(formula))


#: The most guards `_factored` splits a formula on (it makes 2**n copies).
MAX_FACTORED_GUARDS = 2


def _factored(formula: Formula, op: Operation) -> Formula | None:
    """The formula before `op`, split once on the guards its cases share; or None.

    Mapping condition by condition repeats an operation's guard (say, that
    ``copy_field`` copied) in each condition it rewrites, the conditions a
    previous step added on the path's parents too, so a chain multiplies
    them. Where every rewritten condition's cases are one guard and its
    negation, the formula is instead asked once under the guard and once
    under its negation: ``(G and F[G]) or (not G and F[not G])``.

    """
    guards: dict[Any, Formula] = {}
    for item in _conditions(formula):
        cases = sources(op, _path_of(item))
        if cases is None or (len(cases) == 1 and cases[0][0] is True):
            continue
        if len(cases) != 2 or key_of(neg(cases[0][0])) != key_of(cases[1][0]):
            return None
        guards.setdefault(key_of(cases[0][0]), cases[0][0])
    if not guards or len(guards) > MAX_FACTORED_GUARDS:
        return None
    what = repr(op)
    branches: list[Formula] = []
    for chosen in itertools.product((True, False), repeat=len(guards)):
        holds = dict(zip(guards, chosen, strict=True))

        def source_of(path: tuple[str, ...], holds: dict[Any, bool] = holds) -> Source | None:
            cases = sources(op, path)
            if cases is None:
                return None
            if len(cases) == 1:
                return cases[0][1]
            return cases[0][1] if holds[key_of(cases[0][0])] else cases[1][1]

        def atom(a: Atom, source_of: Callable[..., Source | None] = source_of) -> Formula:
            source = source_of(a.path)
            return a if source is None else _atom_from(a, source, what)

        def expr(e: Expr, source_of: Callable[..., Source | None] = source_of) -> Formula:
            source = source_of(e.value.field.parts)
            return e if source is None else _expr_from(e, source, what)

        literals = [g if holds[k] else neg(g) for k, g in guards.items()]
        branches.append(conj([*literals, _map(formula, atom, expr)]))
    return disj(branches)


def _mentions_model(value: Any) -> bool:
    if isinstance(value, ElemMatch):
        value = value.raw
    if isinstance(value, dict):
        return MODEL_KEY in value or any(_mentions_model(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_mentions_model(v) for v in value)
    return False


def _rename_model(atom: Atom, op: RenameModel) -> Formula:
    """References (and the document's own name) rewrite ``old`` to ``new``."""
    old, new = op.old_name, op.new_name
    if atom.path[-1:] == (MODEL_KEY,):
        if atom.op in SHAPE_OPERATORS:
            return atom
        for_old, for_new = _decide(atom, old), _decide(atom, new)
        if for_old == for_new:
            return atom
        values = [atom.arg] if atom.op == "$eq" else atom.arg if atom.op == "$in" else None
        if values is not None and not any(is_regex(v) for v in values):
            # No reference holds the old name afterwards; the new one, where it was old.
            kept = [v for v in values if not equal(v, old)] + ([old] if for_new else [])
            return Atom(atom.path, "$in", kept, atom.origin) if kept else False
        if for_new:
            # Satisfied where it was, or where the old name becomes the new one.
            return disj([atom, Atom(atom.path, "$eq", old, atom.origin)])
        if atom.op in ("$gt", "$gte", "$lt", "$lte") and isinstance(atom.arg, str):
            # Only strings compare with a string: the range as a regex, which can
            # then skip the old name (each value of a list apart).
            ranged = (string_range(atom.op, atom.arg), "")
            return _not_old(Atom(atom.path, "$regex", ranged, atom.origin), old)
        if atom.op == "$regex" or values is not None:
            # Satisfied where it was, but not by the old name (each value of a
            # list apart: the regex itself says "not the old name").
            return _not_old(atom, old)
        raise _Refused(atom, f"{op!r} changes the model names stored there")
    if _mentions_model(atom.arg):
        raise _Refused(atom, f"{op!r} changes the model names inside the references it compares")
    return atom


def _not_old(atom: Atom, old: str) -> Formula:
    """A ``$regex`` or ``$in`` condition that the value `old` no longer satisfies."""
    if atom.op == "$regex":
        pattern, options = atom.arg
        return Atom(atom.path, "$regex", (_excluding(pattern, old), options), atom.origin)
    kept: list[Any] = []
    for value in atom.arg:
        if is_regex(value):
            pattern, options = regex_of(value)
            kept.append(bson.Regex(_excluding(pattern, old), options))
        elif not equal(value, old):
            kept.append(value)
    return Atom(atom.path, "$in", kept, atom.origin) if kept else False


def _regex_char(c: str) -> str:
    """One character as a regex reads it literally (in a class too), in PCRE and in re."""
    if c.isalnum() and c.isascii():
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x20 or c == "\x7f" else "\\" + c


def string_range(op: str, bound: str) -> str:
    """A regex matching exactly the strings that ``{op: bound}`` selects (code point order,
    as the server compares strings without a collation)."""
    alternatives: list[str] = []
    for i, c in enumerate(bound):
        before = "".join(_regex_char(x) for x in bound[:i])
        if op in ("$lt", "$lte"):
            alternatives.append(before)  # a proper prefix of the bound
            if ord(c) > 0:
                alternatives.append(f"{before}[\\x00-{_regex_char(chr(ord(c) - 1))}][\\s\\S]*")
        else:
            alternatives.append(f"{before}[^\\x00-{_regex_char(c)}][\\s\\S]*")
    whole = "".join(_regex_char(x) for x in bound)
    if op in ("$lte", "$gte"):
        alternatives.append(whole)
    if op in ("$gt", "$gte"):
        alternatives.append(f"{whole}[\\s\\S]+")
    if not alternatives:
        return "(?!)"  # nothing is below the empty string
    return f"\\A(?:{'|'.join(alternatives)})(?![\\s\\S])"


def _excluding(pattern: str, old: str) -> str:
    """A PCRE pattern found where `pattern` is, in any string but `old` itself."""
    literal = "".join(_regex_char(c) for c in old)
    # (?![\s\S]) is the end of the text, read alike by PCRE and Python's re (mongomock).
    return rf"\A(?!(?-i:{literal})(?![\s\S]))(?s:.*?)(?:{pattern})"


def _through_reference_scans(formula: Formula, graph: StepGraph, head: Version) -> Formula:
    """Conditions on references (``x.__model__``) as asked of documents at any version.

    ``upgrade`` rewrites a renamed model's references in every document of
    every collection (`renames.rewrite_references`), whatever its version:
    one stored at or after the ``rename_model`` step may still refer to the
    old name, at any depth, and is found once upgraded under the new one.

    """
    renames = [
        (s, op)
        for s in sorted(graph.steps, key=lambda s: s.from_key)
        if s.to_key <= head and s.operations is not None
        for op in s.operations.operations
        if isinstance(op, RenameModel)
    ]
    current = formula
    for s, op in reversed(renames):

        def atom(a: Atom, op: RenameModel = op) -> Formula:
            # The document's own name is the step's to change (with its version).
            return a if a.path == (MODEL_KEY,) else _rename_model(a, op)

        try:
            current = _map(current, atom, lambda e: e)
        except _Refused as exc:
            raise UntranslatableQueryError(
                s.model,
                exc.field,
                s.source,
                f"{exc.reason}, in documents stored at any version (upgrade rewrites "
                "the references of every document)",
            ) from None
    return current


def _rename_model_expr(expr: Expr, op: RenameModel) -> Formula:
    if expr.value.field.parts[-1:] == (MODEL_KEY,):
        raise _Refused(expr, f"{op!r} changes the model names stored there")
    return expr


def _map(
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
        return neg(_map(formula.item, atom, expr))
    if isinstance(formula, And):
        return conj(_map(i, atom, expr) for i in formula.items)
    assert isinstance(formula, Or)
    return disj(_map(i, atom, expr) for i in formula.items)


# ----------------------------------------------------------------------
# Mapping through a step
# ----------------------------------------------------------------------
def _related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shortest = min(len(a), len(b))
    return a[:shortest] == b[:shortest]


def _through_function(formula: Formula, step: Step) -> Formula:
    """Conditions pass a Python step only on fields it declares it leaves alone."""
    changes = step.changes

    def check(item: Atom | Expr) -> None:
        path = _path_of(item)
        if path[:1] == ("_id",):
            return  # a step may not change a document's _id
        if changes is None:
            raise _Refused(
                item,
                "a Python step computes the document (declare the fields it changes "
                "with changes = [...] to let conditions on the others through)",
            )
        for change in changes:
            if _related(path, tuple(change.split("."))):
                raise _Refused(item, f"a Python step declares it changes {change!r}")

    def atom(a: Atom) -> Formula:
        check(a)
        return a

    def expr(e: Expr) -> Formula:
        check(e)
        return e

    return _map(formula, atom, expr)


def _function_part(step: Step) -> bool:
    """Whether the step runs a Python function (alone or after its operations)."""
    return step.operations is None or not step.server_side


#: The most conditions a version's clause may hold: past it the translation
#: is refused rather than sent (a chain moving one field back and forth
#: multiplies the cases at each step).
MAX_CONDITIONS = 400


def size(formula: Formula) -> int:
    """How many conditions a formula holds."""
    if isinstance(formula, (Atom, Expr)):
        return 1
    if isinstance(formula, Not):
        return size(formula.item)
    if isinstance(formula, (And, Or)):
        return sum(size(i) for i in formula.items)
    return 0


def through_step(formula: Formula, step: Step, *, version: str = "") -> Formula:
    """A condition on documents after `step`, as a condition on them before it.

    Raises
    ------
    UntranslatableQueryError
        Where the step stands in the way, naming the field and the step.

    """
    current: Formula = formula
    try:
        if _function_part(step):
            current = _through_function(current, step)
        if step.operations is not None:
            current = _through_operations(current, step.operations.operations, _GREW_UP)
    except _Refused as exc:
        raise UntranslatableQueryError(
            step.model, exc.field, step.source, exc.reason, version=version
        ) from None
    return current


#: Why a clause is refused at the limit, on the way up (after which operation) and down.
_GREW_UP = (
    "the filter would grow past {limit} conditions for the documents stored at this "
    "version, at this step (after {op!r}; the chain moves, copies or converts the fields "
    "it names, or their parents, many times); upgrade them first, or query a version at "
    "a time (versions=)"
)
_GREW_DOWN = (
    "the filter would grow past {limit} conditions for the documents stored at this newer "
    "version, read back through the downgrade; query a version at a time (versions=)"
)


def _through_operations(formula: Formula, operations: Sequence[Operation], grew: str) -> Formula:
    """A condition through operations, the last first; refused past `MAX_CONDITIONS`."""
    current = formula
    for op in reversed(operations):
        current = _through_operation(current, op)
        if size(current) > MAX_CONDITIONS:
            raise _Refused(_own_condition(current), grew.format(limit=MAX_CONDITIONS, op=op))
    return current


def through_downgrade(formula: Formula, step: Step, *, version: str = "") -> Formula:
    """A condition on a document as old code reads it back through `step`'s downgrade,
    as a condition on it as stored (``__on_newer__ = "downgrade"``).

    Raises
    ------
    UntranslatableQueryError
        Where the downgrade is a Python function (it computes the document
        old code reads), or the filter would grow past `MAX_CONDITIONS`.

    """
    if not _conditions(formula):
        return formula
    down = step.downgrade_fn
    try:
        if not isinstance(down, Operations):
            raise _Refused(
                _own_condition(formula),
                "a downgrade function computes the document this code reads from one stored "
                "at a newer version (__on_newer__ = 'downgrade'); upgrade the code again, or "
                "query the versions it knows (versions=)",
            )
        current = _through_operations(formula, down.operations, _GREW_DOWN)
    except _Refused as exc:
        raise UntranslatableQueryError(
            step.model, exc.field, step.source, exc.reason, version=version
        ) from None
    return current


def _own_condition(formula: Formula) -> Atom | Expr:
    """The condition of the filter itself that a grown formula repeats most.

    Guards a step adds have no origin; each condition of the filter keeps
    its field as `origin` through every rewriting.

    """
    conditions = _conditions(formula)
    counts: dict[str, int] = {}
    first: dict[str, Atom | Expr] = {}
    for item in conditions:
        if item.origin:
            counts[item.origin] = counts.get(item.origin, 0) + 1
            first.setdefault(item.origin, item)
    if counts:
        return first[max(counts, key=lambda origin: counts[origin])]
    return conditions[0] if conditions else Atom(("_id",), "$exists", True)


def _path_of(item: Atom | Expr) -> tuple[str, ...]:
    return item.path if isinstance(item, Atom) else item.value.field.parts


def _conditions(formula: Formula) -> list[Atom | Expr]:
    if isinstance(formula, (Atom, Expr)):
        return [formula]
    if isinstance(formula, Not):
        return _conditions(formula.item)
    if isinstance(formula, (And, Or)):
        return [c for i in formula.items for c in _conditions(i)]
    return []


# ----------------------------------------------------------------------
# version_filter
# ----------------------------------------------------------------------
def _forms(version: Version) -> list[Any]:
    """The ``__version__`` values a version is stored as (`version_forms`), and as a
    Decimal128 for a decimal version (``Decimal128("1.5")`` is not the double 1.5)."""
    forms = version_forms(version)
    if isinstance(forms[-1], float):
        forms.append(Decimal128(str(version)))
    return forms


def model_of(model: Any) -> tuple[str, Version, StepGraph]:
    registry = MigrationRegistry.instance()
    name = registry.resolve(model if isinstance(model, str) else model.__model__)
    cls = registry.models.get(name)
    if cls is None:
        from ..exceptions import UnknownModelError

        raise UnknownModelError(name, list(registry.models))
    return name, cls.__parsed_version__, registry.graph(name)


def _legacy_versions(graph: StepGraph, head: Version) -> dict[Version, tuple[Step, ...]]:
    """Every version the chain upgrades to `head` from, with its steps."""
    found: dict[Version, tuple[Step, ...]] = {}
    for s in graph.steps:
        if s.from_key < head:
            plan = graph.plan(str(s.from_key), head, head=head)
            if plan.kind == "migrate":
                found[s.from_key] = plan.steps
    return found


def _encoded(query: dict[str, Any]) -> bytes | str:
    try:
        return bson.encode({"q": query})
    except Exception:  # a value BSON cannot hold: the server refuses it anyway
        return repr(query)


def version_filter(
    model: Any, query: dict[str, Any] | None = None, *, versions: Iterable[Any] | None = None
) -> dict[str, Any]:
    """A filter on the model's current fields that selects legacy documents too.

    Parameters
    ----------
    model: type or str
        The versioned model, or its ``__model__`` name.
    query: dict
        A filter written against the model's current fields (see
        docs/queries.md for the operators).
    versions: iterable, optional
        The older ``__version__`` values still stored (as read, or as
        versions; None for documents without one). Clauses are made for
        these only; by default, for every version the model's steps
        upgrade from. The current version is always matched.

    Returns
    -------
    filter: dict
        The filter itself where no stored version needs another clause;
        otherwise an ``$or`` of one clause per group of versions.

    Raises
    ------
    InvalidQueryError
        For a filter outside the grammar.
    UntranslatableQueryError
        Where a Python step computes (or may change) a field the filter
        names, for a version still stored.

    """
    if isinstance(versions, (str, bytes)):
        raise TypeError(f"versions must be a list of stored versions, not {versions!r}")
    # Nothing kept (in the cache, in the result) may be the caller's own list or dict.
    original = _detached(query)
    stored = None if versions is None else _detached(list(versions))
    try:
        key = _cache_key(model, original, stored)
    except Exception:  # a value that has no key: translate it each time
        key = None
    found = _cache.get(key) if key is not None else None
    if found is None:
        try:
            found = _version_filter(model, original, stored)
        except Unsure as exc:
            raise InvalidQueryError(None, f"a value version_filter cannot compare: {exc}") from None
        if key is not None:
            if len(_cache) >= CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
            _cache[key] = found
    return copy.deepcopy(found)


def _detached(query: Any) -> Any:
    """A deep copy of a filter (or of stored versions), sharing nothing with the caller's."""
    if query is None:
        return {}
    try:
        return copy.deepcopy(dict(query) if isinstance(query, Mapping) else query)
    except Exception:  # a value that cannot be copied: the server refuses it anyway
        return dict(query) if isinstance(query, Mapping) else query


#: How many translated filters are kept (the query guard translates each query).
CACHE_SIZE = 512

_cache: dict[Any, dict[str, Any]] = {}


def _cache_key(model: Any, query: dict[str, Any], versions: list[Any] | None) -> Any:
    name = model if isinstance(model, str) else getattr(model, "__model__", None)
    registry = MigrationRegistry.instance()
    stored = None if versions is None else tuple(freeze(v) for v in versions)
    return (name, registry.generation, id(registry), freeze(query), stored)


def _version_filter(
    model: Any, original: dict[str, Any], versions: Iterable[Any] | None
) -> dict[str, Any]:
    formula = parse(original)
    name, head, graph = model_of(model)
    groups = _groups(name, graph, head, versions)
    if not groups and not _newer_groups(name, graph, head, versions):
        return original
    # The upgrade rewrites the references of every document, at any version.
    everywhere = _through_reference_scans(formula, graph, head)
    if key_of(everywhere) != key_of(formula):
        formula, original = everywhere, render(everywhere)
        if everywhere is False:
            return original  # no document matches once upgraded
    plain = _encoded(render(formula))
    clauses: dict[bytes | str, tuple[list[Any], dict[str, Any]]] = {}
    excluded: list[Any] = []  # versions none of whose documents can match
    newer = _newer_groups(name, graph, head, versions)
    for version, (steps, forms) in [*groups.items(), *newer.items()]:
        translated: Formula = formula
        for s in reversed(steps):
            if version > head:  # read back through the downgrades, the latest first
                translated = through_downgrade(translated, s, version=str(version))
            else:
                translated = through_step(translated, s, version=str(version))
        if translated is False:
            excluded.extend(forms)
            continue
        clause = render(translated)
        key = _encoded(clause)
        if key == plain:
            continue  # the filter as it is selects the right ones
        entry = clauses.setdefault(key, ([], clause))
        entry[0].extend(f for f in forms if not any(_same(f, g) for g in entry[0]))
    if not clauses and not excluded:
        return original
    translated_forms = excluded + [f for forms, _ in clauses.values() for f in forms]
    rest = _with_version({"$nin": translated_forms}, original)
    if not clauses:
        return rest
    joined = [rest] + [_with_version({"$in": forms}, clause) for forms, clause in clauses.values()]
    return {"$or": joined}


def _same(a: Any, b: Any) -> bool:
    return version_key(a) == version_key(b)


def _with_version(condition: Any, clause: dict[str, Any]) -> dict[str, Any]:
    if VERSION_KEY in clause:  # pragma: no cover - the parser refuses it
        return {"$and": [{VERSION_KEY: condition}, clause]}
    return {VERSION_KEY: condition, **clause}


def reads_newer_downgraded(name: str) -> bool:
    """Whether the model's code reads a document newer than itself through the downgrades."""
    cls = MigrationRegistry.instance().models.get(name)
    return getattr(cls, "__on_newer__", None) == "downgrade"


def _newer_groups(
    name: str, graph: StepGraph, head: Version, versions: Iterable[Any] | None
) -> dict[Version, tuple[tuple[Step, ...], list[Any]]]:
    """The versions newer than the code that it reads back through downgrades (``__on_newer__
    = "downgrade"``): their downgrade steps, latest first, and ``__version__`` values."""
    if not reads_newer_downgraded(name):
        return {}
    found: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    raws: list[Any] = (
        sorted({str(s.to_key) for s in graph.steps if s.to_key > head})
        if versions is None
        else list(versions)
    )
    for raw in raws:
        plan = graph.plan(raw, head, head=head)
        if plan.kind != "newer" or plan.stored is None:
            continue
        back = graph.plan(raw, head, head=plan.stored, downgrade=True)
        if back.kind != "migrate":
            continue  # no way back: reading such a document raises
        _, forms = found.setdefault(plan.stored, (back.steps, _forms(plan.stored)))
        if not isinstance(raw, Version) and not any(_same(raw, f) for f in forms):
            forms.append(raw)
    return found


def _groups(
    name: str, graph: StepGraph, head: Version, versions: Iterable[Any] | None
) -> dict[Version, tuple[tuple[Step, ...], list[Any]]]:
    """The legacy versions to make clauses for: their steps and ``__version__`` values."""
    legacy = _legacy_versions(graph, head)
    if versions is None:
        return {v: (steps, _forms(v)) for v, steps in legacy.items()}
    groups: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    for raw in versions:
        plan = graph.plan(raw if not isinstance(raw, Version) else str(raw), head, head=head)
        if plan.kind != "migrate" or plan.stored is None:
            continue
        _, forms = groups.setdefault(plan.stored, (plan.steps, _forms(plan.stored)))
        if not isinstance(raw, Version) and not any(_same(raw, f) for f in forms):
            forms.append(raw)
    return groups


__all__ = ["sources", "through_step", "version_filter"]
