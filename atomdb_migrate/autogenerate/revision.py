"""A step module's text, as ``atomdb-migrate revision`` writes it.

A plain revision fills ``templates/step.py.tmpl``: an ``upgrade`` and a
``downgrade`` to write, the fields ``upgrade`` may change as its
``changes`` (`plain_changes`), and the model's fields as its ``schema``. With
autogenerate, ``templates/operations.py.tmpl`` holds the operations
inferred from the difference between the model and the snapshot of the
version the step leaves (`infer`), the index operations its
``__indexes__`` asks for, and an ``upgrade`` that raises until written
where no operation does the work; `render` writes the operations out.
The text is returned; writing the file is the command's
(`atomdb_migrate.commands.revision`).

"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.version import Version

from ..core.literals import Source, docstring, quoted
from ..exceptions import ConfigError
from ..model.versioned import VersionedModel
from ..operations.collection import IndexOperation
from ..operations.rename_model import RenameModel
from ..schema import indexes as declared_indexes
from ..schema.snapshots import SchemaDiff, compare, previous_snapshot, snapshot
from ..steps.versions import Step, StepGraph, base_version, parse_version
from .infer import infer_operations, operation
from .render import Comment, Entry, lines


@dataclass
class StepModule:
    """A step module's text, and what autogenerate found on the way."""

    text: str
    #: What changed since the newest snapshot (None without autogenerate, or
    #: with no snapshot to compare with).
    diff: SchemaDiff | None = None
    #: Added fields whose defaults are computed (see `infer.Inferred`).
    computed: list[str] = field(default_factory=list)
    #: What the author must read, a line each (see `infer.Inferred`).
    hints: list[str] = field(default_factory=list)
    #: The index operations written (from the model's ``__indexes__``).
    indexes: list[IndexOperation] = field(default_factory=list)


def step_versions(cls: type[VersionedModel], graph: StepGraph) -> tuple[str, str]:
    """The versions a new step goes between.

    It leaves the model's newest version: the last version its steps reach
    or its ``__version__``, whichever is greater, and goes to the next one.
    When the model's ``__version__`` is already ahead of its steps, it goes
    from the last version they reach to ``__version__``; with no step at
    all, from the model's base (version 0, or its ``__base_version__``) to
    ``__version__`` (the first step of a model adopting versioning), or to
    the next version when ``__version__`` is the base.

    """
    latest, head = graph.latest, cls.__parsed_version__
    if latest is None:
        base = base_version(cls)
        return (str(base), cls.__version__) if base < head else (str(head), next_version(str(head)))
    if latest < head:
        return str(latest), cls.__version__
    start = str(max(head, latest))
    return start, next_version(start)


def next_version(version: str) -> str:
    """The version after another: its last release number plus one ("3" -> "4", "1.2" -> "1.3")."""
    release = list(parse_version(version).release)
    release[-1] += 1
    return ".".join(str(n) for n in release)


def step_module(
    cls: type[VersionedModel],
    graph: StepGraph,
    message: str,
    versions: tuple[str, str],
    *,
    autogenerate: bool = False,
    moved_from: str | None = None,
    resolve: Callable[[str], str] | None = None,
) -> StepModule:
    """The text of a step module taking `cls` between `versions`, with `message`
    as its docstring.

    `graph` holds the model's steps (under `moved_from`, its former name, when
    it moved: the step then starts with ``ops.rename_model``); `resolve`
    names a model as the registry does now (see `compare`).

    Raises
    ------
    ConfigError
        With `autogenerate`, if steps record snapshots but the one reaching
        the version the step leaves does not (see `previous_snapshot`).

    """
    start, end = versions
    fields = snapshot(cls)
    values = {
        "message": docstring(message),
        "model": quoted(cls.__model__),
        "from_version": quoted(start),
        "to_version": quoted(end),
        "from_label": start,
        "to_label": end,
        "schema": format_schema(fields),
        "upgrade": "",
    }
    if not autogenerate:
        values.update(plain_changes(cls, graph, start, fields, resolve))
        return StepModule(_filled("step.py.tmpl", values))
    module = StepModule("")
    source = Source()
    entries = _operations(module, cls, graph, start, fields, moved_from, resolve, values)
    values["operations"] = "".join(f"    {line}\n" for line in lines(entries, source))
    values["imports"] = "".join(f"{line}\n" for line in source.imports)
    module.text = _filled("operations.py.tmpl", values)
    return module


def plain_changes(
    cls: type[VersionedModel],
    graph: StepGraph,
    start: str,
    fields: dict[str, Any],
    resolve: Callable[[str], str] | None,
) -> dict[str, str]:
    """The template's ``changes`` list for a step written by hand, and its note.

    The fields that differ between the model and the snapshot of the
    version the step leaves (added, removed, of another type), when a step
    records that snapshot and they differ; otherwise every field of both,
    which keeps queries right until the author narrows it (a Python step
    that lists no field stands in the way of them all).

    """
    try:
        base = previous_snapshot(graph, parse_version(start), cls.__model__)
    except ConfigError:  # steps record snapshots, but not at `start`: not known
        base = None
    before = (base.schema or {}) if base is not None else {}
    diff = compare(before, fields, resolve=resolve) if base is not None else None
    if base is not None and diff:
        names = [*diff.added, *diff.removed, *diff.changed]
        note = f"Listed: the fields that differ from the schema of {_where(base)}; add"
        note += "\n#: every other field upgrade changes."
    else:
        names = [*fields, *(name for name in before if name not in fields)]
        why = (
            "no earlier step records a schema"
            if base is None
            else f"the model's fields are those of {_where(base)}"
        )
        note = f"Listed: every field ({why});\n#: narrow it to those upgrade changes."
    return {"changes": format_changes(sorted(set(names))), "changes_note": note}


def _where(step: Step) -> str:
    """A step module as a comment names it: its file name, on one line."""
    return " ".join(Path(step.source).name.splitlines())


def format_changes(names: list[str]) -> str:
    """A list of field paths as the ``changes = [...]`` of a step module: on one
    line when it fits, else a path a line."""
    items = [quoted(name) for name in names]
    one_line = f"[{', '.join(items)}]"
    if len(one_line) <= LINE_LENGTH - len("changes = "):
        return one_line
    return "[\n" + "".join(f"    {item},\n" for item in items) + "]"


#: The longest line a step module's `changes` is written on (black's default length).
LINE_LENGTH = 88


def _no_snapshot(start: str) -> list[Entry]:
    """The comments of an autogenerated step with no schema to compare with: from
    0, adopting versioning, the empty list is the step when the documents are
    stored in the model's shape (docs/deploying.md, Adopting versioning)."""
    entries: list[Entry] = [
        Comment("No step of this model records a schema yet: nothing to compare with."),
    ]
    if parse_version(start) == parse_version("0"):
        return [
            *entries,
            Comment("Adopting versioning: if the documents saved so far are stored in"),
            Comment("the model's shape, no operation is needed (the step only sets the"),
            Comment("version); else write the operations that bring them to it."),
        ]
    return [
        *entries,
        Comment("This step records the model's fields; write its operations by hand."),
    ]


def _operations(
    module: StepModule,
    cls: type[VersionedModel],
    graph: StepGraph,
    start: str,
    fields: dict[str, Any],
    moved_from: str | None,
    resolve: Callable[[str], str] | None,
    values: dict[str, str],
) -> list[Entry]:
    """The entries of an autogenerated step's ``operations``; what was found goes
    into `module`, and the template's ``previous`` and ``upgrade`` into `values`."""
    entries: list[Entry] = []
    if moved_from is not None:
        entries.append(operation(RenameModel, "rename_model", moved_from, cls.__model__))
    base = previous_snapshot(graph, parse_version(start), cls.__model__)
    if base is None:
        entries += _no_snapshot(start)
        values["previous"] = "no earlier step (none records one)"
    else:
        module.diff = compare(base.schema or {}, fields, resolve=resolve)
        inferred = infer_operations(cls, module.diff)
        module.computed, module.hints = inferred.computed, inferred.hints
        entries += inferred.entries
        where = " ".join(Path(base.source).name.splitlines())
        values["previous"] = f"{where} (version {base.to_version})"
        if inferred.computed or inferred.by_hand:
            values["upgrade"] = upgrade_to_write(inferred.computed, inferred.by_hand)
    module.indexes = index_operations(cls, graph, parse_version(start))
    if module.indexes:
        entries += [
            Comment("__indexes__: upgrade creates indexes before the documents change, and"),
            Comment("drops them after every document passed (expand, then contract)."),
            *module.indexes,
        ]
    if base is not None and not entries:
        entries.append(Comment("No change found since the snapshot."))
    return entries


def index_operations(
    cls: type[VersionedModel], graph: StepGraph, start: Version
) -> list[IndexOperation]:
    """The index operations from the indexes the steps up to `start` leave to the
    model's ``__indexes__`` (none when it declares none)."""
    wanted = declared_indexes.declared(cls)
    if wanted is None:
        return []
    created = declared_indexes.created_by_steps(graph.steps_to(start))
    return declared_indexes.planned(wanted, created)


def format_schema(fields: dict[str, Any], indent: str = "") -> str:
    """A snapshot as the ``schema = {...}`` of a step module: a field a line."""
    if not fields:
        return "{}"
    inner = indent + "    "
    found = [
        f"{inner}{k!r}: {format_schema(v, inner) if isinstance(v, dict) else repr(v)},\n"
        for k, v in fields.items()
    ]
    return "{\n" + "".join(found) + indent + "}"


def _filled(name: str, values: dict[str, str]) -> str:
    """A template of ``templates/`` with its ``${...}`` filled in."""
    template = resources.files("atomdb_migrate.autogenerate").joinpath("templates").joinpath(name)
    return string.Template(template.read_text()).substitute(values)


def computed_upgrade(names: list[str]) -> str:
    """The ``upgrade`` function a step needs when added fields have computed defaults."""
    return upgrade_to_write(names, [])


def upgrade_to_write(computed: list[str], by_hand: list[str]) -> str:
    """The ``upgrade`` function a step needs for what no operation does: added
    fields with computed defaults, and changes described in `by_hand`. It
    raises until written, and `check` fails until then."""
    todo = [f"{name}: give each document its own value" for name in computed]
    todo += [f"{what}: convert each stored value" for what in by_hand]
    listed = "".join(f"    # - {' '.join(item.splitlines())}\n" for item in todo)
    why = (
        "    # A computed default (a factory, a _default_ method) makes a new value per\n"
        "    # object, so no one value suits all.\n"
        if computed
        else ""
    )
    names = [*computed, *(what.partition(" changed ")[0].strip("'") for what in by_hand)]
    message = f"write upgrade() for {', '.join(names)}"
    return (
        "\n\ndef upgrade(doc):\n"
        "    # Runs after the operations above, on each document. Write here what no\n"
        "    # operation does:\n"
        f"{listed}{why}"
        f"    raise NotImplementedError({message!r})\n"
    )
