"""Checksums of steps: a step applied to a database must not change afterwards.

A database upgraded through a step, and another upgraded through an edited
copy of it, hold different documents for the same version, and nothing says
so. Each upgrade run records, in its history record, the checksum of every
step it takes documents through; ``atomdb-migrate check --checksums`` (and
``check --pending``) compares them with the steps as they are now, and
``atomdb-migrate stamp --accept-checksums`` records the new ones after
review.

The checksum is of the module's code, not its text: it is taken from the
syntax tree, without the docstrings, so a comment, a docstring or a
reformat does not change it, and any change to what runs does. A step
registered in code (not from a module) is checksummed from its operations
and its function's source, where Python has it.

"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .versions import Step

#: The history record's field that holds the checksums a run recorded.
FIELD = "checksums"


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_checksum(source: str) -> str:
    """The checksum of Python code: of its syntax tree without docstrings.

    Raises
    ------
    SyntaxError
        If the text is not Python.

    """
    tree = _without_docstrings(ast.parse(textwrap.dedent(source)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def step_checksum(step: Step) -> str | None:
    """The checksum of a step: of its module, or of its operations and function.

    None where there is nothing to take it from (a function whose source
    Python does not have).

    """
    path = Path(step.source)
    if step.source.endswith(".py") and path.is_file():
        try:
            return code_checksum(path.read_text())
        except (OSError, SyntaxError, ValueError):
            return None
    parts: list[str] = []
    if step.operations is not None:
        parts.append(repr(step.operations))
    if not step.server_side:
        function = (
            step.upgrade_fn
            if step.operations is None
            else getattr(step.upgrade_fn, "__wrapped__", None)
        )
        try:
            parts.append(code_checksum(inspect.getsource(function)))  # type: ignore[arg-type]
        except (OSError, TypeError, SyntaxError):
            return None
    if not parts:
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def describe(step: Step) -> dict[str, Any]:
    """A step as its history records it: model, versions, module, checksum."""
    return {
        "model": step.model,
        "from": step.from_version,
        "to": step.to_version,
        "source": step.source,
        "checksum": step_checksum(step),
    }


def recorded(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest recorded checksum of each step, from history records newest first."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        for entry in record.get(FIELD) or []:
            if not isinstance(entry, dict) or not entry.get("checksum"):
                continue
            key = (str(entry.get("model")), str(entry.get("from")), str(entry.get("to")))
            if key not in found:
                found[key] = {**entry, "recorded_at": record.get("started_at")}
    return found


def changed(
    steps: Iterable[Step], records: Iterable[dict[str, Any]]
) -> list[tuple[Step, dict[str, Any]]]:
    """The steps whose checksum differs from the one last recorded, with that record."""
    latest = recorded(records)
    found = []
    for s in steps:
        entry = latest.get((s.model, s.from_version, s.to_version))
        if entry is None:
            continue
        now = step_checksum(s)
        if now is not None and now != entry["checksum"]:
            found.append((s, entry))
    return found


__all__ = ["changed", "code_checksum", "describe", "recorded", "step_checksum"]
