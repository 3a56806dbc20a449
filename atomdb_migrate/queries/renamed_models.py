"""Conditions on model names through ``ops.rename_model``.

A step renaming a model changes the ``__model__`` its documents store
(with their version), and ``upgrade`` rewrites the references to it in
every document of every collection, whatever its version
(`renames.rewrite_references`). A condition on a model name (``x.__model__``)
is rewritten to select, before, what it selects after: the old name where
the new one is asked, and never the old name where it is not.

"""

from __future__ import annotations

from typing import Any

import bson
from packaging.version import Version

from ..core.conditions import Atom, ElemMatch, Formula, disj
from ..exceptions import UntranslatableQueryError
from ..operations.paths import MODEL_KEY
from ..operations.rename_model import RenameModel
from ..steps.versions import StepGraph
from .expressions import Expr
from .formulas import SHAPE_OPERATORS, map_conditions
from .matching import equal, is_regex, regex_of
from .sources import Refused, decide


def through_rename_model(formula: Formula, op: RenameModel) -> Formula:
    """A condition on documents after `op`, as a condition on them before it: the
    document's own name is the step's to change (references were mapped for documents
    at every version, `through_reference_scans`)."""
    return map_conditions(
        formula,
        lambda a: _rename_model(a, op) if a.path == (MODEL_KEY,) else a,
        lambda e: _rename_model_expr(e, op),
    )


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
        for_old, for_new = decide(atom, old), decide(atom, new)
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
        raise Refused(atom, f"{op!r} changes the model names stored there")
    if _mentions_model(atom.arg):
        raise Refused(atom, f"{op!r} changes the model names inside the references it compares")
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


def through_reference_scans(formula: Formula, graph: StepGraph, head: Version) -> Formula:
    """Conditions on references (``x.__model__``) as asked of documents at any version.

    ``upgrade`` rewrites a renamed model's references in every document of
    every collection (`renames.rewrite_references`), whatever its version:
    one stored at or after the ``rename_model`` step may still refer to the
    old name, at any depth, and is found once upgraded under the new one.

    """
    renames = [
        (s, op)
        for s in graph.steps_to(head)
        if s.operations is not None
        for op in s.operations.operations
        if isinstance(op, RenameModel)
    ]
    current = formula
    for s, op in reversed(renames):

        def atom(a: Atom, op: RenameModel = op) -> Formula:
            # The document's own name is the step's to change (with its version).
            return a if a.path == (MODEL_KEY,) else _rename_model(a, op)

        try:
            current = map_conditions(current, atom, lambda e: e)
        except Refused as exc:
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
        raise Refused(expr, f"{op!r} changes the model names stored there")
    return expr


__all__ = ["string_range", "through_reference_scans", "through_rename_model"]
