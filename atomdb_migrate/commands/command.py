"""One plain function per command; the CLI only parses options and prints.

Every function here can be called from Python (an app's own deploy script,
a test) with a `Workspace`::

    ws = Workspace(load_config(url="mongodb://db/app", models=["app.models"]))
    async with ws:
        result = await upgrade(ws)

The commands live one group a module, and this module re-exports them all:
`init`; `upgrade` (upgrade, downgrade); `stamp` (stamp, accept_checksums);
`status`; `history` (history, failures); `check`; `unlock` (holder,
unlock); `several` (databases, each_database). `revision` is here.

"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.version import Version

from ..core.literals import Source, docstring, quoted
from ..exceptions import ConfigError
from ..model.versioned import VersionedModel
from ..operations.collection import CreateIndex, IndexOperation
from ..schema import indexes as declared_indexes
from ..schema.snapshots import (
    SchemaDiff,
    compare,
    infer_operations,
    previous_snapshot,
    snapshot,
    upgrade_to_write,
)
from ..steps.versions import StepGraph, parse_version
from .check import (
    DatabaseCheck,
    advice,
    changed_steps,
    check,
    check_database,
    check_databases,
    collection_indexes,
    collection_validators,
    drift,
    index_drift,
)
from .history import Failures, failures, history
from .init import TABLE_TEMPLATE, init
from .several import SYSTEM_DATABASES, Visit, database_exists, databases, each_database
from .stamp import accept_checksums, known_versions, stamp
from .status import ModelStatus, status
from .unlock import holder, unlock
from .upgrade import FINISH_RETRY, RunResult, applied_checksums, downgrade, upgrade
from .workspace import Workspace

__all__ = [
    "FINISH_RETRY",
    "SYSTEM_DATABASES",
    "TABLE_TEMPLATE",
    "DatabaseCheck",
    "Failures",
    "ModelStatus",
    "Revision",
    "RunResult",
    "Visit",
    "Workspace",
    "accept_checksums",
    "advice",
    "applied_checksums",
    "changed_steps",
    "check",
    "check_database",
    "check_databases",
    "collection_indexes",
    "collection_validators",
    "database_exists",
    "databases",
    "downgrade",
    "drift",
    "each_database",
    "failures",
    "history",
    "holder",
    "index_drift",
    "init",
    "known_versions",
    "next_version",
    "revision",
    "slug",
    "stamp",
    "status",
    "unlock",
    "upgrade",
]


# ----------------------------------------------------------------------
# revision: files only
# ----------------------------------------------------------------------
def next_version(version: str) -> str:
    """The version after another: its last release number plus one ("3" -> "4", "1.2" -> "1.3")."""
    release = list(parse_version(version).release)
    release[-1] += 1
    return ".".join(str(n) for n in release)


def slug(message: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")
    return words[:48].rstrip("_") or "step"


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


def revision(ws: Workspace, message: str, model: str, *, autogenerate: bool = False) -> Revision:
    """Write a new step module for a model, and return what was written.

    The step leaves the model's newest version: the last version its steps
    reach or its ``__version__``, whichever is greater, and goes to the next
    one. When the model's ``__version__`` is already ahead of its steps, the
    step goes from the last version they reach to ``__version__``.

    The module records the model's fields as its ``schema``. With
    `autogenerate`, its ``operations`` are inferred from the difference
    between the model and the snapshot of the version the step leaves, and
    nothing else (see `atomdb_migrate.schema`). A model whose steps were
    all written under another name that no model has now, with the same
    class name, is taken to have moved: the step starts with
    ``ops.rename_model``.

    Raises
    ------
    ConfigError
        If steps record snapshots but the one reaching the version the new
        step leaves does not: autogenerate will not compare with an older
        snapshot.

    """
    cls = ws.model(model)
    folder = ws.config.migrations
    if folder is None or not folder.is_dir():
        raise ConfigError(
            f"migrations directory {str(folder)!r} does not exist: run `atomdb-migrate init`"
            if folder
            else "no migrations directory: run `atomdb-migrate init` or give --migrations"
        )
    graph = ws.registry.graph(cls)
    moved_from = None if len(graph) else ws.registry.moved_from(cls)
    if moved_from is not None:
        graph = ws.registry.graph(moved_from)
    latest = graph.latest
    if latest is not None and latest < cls.__parsed_version__:
        start, end = str(latest), cls.__version__
    else:
        start = str(max(cls.__parsed_version__, latest) if latest else cls.__parsed_version__)
        end = next_version(start)
    fields = snapshot(cls)
    source = Source()
    values = dict(
        message=docstring(message),
        model=quoted(cls.__model__),
        from_version=quoted(start),
        to_version=quoted(end),
        from_label=start,
        to_label=end,
        schema=_format_schema(fields),
        upgrade="",
    )
    diff: SchemaDiff | None = None
    computed: list[str] = []
    hints: list[str] = []
    index_ops: list[IndexOperation] = []
    if autogenerate:
        lines = []
        if moved_from is not None:
            lines.append(f"ops.rename_model({moved_from!r}, {cls.__model__!r}),")
        base = previous_snapshot(graph, parse_version(start), cls.__model__)
        if base is None:
            lines += [
                "# No step of this model records a schema yet: nothing to compare with.",
                "# This step records the model's fields; write its operations by hand.",
            ]
            values["previous"] = "no earlier step (none records one)"
        else:
            diff = compare(base.schema or {}, fields, resolve=ws.registry.resolve)
            inferred = infer_operations(cls, diff, source)
            computed, hints = inferred.computed, inferred.hints
            lines += inferred.lines
            where = " ".join(Path(base.source).name.splitlines())
            values["previous"] = f"{where} (version {base.to_version})"
            if computed or inferred.by_hand:
                values["upgrade"] = upgrade_to_write(computed, inferred.by_hand)
        index_ops = _index_operations(cls, graph, parse_version(start))
        if index_ops:
            lines += [
                "# __indexes__: upgrade creates indexes before the documents change, and",
                "# drops them after every document passed (expand, then contract).",
                *(declared_indexes.written(op, source) for op in index_ops),
            ]
        if base is not None and not lines:
            lines.append("# No change found since the snapshot.")
        values["operations"] = "".join(f"    {line}\n" for line in lines)
        values["imports"] = "".join(f"{line}\n" for line in source.imports)
        name = "templates/operations.py.tmpl"
    else:
        name = "templates/step.py.tmpl"
    template = resources.files("atomdb_migrate").joinpath(name).read_text()
    text = string.Template(template).substitute(values)
    number = 1 + max(
        (int(m.group(1)) for p in folder.glob("*.py") if (m := re.match(r"(\d+)_", p.name))),
        default=0,
    )
    path = folder / f"{number:04d}_{slug(message)}.py"
    path.write_text(text)
    return Revision(
        path,
        cls.__model__,
        start,
        end,
        diff,
        bump=parse_version(end) != cls.__parsed_version__,
        moved_from=moved_from,
        computed=computed,
        hints=hints,
        indexes=[
            f"{'create' if isinstance(op, CreateIndex) else 'drop'} {op.describe()}"
            for op in index_ops
        ],
    )


def _index_operations(
    cls: type[VersionedModel], graph: StepGraph, start: Version
) -> list[IndexOperation]:
    """The index operations from the indexes the steps up to `start` leave to the
    model's ``__indexes__`` (none when it declares none)."""
    wanted = declared_indexes.declared(cls)
    if wanted is None:
        return []
    created = declared_indexes.created_by_steps([s for s in graph.steps if s.to_key <= start])
    return declared_indexes.planned(wanted, created)


def _format_schema(fields: dict[str, Any], indent: str = "") -> str:
    if not fields:
        return "{}"
    inner = indent + "    "
    lines = [
        f"{inner}{k!r}: {_format_schema(v, inner) if isinstance(v, dict) else repr(v)},\n"
        for k, v in fields.items()
    ]
    return "{\n" + "".join(lines) + indent + "}"
