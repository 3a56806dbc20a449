"""`check`: the gate of a deploy. What the project's code says of itself
(chains, step modules, fields and indexes against their snapshots), and what
the databases hold (pending documents, indexes, validators, applied steps
that changed since). `check_databases` decides which checks run once and
which in each database.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..core.storage import VERSION_INDEX
from ..driver.mongo import has_version_index, is_mongomock, read_validator
from ..engine.collection_state import asked_validator, last_validator_operation
from ..engine.renames import count_references
from ..exceptions import ConfigError, InvalidVersionError, MigrateError
from ..model.versioned import VersionedModel
from ..schema import indexes as declared_indexes
from ..schema.snapshots import compare, previous_snapshot, snapshot, step_to
from ..steps.versions import base_version, parse_version
from . import checksums as step_checksums
from .several import Visit, each_database
from .status import status
from .workspace import Workspace

__all__ = [
    "DatabaseCheck",
    "advice",
    "changed_steps",
    "check",
    "check_database",
    "check_databases",
    "collection_indexes",
    "collection_validators",
    "drift",
    "index_drift",
]


def drift(ws: Workspace) -> list[str]:
    """Models whose fields differ from the snapshot of their version.

    A model is checked once any of its steps records a snapshot. Its fields
    are compared with the snapshot the step reaching its version records; a
    missing one is a problem too (the fields at that version are unknown).
    A model whose ``__version__`` is past its steps is not checked: its new
    step is still to be written; nor is one behind its steps: its version is
    still to be raised (the chain check says either).

    """
    found = []
    for cls in ws.models():
        graph = ws.registry.graph(cls)
        latest = graph.latest
        if step_to(graph, cls.__parsed_version__) is None or (
            latest is not None and latest > cls.__parsed_version__
        ):
            continue
        try:
            base = previous_snapshot(graph, cls.__parsed_version__, cls.__model__)
        except ConfigError as exc:
            found.append(f"{exc}; `atomdb-migrate check` cannot tell a change without a migration")
            continue
        if base is None:
            continue
        diff = compare(base.schema or {}, snapshot(cls), resolve=ws.registry.resolve)
        if diff:
            found.append(
                f"model {cls.__model__!r}: fields differ from the schema of version "
                f"{base.to_version} in {base.source}: {diff.describe()}. A change "
                "without a migration? Run `atomdb-migrate revision --autogenerate "
                f"--model {cls.__model__} -m ...`, or update that schema if the "
                "stored documents do not change"
            )
    return found


def index_drift(ws: Workspace) -> list[str]:
    """Models whose ``__indexes__`` differ from the indexes their steps create.

    Checked like the fields (see `drift`): not while the model's version is
    past its steps or behind them.

    """
    found = []
    for cls in ws.models():
        graph = ws.registry.graph(cls)
        latest, version = graph.latest, cls.__parsed_version__
        if latest is not None and latest != version:
            continue
        found += declared_indexes.step_drift(cls, graph.steps)
    return found


async def collection_indexes(ws: Workspace) -> list[str]:
    """How each collection's indexes differ from its model's ``__indexes__``."""
    await ws.connect()
    found = []
    for cls in ws.models():
        if cls.__indexes__ is None:
            continue
        collection = ws.database[cls.__model__]
        existing = await collection.index_information()
        found += declared_indexes.collection_drift(cls, existing, collection.name)
    return found


async def collection_validators(ws: Workspace) -> list[str]:
    """Collections whose validator is not the one their model's steps set.

    The last ``set_validator`` of the steps up to the model's version decides
    it, with the schema of the model class (see `atomdb_migrate.validators`).
    ``upgrade`` leaves it unset while stored documents do not pass it.

    """
    await ws.connect()
    found = []
    for cls in ws.models():
        last = last_validator_operation(ws.registry.graph(cls), cls.__parsed_version__)
        collection = ws.database[cls.__model__]
        if last is None or is_mongomock(collection):
            continue  # no validator asked for; or mongomock, which keeps none
        wanted = asked_validator(cls, last)
        current = await read_validator(collection)
        if not current.same(wanted):
            found.append(
                f"model {cls.__model__!r}: collection {cls.__model__} has "
                f"{current.describe()}, but its steps ask for {wanted.describe()}"
                + (" (the $jsonSchema of the model)" if wanted else "")
                + ": `atomdb-migrate upgrade` sets it once every stored document passes it"
            )
    return found


async def advice(ws: Workspace) -> list[str]:
    """What the gate notes without failing: collections without the toolkit's index,
    whose pending documents ``upgrade`` finds only by reading every document."""
    await ws.connect()
    names = set(await ws.database.list_collection_names())
    how = (
        "`atomdb-migrate upgrade` creates it"
        if ws.config.version_index
        else "set version-index = true in [tool.atomdb-migrate], and `upgrade` creates it"
    )
    notes = []
    for cls in ws.models():
        collection = ws.database[cls.__model__]
        if cls.__model__ not in names or is_mongomock(collection):
            continue  # nothing stored; or mongomock, which has no index to use
        if not await has_version_index(collection):
            notes.append(
                f"model {cls.__model__!r}: collection {cls.__model__} has no index "
                f"{VERSION_INDEX} on {{__version__: 1, _id: 1}}, so `upgrade` reads every "
                f"document to find the pending ones; {how}"
            )
    return notes


async def check(
    ws: Workspace,
    *,
    pending: bool = False,
    indexes: bool = False,
    static: bool = True,
    allow_newer_steps: bool = False,
) -> list[str]:
    """Every problem found, a line each; empty when all is well.

    Chains must be complete, every step module must load and be written (not
    the template's), and every model's fields must match its newest schema
    snapshot at the same version, and its ``__indexes__`` the indexes its
    steps create. With `indexes`, each collection's indexes must be the
    declared ones. With `pending`, the gate of a deploy (indexes included):
    documents behind their model's version, newer than it, or with an
    invalid version are problems too, and so are references still stored
    under a model's former name (every collection is read for them while a
    model has former names). Without `static`, only what is asked of the
    database (for the second database on, say).

    Steps above a model's version fail, unless the model reads newer
    documents (``__on_newer__ = "downgrade"``) or `allow_newer_steps` is
    given: the old code of a rollback build ships with the newer release's
    step modules. Those steps must still load and be written, lead from the
    model's version to the newest one with no gap, and each have a downgrade
    (their checksums are compared with the history as every step's are, see
    `changed_steps`).

    """
    try:
        ws.load()
        classes = ws.models()
    except MigrateError as exc:
        return [str(exc)]
    problems: list[str] = []
    if static:
        problems += [str(p) for p in ws.registry.problems(allow_newer=allow_newer_steps)]
        problems += drift(ws)
        problems += index_drift(ws)
    if indexes or pending:
        problems += await collection_indexes(ws)
        problems += await collection_validators(ws)
    if pending:
        problems += await pending_problems(ws, classes)
    return problems


async def pending_problems(ws: Workspace, classes: list[type[VersionedModel]]) -> list[str]:
    """What ``check --pending`` finds stored: documents behind, newer or with an
    invalid version, documents left under a former name, unversioned documents
    saved since an upgrade, and references under a former name."""
    problems: list[str] = []
    for s in await status(ws, [c.__model__ for c in classes]):
        problems += below_base(ws.registry.model(s.model), s.stored)
        if s.pending:
            problems.append(f"model {s.model!r}: {_stored(s.pending)} behind version {s.version}")
        if s.newer:
            problems.append(
                f"model {s.model!r}: {_stored(s.newer)} newer than "
                f"version {s.version} (written by newer code)"
            )
        if s.invalid:
            problems.append(
                f"model {s.model!r}: {_stored(s.invalid, 'has', 'have')} an invalid __version__"
            )
        for old, n in s.former.items():
            problems.append(
                f"model {s.model!r}: {_stored(n, stored='')} still in the collection of its "
                f"former name {old!r}; `atomdb-migrate upgrade` moves them"
            )
        if s.unversioned_since is not None:
            problems.append(
                f"model {s.model!r}: {_stored(s.unversioned, 'has', 'have', stored='')} "
                "no version although "
                f"the upgrade of {s.unversioned_since:%Y-%m-%d %H:%M} left none: code that "
                "does not version this model still saves it (see docs/deploying.md, "
                "adopting versioning)"
            )
    for cls in classes:
        for old in ws.registry.former_names(cls):
            n = await count_references(
                ws.database, old, cls.__model__, skip=ws.internal_collections
            )
            if n:
                problems.append(
                    f"model {cls.__model__!r}: {_stored(n, 'still refers', 'still refer')} to it "
                    f"under its former name {old!r}; `atomdb-migrate upgrade` rewrites them"
                )
    return problems


def _stored(n: int, one: str = "is", many: str = "are", stored: str = "stored ") -> str:
    """``1 stored document is``, ``3 stored documents are``: a count, its noun and verb."""
    return f"{n} {stored}document {one}" if n == 1 else f"{n} {stored}documents {many}"


def below_base(cls: type[VersionedModel], stored: dict[str, int]) -> list[str]:
    """The problem of documents stored below a model's ``__base_version__`` (its
    steps below it were squashed), from the counts of `status` (by version)."""
    base = base_version(cls)
    below = {}
    for name, n in stored.items():
        try:
            version = parse_version(name)
        except InvalidVersionError:
            continue  # an invalid version: reported on its own
        if version < base:
            below[str(version)] = n
    if not below:
        return []
    where = ", ".join(f"{n} at version {v}" for v, n in below.items())
    return [
        f"model {cls.__model__!r}: {_stored(sum(below.values()))} below its "
        f"__base_version__ {base} ({where}), and its steps below {base} were squashed, so "
        f"they cannot be read; upgrade them first with `atomdb-migrate upgrade` from the "
        f"release that still has those steps, or lower __base_version__ and bring the "
        f"steps back"
    ]


async def changed_steps(ws: Workspace) -> list[str]:
    """Each step applied to this database that changed since, a line each.

    Compares the steps as they are now, and the project's modules they
    import, with the checksums the history recorded (the latest of each
    step). Each line says what changed, and how many documents of the model
    this database holds.

    """
    try:
        ws.load()
        classes = ws.models()
    except MigrateError:
        return []  # check reports why the steps do not load
    await ws.connect()
    steps = [s for cls in classes for s in ws.registry.graph(cls).steps]
    lines = []
    for s, entry in step_checksums.changed(steps, await ws.history().with_checksums()):
        when = entry.get("recorded_at")
        since = f" on {when:%Y-%m-%d %H:%M}" if isinstance(when, datetime) else ""
        stored = await _stored_documents(ws, s.model)
        model = ws.registry.resolve(s.model)
        if stored:
            held = (
                f"this database holds {stored} documents of model {model!r}: those upgraded "
                "through the step before the change may differ from what it gives now"
            )
        else:
            held = (
                f"this database holds no document of model {model!r}, so none here differs; "
                "in a database that does, those upgraded through the step before the change "
                "may differ from what it gives now"
            )
        lines.append(
            f"model {s.model!r}: step {s.from_version} -> {s.to_version} ({s.source}) changed "
            f"since it was applied to this database (its checksum was recorded{since}): "
            f"{'; '.join(entry['changes'])}. {held[0].upper()}{held[1:]}. Undo the change, "
            "or review it and record the new checksum with "
            "`atomdb-migrate stamp --accept-checksums`"
        )
    return lines


async def _stored_documents(ws: Workspace, model: str) -> int:
    """About how many documents of a model the database holds (the server's
    estimate, from its metadata), under its name and the name a step gives it."""
    names = dict.fromkeys((ws.registry.resolve(model), model))
    return sum([await ws.database[n].estimated_document_count() for n in names])


@dataclass
class DatabaseCheck:
    """What the checks found in one database (or, with ``once``, in the code)."""

    #: Every problem, a line each (see `check`).
    problems: list[str] = field(default_factory=list)
    #: Each step applied to the database that changed since, a line each (see
    #: `changed_steps`).
    changed: list[str] = field(default_factory=list)
    #: What the gate notes without failing (see `advice`).
    notes: list[str] = field(default_factory=list)
    #: Whether these are the checks that do not depend on the database, made
    #: once before the databases.
    once: bool = False
    #: The database checked; None for the checks of the code alone.
    database: str | None = None


async def check_database(
    ws: Workspace,
    *,
    pending: bool = False,
    checksums: bool = False,
    indexes: bool = False,
    static: bool = True,
    allow_newer_steps: bool = False,
) -> DatabaseCheck:
    """The checks asked, in one database: `check` (with `pending`, `indexes`
    and `allow_newer_steps`; without `static`, only what is asked of the
    database), the applied steps that changed since (with `checksums` or
    `pending`), and with `pending` the notes of `advice`."""
    problems = await check(
        ws, pending=pending, indexes=indexes, static=static, allow_newer_steps=allow_newer_steps
    )
    changed = await changed_steps(ws) if pending or checksums else []
    notes = await advice(ws) if pending else []
    database = ws.config.database_name() if pending or checksums or indexes else None
    return DatabaseCheck(problems, changed, notes, database=database)


async def check_databases(
    ws: Workspace,
    found: Callable[[DatabaseCheck], str],
    *,
    pending: bool = False,
    checksums: bool = False,
    indexes: bool = False,
    visit: Visit | None = None,
    allow_newer_steps: bool = False,
) -> None:
    """Check the code once, and what is asked of the databases in each database.

    Each check made is handed to `found`, which returns what it came to (a
    line for the summary of several databases) or raises to fail it.

    - Nothing asked of the databases (no `pending`, `checksums` or
      `indexes`): the code alone, once; no connection.
    - With one database: everything, in it.
    - With several: what does not depend on the database (chains, step
      modules, fields and indexes against their snapshots) once, first
      (``once`` set); a problem there stops the check, since a broken chain
      or step module says nothing of the databases. Then what is asked of
      the databases, in each (`each_database`, by `visit`'s rules).

    `allow_newer_steps` accepts the steps above a model's version, as `check`
    says.

    """
    if not (pending or checksums or indexes):
        found(await check_database(ws, allow_newer_steps=allow_newer_steps))
        return
    several = ws.config.several_databases
    if several:
        first = DatabaseCheck(await check(ws, allow_newer_steps=allow_newer_steps), once=True)
        found(first)
        if first.problems:
            return

    async def each(sub: Workspace) -> str:
        asked = await check_database(
            sub,
            pending=pending,
            checksums=checksums,
            indexes=indexes,
            static=not several,
            allow_newer_steps=allow_newer_steps,
        )
        return found(asked)

    await each_database(ws, each, visit)
