"""The ``revision`` command: write a new step module for a model.

The module's text is built by `atomdb_migrate.autogenerate`; this command
finds the model's steps and the versions, and writes the file.

"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..autogenerate.revision import step_module, step_versions
from ..core.storage import VERSION_KEY
from ..exceptions import ConfigError
from ..operations.collection import CreateIndex
from ..schema.snapshots import SchemaDiff
from ..steps.versions import parse_version
from .workspace import Workspace


@dataclass
class Revision:
    """A step module written by `revision`."""

    #: The file written.
    path: Path
    #: The model's ``__model__`` name.
    model: str
    from_version: str
    to_version: str
    #: With ``autogenerate``: what changed since the newest snapshot (None
    #: when there was no snapshot to compare with).
    diff: SchemaDiff | None = None
    #: Whether the model's ``__version__`` still has to be set to `to_version`.
    bump: bool = False
    #: The former name the model's steps were written under, when it moved.
    moved_from: str | None = None
    #: Added fields whose defaults are computed: the step's upgrade must give
    #: each document its own value.
    computed: list[str] = field(default_factory=list)
    #: With ``autogenerate``, the index operations written (from ``__indexes__``),
    #: described.
    indexes: list[str] = field(default_factory=list)
    #: With ``autogenerate``, what the author must read, a line each: renames
    #: and moves to consider, what to write in ``upgrade()``, the data a
    #: step deletes or converts with loss (which `check` refuses until the
    #: comment saying so is deleted), defaults to set.
    hints: list[str] = field(default_factory=list)
    #: Where the model assigns its ``__version__``: the file, the line number
    #: and the line as it is (None when the class does not assign it itself,
    #: or its source cannot be read).
    version_line: tuple[Path, int, str] | None = None
    #: The line that raises ``__version__`` to `to_version`, in the form of
    #: the current one (an int stays an int).
    new_version_line: str = ""
    #: The file holding the model's class, when its source can be read.
    model_file: Path | None = None

    @property
    def left_to_write(self) -> str:
        """With ``autogenerate`` and no schema to compare with, what is left to
        the author: from 0 (adopting versioning), nothing if the documents are
        stored in the model's shape."""
        if parse_version(self.from_version) != parse_version("0"):
            return "write the fields' operations by hand"
        return (
            "adopting versioning, no operation is needed if the documents saved so far "
            "are stored in the model's shape (the step only sets the version); else "
            "write them"
        )


def revision(ws: Workspace, message: str, model: str, *, autogenerate: bool = False) -> Revision:
    """Write a new step module for a model, and return what was written.

    The step leaves the model's newest version: the last version its steps
    reach or its ``__version__``, whichever is greater, and goes to the next
    one. When the model's ``__version__`` is already ahead of its steps, the
    step goes from the last version they reach to ``__version__``; with no
    step at all, from version 0 (or the model's ``__base_version__``) to
    ``__version__`` (see `step_versions`).

    The module records the model's fields as its ``schema``. With
    `autogenerate`, its ``operations`` are inferred from the difference
    between the model and the snapshot of the version the step leaves, and
    nothing else (see `atomdb_migrate.autogenerate`). A model whose steps
    were all written under another name that no model has now, with the
    same class name, is taken to have moved: the step starts with
    ``ops.rename_model``.

    Raises
    ------
    ConfigError
        If steps record snapshots but the one reaching the version the new
        step leaves does not: autogenerate will not compare with an older
        snapshot.

    """
    cls = ws.model(model)
    folder = _migrations(ws)
    graph = ws.registry.graph(cls)
    moved_from = None if len(graph) else ws.registry.moved_from(cls)
    if moved_from is not None:
        graph = ws.registry.graph(moved_from)
    start, end = step_versions(cls, graph)
    module = step_module(
        cls,
        graph,
        message,
        (start, end),
        autogenerate=autogenerate,
        moved_from=moved_from,
        resolve=ws.registry.resolve,
    )
    number = 1 + max(
        (int(m.group(1)) for p in folder.glob("*.py") if (m := re.match(r"(\d+)_", p.name))),
        default=0,
    )
    path = folder / f"{number:04d}_{slug(message)}.py"
    path.write_text(module.text)
    model_file, line = model_version_line(cls)
    return Revision(
        path,
        cls.__model__,
        start,
        end,
        module.diff,
        bump=parse_version(end) > cls.__parsed_version__,
        moved_from=moved_from,
        computed=module.computed,
        hints=module.hints,
        indexes=[
            f"{'create' if isinstance(op, CreateIndex) else 'drop'} {op.describe()}"
            for op in module.indexes
        ],
        version_line=line,
        new_version_line=raised_version_line(line[2] if line else None, end),
        model_file=model_file,
    )


def revisions(
    ws: Workspace, message: str, models: list[str] | tuple[str, ...], *, autogenerate: bool = False
) -> list[Revision]:
    """Write a step module for each model named (every model when none is),
    each with the same `message`, numbered in the order given.

    A model named twice (by its ``__model__`` and its class name, say) gets one
    module. Each module is what `revision` writes for its model alone.

    """
    names: dict[str, None] = {}
    for cls in ws.models(list(models)) if models else ws.models():
        names.setdefault(cls.__model__, None)
    return [revision(ws, message, name, autogenerate=autogenerate) for name in names]


def version_assignment(source: str) -> tuple[int, str] | None:
    """The line of a class's source that assigns ``__version__`` in its body.

    Returns
    -------
    tuple or None
        The line's index in `source` and its text without indentation; None
        when the class's own body does not assign ``__version__``.

    """
    tree = ast.parse(textwrap.dedent(source))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    for node in cls.body if cls else []:
        target = (
            node.targets[0]
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            else node.target
            if isinstance(node, ast.AnnAssign) and node.value is not None
            else None
        )
        # The class attribute, named as the key it is stored under.
        if isinstance(target, ast.Name) and target.id == VERSION_KEY:
            offset = node.lineno - 1
            return offset, source.splitlines()[offset].strip()
    return None


def model_version_line(cls: type) -> tuple[Path | None, tuple[Path, int, str] | None]:
    """The file of a model's class, and where it assigns ``__version__``."""
    try:
        lines, first = inspect.getsourcelines(cls)
        path = Path(inspect.getsourcefile(cls) or "")
    except (OSError, TypeError):
        return None, None
    found = version_assignment("".join(lines))
    return path, (path, first + found[0], found[1]) if found else None


def raised_version_line(current: str | None, version: str) -> str:
    """The line assigning `version` to ``__version__``, in `current`'s form:
    its annotation kept, an int when it assigns an int and `version` is one."""
    if current is None:
        return f'__version__ = "{version}"'
    head, value = current.split("=", 1)
    value = value.split("#", 1)[0].strip()
    literal = version if value.isdigit() and version.isdigit() else f'"{version}"'
    return f"{head.rstrip()} = {literal}"


def _migrations(ws: Workspace) -> Path:
    """The migrations directory, which must exist."""
    folder = ws.config.migrations
    if folder is None or not folder.is_dir():
        raise ConfigError(
            f"migrations directory {str(folder)!r} does not exist: run `atomdb-migrate init`"
            if folder
            else "no migrations directory: run `atomdb-migrate init` or give --migrations"
        )
    return folder


def slug(message: str) -> str:
    """A message as a file name's part: lower case words joined by ``_``."""
    words = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")
    return words[:48].rstrip("_") or "step"
