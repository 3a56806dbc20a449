"""Load version-step modules from a migrations directory.

A step module is a small Python file::

    "Split name into first and last."

    model = "app.models.User"
    from_version = "1"
    to_version = "2"

    def upgrade(doc):
        doc["first"], _, doc["last"] = doc.pop("name").partition(" ")

    def downgrade(doc):  # optional
        doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()

Instead of ``upgrade`` (or before it) a module may give ``operations``, a
list of `atomdb_migrate.ops` operations, and ``schema``, the model's stored
fields after the step (written by ``atomdb-migrate revision``). A module
with an ``upgrade`` function may list the fields it changes, ``changes =
["first", "last", "name"]``, so that version-aware filters on the other
fields pass through it (see `atomdb_migrate.queries`).

A module whose ``upgrade`` or ``downgrade`` still only raises
``NotImplementedError`` (the template's, or the one autogenerate writes
for a change no operation makes), or that holds a comment autogenerate
wrote for the author to confirm (``# DELETES DATA:``, ``# LOSSY:``), loads,
but is unfinished: ``atomdb-migrate check`` fails on it.

Its docstring is the step's message. Modules load only from the given
directory (``*.py`` directly inside it, not starting with ``_``), in name
order. Every module is checked before any step is registered: if one fails
(a syntax error, an import error, a missing or mistyped name, a duplicate
step) the error names its file and line, and nothing is registered.

"""

from __future__ import annotations

import ast
import importlib.util
import io
import sys
import tokenize
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from ..exceptions import ChainError, ConfigError, StepDefinitionError, StepModuleError, shorten
from ..schema.snapshots import is_schema
from ..steps.definition import CONFIRM_TAGS, define_step, message_of
from ..steps.registry import MigrationRegistry
from ..steps.versions import Step
from .checksums import source_text

#: The names a step module must define, and the types they must have.
REQUIRED = {"model": (str,), "from_version": (str, int), "to_version": (str, int)}

#: The prefix of the names step modules are loaded under.
MODULE_PREFIX = "atomdb_migrate_steps"


def step_files(directory: Path) -> list[Path]:
    """The step module files of a directory, in name order.

    Only files directly inside the directory count: a link to a file
    elsewhere is refused, so step modules load from the configured directory
    and nowhere else.

    """
    root = directory.resolve()
    files = sorted(p for p in directory.glob("*.py") if p.is_file() and not p.name.startswith("_"))
    outside = [p for p in files if p.resolve().parent != root]
    if outside:
        raise StepModuleError(
            [
                (str(p), 1, f"links outside the migrations directory (to {p.resolve()})")
                for p in outside
            ]
        )
    return files


def load_migrations(
    directory: str | Path | None = None, *, registry: MigrationRegistry | None = None
) -> list[Step]:
    """Register the steps of every module in a migrations directory.

    Call it at application start-up so reads upgrade exactly as the
    ``atomdb-migrate`` command does. Loading the same directory again
    replaces its steps.

    Parameters
    ----------
    directory: str or Path, optional
        The migrations directory. Defaults to ``migrations`` from the
        ``[tool.atomdb-migrate]`` table of the nearest ``pyproject.toml``
        from the working directory up, or else from the module of each
        versioned model imported up (see `configured_directory`).
    registry: MigrationRegistry, optional
        Defaults to the process's registry.

    Returns
    -------
    steps: list of Step
        The registered steps, in file order.

    Raises
    ------
    ConfigError
        If the directory does not exist, or none is given and none is found
        (the message says where it looked, and what to pass).
    StepModuleError
        If a module does not load; nothing is registered then.

    """
    registry = registry or MigrationRegistry.instance()
    path = Path(directory) if directory is not None else configured_directory(registry)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"migrations directory {str(path)!r} {what}")

    made: list[tuple[Path, Step]] = []
    problems: list[tuple[str, int, str]] = []
    for file in step_files(path):
        try:
            made.append((file, _define(file, _load_module(file), registry)))
        except _Problem as p:
            problems.append((str(file), p.line, p.message))
    if problems:
        raise StepModuleError(problems)

    added: list[Step] = []
    for file, step in made:
        try:
            added.append(registry.add_step(step))
        except ChainError as exc:
            for s in added:
                registry.remove_step(s)
            line = _line_of(file, "from_version")
            raise StepModuleError([(str(file), line, str(exc))]) from exc
    return added


def configured_directory(registry: MigrationRegistry) -> Path:
    """The migrations directory `load_migrations` loads when given none.

    The ``migrations`` of the ``[tool.atomdb-migrate]`` table of the nearest
    ``pyproject.toml`` from the working directory up; when that sets none
    (an app started from another directory), the one of the projects of the
    versioned models imported so far (the nearest ``pyproject.toml`` from
    each model's module up), if they name one.

    Raises
    ------
    ConfigError
        If neither names a directory, or the models' projects name several:
        the message says where it looked and what to pass.

    """
    from .config import load_config

    config = load_config()
    if config.migrations is not None:
        return config.migrations
    found = model_projects(registry)
    directories = sorted(set(found.values()))
    if len(directories) == 1:
        return directories[0]
    raise ConfigError(_no_directory(found))


def model_projects(registry: MigrationRegistry) -> dict[str, Path]:
    """The migrations directory of each registered model's project, by model name.

    A model's project is the nearest ``pyproject.toml`` from its module's
    file up; models whose project sets no ``migrations`` (or whose module has
    no file) are left out.

    """
    from .config import find_pyproject, read_table

    tables: dict[Path, Path | None] = {}
    found: dict[str, Path] = {}
    for name, cls in sorted(registry.models.items()):
        file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        pyproject = find_pyproject(Path(file).parent) if file else None
        if pyproject is None:
            continue
        if pyproject not in tables:
            table = read_table(pyproject)
            folder = table.get("migrations")
            tables[pyproject] = pyproject.parent / folder if folder is not None else None
        directory = tables[pyproject]
        if directory is not None:
            found[name] = directory
    return found


def _no_directory(found: dict[str, Path]) -> str:
    """Why `load_migrations()` found no directory, and what to pass."""
    cwd = Path.cwd()
    advice = (
        'pass the directory: load_migrations("path/to/migrations"), such as '
        'load_migrations(Path(__file__).parent / "migrations") from a module beside it'
    )
    if found:
        by_directory: dict[Path, list[str]] = {}
        for name, directory in found.items():
            by_directory.setdefault(directory, []).append(name)
        listed = "; ".join(
            f"{directory} ({', '.join(names)})" for directory, names in sorted(by_directory.items())
        )
        return (
            "no migrations directory in the working directory's project "
            f"({cwd}), and the versioned models' projects name several: {listed}; {advice}"
        )
    return (
        "no migrations directory: no pyproject.toml with `migrations` in "
        f"[tool.atomdb-migrate] above the working directory ({cwd}) nor above the "
        "modules of the versioned models imported so far (import them first to be "
        f"found from them); {advice}"
    )


class _Problem(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message


def _load_module(file: Path) -> ModuleType:
    name = f"{MODULE_PREFIX}.{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise _Problem(1, "cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise _Problem(exc.lineno or 1, f"syntax error: {exc.msg}") from exc
    except Exception as exc:
        raise _Problem(_failing_line(exc, file), f"{type(exc).__name__}: {exc}") from exc
    sys.modules.pop(name, None)
    for attr, types in REQUIRED.items():
        if not hasattr(module, attr):
            raise _Problem(1, f"missing module-level name {attr!r}")
        value = getattr(module, attr)
        if not isinstance(value, types) or isinstance(value, bool):
            raise _Problem(
                _line_of(file, attr),
                f"{attr} must be a string, not {type(value).__name__}",
            )
    operations = getattr(module, "operations", None)
    upgrade = getattr(module, "upgrade", None)
    if operations is None and not callable(upgrade):
        problem = "missing" if not hasattr(module, "upgrade") else "not callable:"
        raise _Problem(
            _line_of(file, "upgrade"), f"{problem} function 'upgrade' (or a list 'operations')"
        )
    if upgrade is not None and not callable(upgrade):
        raise _Problem(_line_of(file, "upgrade"), "'upgrade' is not callable")
    downgrade = getattr(module, "downgrade", None)
    if downgrade is not None and not callable(downgrade):
        raise _Problem(_line_of(file, "downgrade"), "'downgrade' is not callable")
    schema = getattr(module, "schema", None)
    if schema is not None and not is_schema(schema):
        raise _Problem(
            _line_of(file, "schema"),
            "schema must be a dict of field names to types (or, for an embedded model, "
            "to a dict of its own)",
        )
    return module


def _define(file: Path, module: ModuleType, registry: MigrationRegistry) -> Step:
    """The step of a module, made (and its names checked) as `register_step` makes one."""
    try:
        return define_step(
            module.model,
            module.from_version,
            module.to_version,
            getattr(module, "upgrade", None),
            getattr(module, "downgrade", None),
            operations=getattr(module, "operations", None),
            schema=getattr(module, "schema", None),
            changes=getattr(module, "changes", None),
            message=message_of(module),
            source=str(file.resolve()),
            unfinished=_unfinished(file),
            embedded_at=registry.embedded_at,
        )
    except StepDefinitionError as exc:
        said = f"changes: {exc}" if exc.argument == "changes" else str(exc)
        raise _Problem(_line_of(file, exc.argument), said) from None


#: What each unfinished function of a step module needs.
UNFINISHED = {
    "upgrade": "upgrade still raises NotImplementedError, as the template does: write it",
    "downgrade": (
        "downgrade still raises NotImplementedError, as the template does: write it, "
        "or delete it if the change cannot be undone"
    ),
}


def _unfinished(file: Path) -> tuple[str, ...]:
    """What is left to write: functions whose whole body raises NotImplementedError,
    and comments that ask the author to confirm what the step does to stored
    data (`atomdb_migrate.steps.definition.CONFIRM_TAGS`), as autogenerate writes them."""
    try:
        text = source_text(file)  # in the encoding the module declares
    except (OSError, ValueError):
        return ()
    tagged = any(f"{tag}:" in text for tag in CONFIRM_TAGS)
    if not (tagged or _may_raise_not_implemented(text)):
        return ()  # what the parse would find: nothing (parsing every module costs)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return ()
    found = _functions_to_write(tree)
    if tagged:  # else no comment can start with a tag, and tokenizing costs most
        found += [f"line {line}: # {comment}" for line, comment in _comments_to_confirm(text)]
    return tuple(found)


def _may_raise_not_implemented(text: str) -> bool:
    """Whether a module's text may name ``NotImplementedError``: it holds the
    name, or characters other than ASCII (Python reads identifiers in NFKC
    form, so another spelling may name it)."""
    return "NotImplementedError" in text or not text.isascii()


def _comments_to_confirm(text: str) -> list[tuple[int, str]]:
    """The comments of a module that start with a tag of `CONFIRM_TAGS`, with their
    lines (cut short)."""
    found = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.COMMENT:
                continue
            comment = token.string.lstrip("#").strip()
            if any(comment.startswith(f"{tag}:") for tag in CONFIRM_TAGS):
                found.append((token.start[0], shorten(comment, 400)))
    except (tokenize.TokenError, SyntaxError):
        return found
    return found


def _functions_to_write(tree: ast.Module) -> list[str]:
    """The functions of `UNFINISHED` whose whole body raises NotImplementedError."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in UNFINISHED:
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            if len(body) == 1 and _raises_not_implemented(body[0]):
                found.append(UNFINISHED[node.name])
    return found


def _raises_not_implemented(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Raise) or node.exc is None:
        return False
    target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(target, ast.Name) and target.id == "NotImplementedError"


def _failing_line(exc: BaseException, file: Path) -> int:
    """The last line of `file` in the exception's traceback."""
    line = 1
    target = str(file.resolve())
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) == target and frame.lineno:
            line = frame.lineno
    return line


def _line_of(file: Path, name: str) -> int:
    """The line where a module-level name is assigned or defined (1 if unknown)."""
    try:
        tree = ast.parse(source_text(file))
    except (OSError, SyntaxError, ValueError):
        return 1
    for node in tree.body:
        targets: list[Any] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node.lineno
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.lineno
    return 1
