"""A filter's formula through operations and steps: asked of the documents before them.

`through_step` takes a condition on documents after a step to one on the
documents before it, operation by operation, the last first: each
condition on a path an operation writes becomes the disjunction of that
operation's cases (`sources.sources`), each guarded by its condition on the
stored document. A value the operation sets is decided here, once
(`sources.decide`); a converted value is asked with ``$expr``. A Python
step lets conditions through only on the fields it declares it leaves
alone. `through_downgrade` does the same through a step's downgrade (for
code reading documents newer than itself).

Where a step stands in the way, `UntranslatableQueryError` names the field
and the step; past `MAX_CONDITIONS` a clause is refused rather than sent.

"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ..core.conditions import And, Atom, ElemMatch, Formula, Or, conj, disj, key_of, neg
from ..exceptions import ConversionError, UntranslatableQueryError
from ..operations.base import Operation
from ..operations.collection import CollectionOperation
from ..operations.conversions import convert_value
from ..operations.paths import MISSING
from ..operations.rename_model import RenameModel
from ..operations.running import StepOperations
from ..steps.versions import Step
from .expressions import Converted, Expr, Field
from .formulas import SHAPE_OPERATORS, conditions_of, map_conditions, path_of, size
from .matching import Unsure, values_at
from .renamed_models import through_rename_model
from .sources import Const, Doc, Origin, Refused, decide, sources


# ----------------------------------------------------------------------
# Mapping conditions back through an operation
# ----------------------------------------------------------------------
def _is_shape(atom: Atom) -> bool:
    return atom.op in SHAPE_OPERATORS or (atom.op == "$eq" and atom.arg is None)


def _atom_from(atom: Atom, source: Origin, what: str) -> Formula:
    if isinstance(source, Field):
        return Atom(source.parts, atom.op, atom.arg, atom.origin)
    if isinstance(source, Converted):
        if _to_datetime(source) and _holds_documents(atom.arg):
            raise Refused(
                atom,
                f"{what} leaves a document it fails on as it is: compare the converted "
                "value with a date",
            )
        return Expr(atom.op, atom.arg, source, atom.origin)
    if isinstance(source, Const):
        try:
            value = values_at(source.value, source.rest) if source.rest else source.value
        except Unsure:
            raise Refused(atom, f"the path runs into a list inside the value {what} sets") from None
        return decide(atom, value)
    if not _is_shape(atom):
        raise Refused(atom, f"{what} changes what {atom.dotted!r} holds")
    if isinstance(source, Doc):
        return decide(atom, {})
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


def _expr_from(expr: Expr, source: Origin, what: str) -> Formula:
    if isinstance(source, (Field, Converted)):
        value = _replace_field(expr.value, source)
        assert isinstance(value, Converted)
        return Expr(expr.op, expr.arg, value, expr.origin)
    if isinstance(source, Const):
        try:
            known = values_at(source.value, source.rest) if source.rest else source.value
            converted = _converted(known, expr.value)
        except Unsure:
            raise Refused(expr, f"the path runs into a list in the value {what} sets") from None
        return decide(Atom((), expr.op, expr.arg), converted, expr)
    raise Refused(expr, f"{what} changes what {'.'.join(expr.value.field.parts)!r} holds")


def _through_operation(formula: Formula, op: Operation) -> Formula:
    if isinstance(op, CollectionOperation):
        return formula  # indexes and validators change no document
    if isinstance(op, RenameModel):
        return through_rename_model(formula, op)

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

    return _split_touched(formula, op, lambda f: map_conditions(f, atom, expr))


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
    return any(sources(op, path_of(c)) is not None for c in conditions_of(formula))


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
    for item in conditions_of(formula):
        cases = sources(op, path_of(item))
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

        def source_of(path: tuple[str, ...], holds: dict[Any, bool] = holds) -> Origin | None:
            cases = sources(op, path)
            if cases is None:
                return None
            if len(cases) == 1:
                return cases[0][1]
            return cases[0][1] if holds[key_of(cases[0][0])] else cases[1][1]

        def atom(a: Atom, source_of: Callable[..., Origin | None] = source_of) -> Formula:
            source = source_of(a.path)
            return a if source is None else _atom_from(a, source, what)

        def expr(e: Expr, source_of: Callable[..., Origin | None] = source_of) -> Formula:
            source = source_of(e.value.field.parts)
            return e if source is None else _expr_from(e, source, what)

        literals = [g if holds[k] else neg(g) for k, g in guards.items()]
        branches.append(conj([*literals, map_conditions(formula, atom, expr)]))
    return disj(branches)


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
        path = path_of(item)
        if path[:1] == ("_id",):
            return  # a step may not change a document's _id
        if changes is None:
            raise Refused(
                item,
                "a Python step computes the document (declare the fields it changes "
                "with changes = [...] to let conditions on the others through)",
            )
        for change in changes:
            if _related(path, tuple(change.split("."))):
                raise Refused(item, f"a Python step declares it changes {change!r}")

    def atom(a: Atom) -> Formula:
        check(a)
        return a

    def expr(e: Expr) -> Formula:
        check(e)
        return e

    return map_conditions(formula, atom, expr)


def _function_part(step: Step) -> bool:
    """Whether the step runs a Python function (alone or after its operations)."""
    return step.operations is None or not step.server_side


#: The most conditions a version's clause may hold: past it the translation
#: is refused rather than sent (a chain moving one field back and forth
#: multiplies the cases at each step).
MAX_CONDITIONS = 400


def through_step(
    formula: Formula, step: Step, *, version: str = "", stored: bool = True
) -> Formula:
    """A condition on documents after `step`, as a condition on them before it.

    `version` (the documents' version) and `stored` (whether documents are
    known to be stored there) are for the error's message.

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
    except Refused as exc:
        raise UntranslatableQueryError(
            step.model, exc.field, step.source, exc.reason, version=version, stored=stored
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
            raise Refused(_own_condition(current), grew.format(limit=MAX_CONDITIONS, op=op))
    return current


def through_downgrade(
    formula: Formula, step: Step, *, version: str = "", stored: bool = True
) -> Formula:
    """A condition on a document as old code reads it back through `step`'s downgrade,
    as a condition on it as stored (``__on_newer__ = "downgrade"``); `version` and
    `stored` as for `through_step`.

    Raises
    ------
    UntranslatableQueryError
        Where the downgrade is a Python function (it computes the document
        old code reads), or the filter would grow past `MAX_CONDITIONS`.

    """
    if not conditions_of(formula):
        return formula
    down = step.downgrade_fn
    try:
        if not isinstance(down, StepOperations):
            raise Refused(
                _own_condition(formula),
                "a downgrade function computes the document this code reads from one stored "
                "at a newer version (__on_newer__ = 'downgrade'); upgrade the code again, or "
                "query the versions it knows (versions=)",
            )
        current = _through_operations(formula, down.operations, _GREW_DOWN)
    except Refused as exc:
        raise UntranslatableQueryError(
            step.model, exc.field, step.source, exc.reason, version=version, stored=stored
        ) from None
    return current


def _own_condition(formula: Formula) -> Atom | Expr:
    """The condition of the filter itself that a grown formula repeats most.

    Guards a step adds have no origin; each condition of the filter keeps
    its field as `origin` through every rewriting.

    """
    conditions = conditions_of(formula)
    counts: dict[str, int] = {}
    first: dict[str, Atom | Expr] = {}
    for item in conditions:
        if item.origin:
            counts[item.origin] = counts.get(item.origin, 0) + 1
            first.setdefault(item.origin, item)
    if counts:
        return first[max(counts, key=lambda origin: counts[origin])]
    return conditions[0] if conditions else Atom(("_id",), "$exists", True)


__all__ = ["MAX_CONDITIONS", "through_downgrade", "through_step"]
