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
reformat does not change it, and any change to what runs does. The
module's ``schema = {...}``, the snapshot of the model's fields that
``check`` and autogenerate read, is metadata, not code: it is left out
(unless the module's own code reads it). A
step registered in code (not from a module) is checksummed from its
operations and its function's source, where Python has it.

What a step module imports runs too: each module of the project's own that
it imports, directly or through another such module, has its checksum
recorded beside the step's (``imports``: module name to checksum). A
module is the project's own when its file lies under the project's
directory (the nearest ``pyproject.toml`` up from the step module) and
outside the standard library and every installed package
(``site-packages``, a virtual environment inside the project included);
atomdb-migrate itself is never counted.

A checksum recorded by an earlier release (no ``imports``) was taken of
the whole module, schema included: it is compared as it was taken.

"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import site
import sys
import sysconfig
import textwrap
import tokenize
from collections.abc import Iterable, Iterator
from functools import cache, lru_cache
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any

from ..steps.versions import Step

#: The history record's field that holds the checksums a run recorded.
FIELD = "checksums"

#: The names a step module assigns that are metadata, not code: left out of
#: its checksum.
METADATA = frozenset({"schema"})

#: Directory names that hold installed packages, wherever they are.
INSTALLED = frozenset({"site-packages", "dist-packages"})

#: The file that marks a project's directory.
PROJECT_FILE = "pyproject.toml"


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


def _without_metadata(tree: ast.Module) -> ast.Module:
    """The module without its top-level assignments of `METADATA` names that its
    code never reads (a name the code reads is code)."""
    read = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store)
    }

    def is_metadata(node: ast.stmt) -> bool:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            return False
        return all(isinstance(t, ast.Name) and t.id in METADATA - read for t in targets)

    tree.body = [node for node in tree.body if not is_metadata(node)] or [ast.Pass()]
    return tree


def _digest(tree: ast.AST) -> str:
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def source_text(path: Path) -> str:
    """A module's text, as Python reads it: in UTF-8, or in the encoding its coding
    line declares where it is not UTF-8 (a text UTF-8 reads is read as before,
    so the checksums recorded from it still match).

    Raises
    ------
    OSError, ValueError
        If the file cannot be read, or decoded in any of them.

    """
    try:
        return path.read_text()
    except UnicodeDecodeError:
        with tokenize.open(path) as source:
            return source.read()


def code_checksum(source: str) -> str:
    """The checksum of Python code: of its syntax tree without docstrings.

    Raises
    ------
    SyntaxError
        If the text is not Python.

    """
    return _digest(_without_docstrings(ast.parse(textwrap.dedent(source))))


def module_checksum(source: str) -> str:
    """The checksum of a step module's code: without docstrings, and without its
    ``schema`` (see `METADATA`).

    Raises
    ------
    SyntaxError
        If the text is not Python.

    """
    facts = _parsed(source, "") if textwrap.dedent(source) == source else None
    if facts is not None:  # one parse for this and the module's imports
        return facts[2]
    tree = _without_docstrings(ast.parse(textwrap.dedent(source)))
    assert isinstance(tree, ast.Module)
    return _digest(_without_metadata(tree))


def _module_file(step: Step) -> Path | None:
    path = Path(step.source)
    return path if step.source.endswith(".py") and path.is_file() else None


def step_checksum(step: Step) -> str | None:
    """The checksum of a step: of its module (see `module_checksum`), or of its
    operations and function.

    None where there is nothing to take it from (a function whose source
    Python does not have).

    """
    path = _module_file(step)
    if path is not None:
        try:
            return module_checksum(source_text(path))
        except (OSError, SyntaxError, ValueError):
            return None
    return _code_step_checksum(step)


def legacy_checksum(step: Step) -> str | None:
    """The checksum of a step as releases before `imports` were recorded took it:
    of the whole module, its ``schema`` included."""
    path = _module_file(step)
    if path is not None:
        try:
            return code_checksum(source_text(path))
        except (OSError, SyntaxError, ValueError):
            return None
    return _code_step_checksum(step)


def _code_step_checksum(step: Step) -> str | None:
    """The checksum of a step registered in code: its operations and function."""
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


# ----------------------------------------------------------------------
# The project's own modules a step imports
# ----------------------------------------------------------------------
def import_checksums(step: Step) -> dict[str, str]:
    """The checksum of each module of the project's own that the step's module
    imports, directly or through another, by module name (see the module)."""
    path = _module_file(step)
    if path is None:
        return {}
    root = project_root(path)
    found: dict[str, str] = {}
    for name, file in imported_modules(path, root):
        facts = _read(file, "")
        if facts is not None:  # else it would not import either: the step does not load
            found[name] = facts[1]
    return found


def project_root(path: Path) -> Path:
    """The project's directory for a step module: where the nearest
    ``pyproject.toml`` up from it is, else the migrations directory's parent."""
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return folder.parent


def imported_modules(path: Path, root: Path) -> Iterator[tuple[str, Path]]:
    """The project's own modules a Python file imports, transitively: each once,
    by name and file, in the order met."""
    seen: set[str] = set()
    queue: list[tuple[Path, str]] = [(path, "")]
    while queue:
        file, package = queue.pop(0)
        facts = _read(file, package)
        for name in facts[0] if facts is not None else ():
            if name in seen:
                continue
            seen.add(name)
            found = _own_module_file(name, root)
            if found is not None and found != path.resolve():
                yield name, found
                is_package = found.name == "__init__.py"
                queue.append((found, name if is_package else name.rpartition(".")[0]))


def _read(file: Path, package: str) -> tuple[tuple[str, ...], str] | None:
    """The module names a file imports (see `_imported_names`) and its code's
    checksum; None if it cannot be read or parsed."""
    try:
        text = source_text(file)
    except (OSError, ValueError):
        return None
    facts = _parsed(text, package)
    return None if facts is None else facts[:2]


@lru_cache(maxsize=1024)
def _parsed(text: str, package: str) -> tuple[tuple[str, ...], str, str] | None:
    """`_read` of a text, cached by the text: every step of an app may import the
    same modules, and parsing them is what costs. Third, its `module_checksum`
    (a step module's is asked for too: one parse for both)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    names = tuple(_imported_names(tree, package))
    code = _digest(_without_docstrings(tree))
    assert isinstance(tree, ast.Module)
    return names, code, _digest(_without_metadata(tree))


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    """The module names an ``import`` or ``from ... import`` names, anywhere in the
    tree, with their parent packages (importing ``a.b`` runs ``a`` too), and,
    for ``from a import b``, ``a.b`` (which may be a module)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base:
                names.append(base)
                names += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
    out: list[str] = []
    for name in names:
        parts = name.split(".")
        out += [".".join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(out))


def _absolute(module: str, level: int, package: str) -> str:
    """The absolute name of a relative import (empty when it cannot be told)."""
    if not level:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not module):
        return ""
    parent = parts[: len(parts) - (level - 1)]
    return ".".join([*parent, module] if module else parent)


def _own_module_file(name: str, root: Path) -> Path | None:
    """The source file of a module, if it is the project's own (see the module)."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None and module is None:
        spec = _find_spec(name)
        origin = spec.origin if spec is not None and spec.has_location else None
    if not origin or not str(origin).endswith(".py"):
        return None  # built in, compiled, or a namespace package
    file = Path(origin).resolve()
    if not file.is_relative_to(root) or INSTALLED & set(file.parts):
        return None
    if any(file.is_relative_to(p) for p in _installed_paths()):
        return None
    return file


def _find_spec(name: str) -> ModuleSpec | None:
    """Where a module would be loaded from, without running any of its packages
    (`importlib.util.find_spec` imports the parents of a dotted name); None if
    it is no module (an attribute of one, say) or is not found."""
    parent, _, _ = name.rpartition(".")
    try:
        if not parent:
            return importlib.util.find_spec(name)
        loaded = sys.modules.get(parent)
        outer = loaded.__spec__ if loaded is not None else _find_spec(parent)
        search = outer.submodule_search_locations if outer is not None else None
        return PathFinder.find_spec(name, list(search)) if search is not None else None
    except (ImportError, ValueError, AttributeError):
        return None


@cache
def _installed_paths() -> tuple[Path, ...]:
    """Where the standard library, installed packages and atomdb-migrate itself are."""
    paths = {
        Path(p)
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
    with contextlib.suppress(AttributeError):  # a virtual environment's site may lack it
        paths.update(Path(p) for p in site.getsitepackages())
    paths.add(Path(__file__).parent.parent)  # the package, above commands/
    return tuple(p.resolve() for p in paths)


def step_record(step: Step) -> dict[str, Any]:
    """A step as its history records it: model, versions, module, checksum, and
    the checksums of the project's modules it imports."""
    return {
        "model": step.model,
        "from": step.from_version,
        "to": step.to_version,
        "source": step.source,
        "checksum": step_checksum(step),
        "imports": import_checksums(step),
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


def differences(step: Step, entry: dict[str, Any]) -> list[str]:
    """What changed in a step since a recorded entry, a phrase each (empty: nothing).

    An entry without ``imports`` was recorded by an earlier release: it is
    compared with the whole module, as it was taken (see `legacy_checksum`).

    """
    imports = entry.get("imports")
    if not isinstance(imports, dict):
        now = legacy_checksum(step)
        return ["its code changed"] if now is not None and now != entry["checksum"] else []
    found = []
    now = step_checksum(step)
    if now is not None and now != entry["checksum"]:
        found.append("its code changed")
    current = import_checksums(step)
    for name in sorted(set(current) | set(imports)):
        if name not in imports:
            found.append(f"it imports module {name} now")
        elif name not in current:
            found.append(f"it no longer imports module {name}")
        elif current[name] != imports[name]:
            found.append(f"module {name}, which it imports, changed")
    return found


def changed(
    steps: Iterable[Step], records: Iterable[dict[str, Any]]
) -> list[tuple[Step, dict[str, Any]]]:
    """The steps that changed since the checksums last recorded, with that record
    (its ``changes``: what changed, see `differences`)."""
    latest = recorded(records)
    found = []
    for s in steps:
        entry = latest.get((s.model, s.from_version, s.to_version))
        if entry is None:
            continue
        what = differences(s, entry)
        if what:
            found.append((s, {**entry, "changes": what}))
    return found


__all__ = [
    "changed",
    "code_checksum",
    "differences",
    "import_checksums",
    "module_checksum",
    "recorded",
    "step_checksum",
    "step_record",
]
