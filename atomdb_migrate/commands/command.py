"""One plain function per command; the CLI only parses options and prints.

Every function here can be called from Python (an app's own deploy script,
a test) with a `Workspace`::

    ws = Workspace(load_config(url="mongodb://db/app", models=["app.models"]))
    async with ws:
        result = await upgrade(ws)

"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import OperationFailure

from ..core.masking import mask
from ..core.storage import VERSION_INDEX
from ..driver.mongo import count_versions, has_version_index, is_mongomock, read_validator
from ..driver.retry import Retry
from ..engine.collection_state import asked_validator, last_validator_operation
from ..engine.history import History, Outcome
from ..engine.lock import LOCK_ID, is_alive
from ..engine.lock import unlock as clear_lock
from ..engine.renames import count_references
from ..engine.runner import DOWNGRADE, UPGRADE, Direction, ModelReport, Progress, Runner, RunOptions
from ..exceptions import ConfigError, MigrateError, short_repr, shorten
from ..model.versioned import VersionedModel
from ..schema import indexes as declared_indexes
from ..schema.snapshots import (
    compare,
    previous_snapshot,
    snapshot,
    step_to,
)
from ..steps.versions import BASE_VERSION, Step, parse_version
from . import checksums as step_checksums
from .config import TABLE, find_pyproject
from .revision import Revision, revision
from .workspace import Workspace

#: Seconds to keep trying to record how a failed run ended, each try bounded
#: by it too: the record fits just past the --retry-for window.
FINISH_RETRY = 2.0

__all__ = [
    "ModelStatus",
    "Revision",
    "RunResult",
    "Workspace",
    "check",
    "databases",
    "downgrade",
    "drift",
    "history",
    "init",
    "revision",
    "stamp",
    "status",
    "upgrade",
]


# ----------------------------------------------------------------------
# init and revision: files only
# ----------------------------------------------------------------------
TABLE_TEMPLATE = """
[tool.{table}]
migrations = {migrations}
# models = ["app.models"]       # modules to import so the versioned models register
# database = "app"              # or put the database in the URL
# url: better given in ATOMDB_MIGRATE_URL or MONGO_URL than written here
version-index = true            # upgrade keeps an index on {{__version__: 1, _id: 1}}
"""


def init(directory: Path, migrations: str = "migrations") -> list[str]:
    """Create the migrations directory and the ``[tool.atomdb-migrate]`` table.

    The table goes into the project's ``pyproject.toml``: the nearest one
    from `directory` up (however its table is spelled), or a new one in
    `directory` when there is none. The migrations directory is made in
    `directory` and recorded relative to that ``pyproject.toml``. Returns
    what was done, a line each. Nothing that exists is overwritten.

    Raises
    ------
    ConfigError
        If the ``pyproject.toml`` found does not parse; nothing is written.

    """
    done: list[str] = []
    pyproject = find_pyproject(directory) or directory / "pyproject.toml"
    text = pyproject.read_text() if pyproject.is_file() else ""
    try:
        table = tomllib.loads(text).get("tool", {}).get(TABLE)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {pyproject}: {exc}; nothing was written") from None
    folder = directory / migrations
    if folder.is_dir():
        done.append(f"{folder} exists")
    else:
        folder.mkdir(parents=True)
        done.append(f"created {folder}")
    if table is not None:
        done.append(f"{pyproject} already has [tool.{TABLE}]")
        return done
    relative = Path(os.path.relpath(folder.resolve(), pyproject.parent.resolve())).as_posix()
    sep = "" if not text or text.endswith("\n") else "\n"
    entry = TABLE_TEMPLATE.format(table=TABLE, migrations=_toml_string(relative))
    pyproject.write_text(text + sep + entry)
    done.append(f"added [tool.{TABLE}] to {pyproject}")
    return done


def _toml_string(text: str) -> str:
    """A TOML basic string holding `text`."""
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'


# ----------------------------------------------------------------------
# upgrade, downgrade, stamp: locked, recorded
# ----------------------------------------------------------------------
@dataclass
class RunResult:
    """What a run of upgrade or downgrade did, per model.

    Filled as the run goes: a run that stopped on an error (or was
    interrupted) holds the report of every model it started, with the
    documents written before it stopped.

    """

    command: Literal["upgrade", "downgrade"]
    dry_run: bool
    reports: list[ModelReport] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for r in self.reports for f in r.failures]


async def upgrade(
    ws: Workspace,
    models: tuple[str, ...] | list[str] = (),
    *,
    to: str | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Bring stored documents to the code's versions (or `to`, for one model).

    Pass `result` to see what was done even when the run raises. With
    ``options.retry_failed``, only the documents the latest run with
    failures recorded (see `failures`) are taken.

    """
    options = options or RunOptions()
    only: dict[str, list[Any]] | None = None
    classes = ws.models(models)
    if options.retry_failed:
        found = await failures(ws)
        if found is None or not found.ids():
            raise ConfigError("no recorded run has failed documents to retry")
        # Failures recorded under a former name are the model's now.
        only = {}
        for name, ids in found.ids().items():
            only.setdefault(ws.registry.resolve(name), []).extend(ids)
        if models:
            missing = [c.__model__ for c in classes if c.__model__ not in only]
            if missing:
                raise ConfigError(
                    f"no recorded failure of {', '.join(missing)} to retry "
                    f"(the latest run with failures recorded: {', '.join(sorted(only))})"
                )
        else:
            classes = [c for c in classes if c.__model__ in only]
            if not classes:
                raise ConfigError(
                    f"the recorded failures are of models the code does not have: "
                    f"{', '.join(sorted(only))}"
                )
    if to is not None and len(classes) != 1:
        raise ConfigError("--to needs exactly one model")
    return await _run(ws, UPGRADE, classes, to, options, progress, result, only)


async def downgrade(
    ws: Workspace,
    model: str,
    to: str,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Take one model's documents back to `to` through the downgrade functions."""
    options = replace(options or RunOptions(), sample=0)
    return await _run(ws, DOWNGRADE, [ws.model(model)], to, options, progress, result, None)


async def _run(
    ws: Workspace,
    direction: Direction,
    classes: list[type[VersionedModel]],
    to: str | None,
    options: RunOptions,
    progress: Progress | None,
    result: RunResult | None,
    only: dict[str, list[Any]] | None,
) -> RunResult:
    result = result or RunResult(direction.name, options.dry_run)
    options = replace(options, version_index=options.version_index and ws.config.version_index)
    await ws.connect()
    runner = Runner(
        ws.database,
        options,
        progress=progress,
        registry=ws.registry,
        skip_collections=ws.internal_collections,
        only=only,
        redact=lambda text: mask(text, ws.config.url),
    )
    result.reports = runner.reports
    if options.dry_run:  # writes nothing: no lock, no history
        for cls in classes:
            await runner.run(cls, to, direction)
        return result
    # Refuse a broken chain before taking the lock: then nothing at all is
    # written, not even a history record. The runs use these surveys.
    surveys = {cls: await runner.survey(cls, to, direction) for cls in classes}
    arguments = {
        "models": [c.__model__ for c in classes],
        "to": to,
        "batch_size": options.batch_size,
        "continue_on_error": options.continue_on_error,
        "retry_failed": only is not None,
        "write_concern": options.written_with(),
        "retry_for": options.retry_for,
        "max_rate": options.max_rate,
        "max_lag": options.max_lag,
        "call_timeout": options.call_timeout,
    }
    retry = runner.retry
    sums = applied_checksums(ws, classes, to) if direction is UPGRADE else None
    async with ws.lock(direction.name, wait=options.wait, retry=retry) as lock:
        runner.lock = lock
        history = History(runner.database[ws.config.history_collection])
        await retry.call(
            "recording the run the lock's last holder left",
            partial(history.abandon_holder, lock.replaced),
        )
        record = await retry.call(
            "recording the start of the run",
            partial(
                history.start,
                direction.name,
                arguments,
                lock.owner,
                checksums=sums,
                record_id=ObjectId(),
            ),
        )

        def finish(policy: Retry, outcome: Outcome, error: str | None = None) -> Any:
            counts = {r.model: r.counts() for r in result.reports}
            done = partial(history.finish, record, outcome, counts, failures=result.failures)
            return policy.call("recording how the run ended", partial(done, error=error))

        try:
            for cls in classes:
                await runner.run(cls, to, direction, surveys[cls])
        except BaseException as exc:
            stopped: Outcome = "failed" if isinstance(exc, Exception) else "interrupted"
            # Briefly: the server may be the reason the run stopped. A record
            # left "running" is marked abandoned by the next run.
            try:
                why = shorten(mask(str(exc), ws.config.url)) or type(exc).__name__
                brief = Retry(min(retry.seconds, FINISH_RETRY), call_timeout=FINISH_RETRY)
                await finish(brief, stopped, why)
            except MigrateError:
                # Not recorded: the lock keeps the counts for the next run to
                # copy into the record (see `LeaseLock.keep_progress`).
                lock.keep_progress({r.model: r.counts() for r in result.reports})
            raise
        outcome: Outcome = "failed" if any(r.failed for r in result.reports) else "succeeded"
        await finish(retry, outcome)
    return result


def applied_checksums(
    ws: Workspace, classes: list[type[VersionedModel]], to: str | None
) -> list[dict[str, Any]]:
    """The checksums of the steps an upgrade takes the models' documents through.

    Every step of each chain up to the target: documents at any version
    below it are taken through the steps above theirs.

    """
    found = []
    for cls in classes:
        target = parse_version(to) if to is not None else cls.__parsed_version__
        found += [
            step_checksums.describe(s) for s in ws.registry.graph(cls).steps if s.to_key <= target
        ]
    return found


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


async def accept_checksums(
    ws: Workspace, models: tuple[str, ...] = (), *, wait: bool = False
) -> tuple[int, int]:
    """Record the checksums of the models' steps as they are now, after review.

    Returns how many steps were recorded, and how many of them had another
    checksum recorded before.

    """
    ws.load()
    classes = ws.models(models)
    await ws.connect()
    steps = [s for cls in classes for s in ws.registry.graph(cls).steps]
    async with ws.lock("stamp", wait=wait) as lock:
        history = ws.history()
        await history.abandon_holder(lock.replaced)
        changed = step_checksums.changed(steps, await history.with_checksums())
        sums = [step_checksums.describe(s) for s in steps]
        arguments = {"models": [c.__model__ for c in classes], "accept_checksums": True}
        record = await history.start("stamp", arguments, lock.owner, checksums=sums)
        await history.finish(record, "succeeded", {})
    return len(sums), len(changed)


def known_versions(ws: Workspace, cls: type[VersionedModel]) -> list[str]:
    """The versions a model's chain knows: 0, its ``__version__``, and every step's."""
    found = {parse_version(BASE_VERSION), cls.__parsed_version__}
    for s in ws.registry.graph(cls).steps:
        found.update((s.from_key, s.to_key))
    return [str(v) for v in sorted(found)]


async def stamp(
    ws: Workspace, model: str, version: str, *, wait: bool = False, force: bool = False
) -> int:
    """Set every stored document of a model to `version` without transforming it.

    For adopting data that is already in the shape of that version. Returns
    how many documents changed.

    Raises
    ------
    ConfigError
        If the model's chain does not know `version` (0, the model's
        ``__version__``, or a version a step leaves or arrives at), unless
        `force` is given.

    """
    cls = ws.model(model)
    value = str(parse_version(version, model=cls.__model__, what="stamp version"))
    known = known_versions(ws, cls)
    if value not in known and not force:
        raise ConfigError(
            f"model {cls.__model__!r}: its chain does not know version {value} "
            f"(known: {', '.join(known)}); give --force to stamp it anyway"
        )
    await ws.connect()
    async with ws.lock("stamp", wait=wait) as lock:
        history = ws.history()
        await history.abandon_holder(lock.replaced)
        record = await history.start("stamp", {"models": [cls.__model__], "to": value}, lock.owner)
        res = await ws.database[cls.__model__].update_many(
            {"__version__": {"$ne": value}}, {"$set": {"__version__": value}}
        )
        await history.finish(
            record, "succeeded", {cls.__model__: {"stamped": res.modified_count, "target": value}}
        )
    return int(res.modified_count)


async def holder(ws: Workspace) -> dict[str, Any] | None:
    """The migration lock's document, if the lock is held (or was, and never released)."""
    await ws.connect()
    found: dict[str, Any] | None = await ws.database[ws.config.lock_collection].find_one(
        {"_id": LOCK_ID}
    )
    return found


async def unlock(ws: Workspace, *, force: bool = False) -> dict[str, Any] | None:
    """Clear the migration lock a dead runner left; return its holder (None: it was free).

    The holder's run, if still recorded as running, is marked abandoned.

    Raises
    ------
    LockAliveError
        If the holder still renews its lease, unless `force` is given.

    """
    await ws.connect()
    cleared = await clear_lock(ws.database[ws.config.lock_collection], force=force)
    if cleared is not None and cleared.get("owner"):
        await ws.history().abandon_holder(cleared)
    return cleared


@dataclass
class Failures:
    """The documents a run recorded as failed."""

    #: The run: its ``_id``, command, ``started_at`` and outcome.
    run: dict[str, Any]
    #: Each failure: ``model``, ``_id``, ``step``, ``error``.
    failures: list[dict[str, Any]]
    #: The later run that retried them all and succeeded, if one did.
    retried_by: dict[str, Any] | None = None

    def ids(self) -> dict[str, list[Any]]:
        """The failed documents' ``_id``, by model."""
        out: dict[str, list[Any]] = {}
        for f in self.failures:
            if isinstance(f, dict) and isinstance(f.get("model"), str) and "_id" in f:
                out.setdefault(f["model"], []).append(f["_id"])
        return out


async def failures(ws: Workspace) -> Failures | None:
    """The failed documents of the latest run that recorded any (None if none did)."""
    await ws.connect()
    run = await ws.history().with_failures()
    if run is None:
        return None
    found = run.get("failures")
    result = Failures(
        run, [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
    )
    if run.get("command") == "upgrade":
        models = sorted({ws.registry.resolve(m) for m in result.ids()})
        result.retried_by = await ws.history().retried(run, models)
    return result


# ----------------------------------------------------------------------
# status, history, check: read only
# ----------------------------------------------------------------------
@dataclass
class ModelStatus:
    """Where one model's stored documents are."""

    model: str
    version: str
    stored: dict[str, int]
    pending: int
    newer: int
    invalid: int
    #: Documents still in the collection of a former name (``ops.rename_model``),
    #: by that name; counted in `stored` and `pending` too.
    former: dict[str, int] = field(default_factory=dict)
    #: Documents without a version although an upgrade left none behind: when
    #: that upgrade finished, and how many there are now. Code that does not
    #: version the model (an old pod) still saves it, dropping the version and
    #: the fields it does not know.
    unversioned_since: datetime | None = None
    unversioned: int = 0

    @property
    def total(self) -> int:
        return sum(self.stored.values())


# ----------------------------------------------------------------------
# Several databases
# ----------------------------------------------------------------------
#: The server's own databases, which a pattern never matches.
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})


async def databases(ws: Workspace, *, canary: str | None = None) -> list[str]:
    """The databases the settings name, in the order to visit them.

    The names given (``--database`` more than once) in their order, then
    those on the server matching the pattern (``--databases``, searched
    with `re.search`: anchor it with ``^`` and ``$``), sorted; each once.
    The server's own databases (admin, config, local) match no pattern.
    With `canary`, that database comes first.

    Raises
    ------
    ConfigError
        If the settings name no database, or the canary is not among them.

    """
    config = ws.config
    if not config.several_databases:
        names = [config.database_name()]
    else:
        client = await ws.client()
        try:
            found = sorted(await client.list_database_names())
        except OperationFailure as exc:
            if config.database_pattern is not None:
                raise ConfigError(
                    f"--databases needs the server's database names, and it refused them: "
                    f"{exc.details.get('errmsg') if exc.details else exc}"
                ) from None
            found = list(config.databases)  # scoped credentials: take the names given
        missing = [n for n in config.databases if n not in found]
        if missing:
            raise ConfigError(
                f"no database {', '.join(short_repr(n) for n in missing)} on the server: "
                "a database given by name must exist (a typo would pass as nothing to do)"
            )
        names = list(config.databases)
        if config.database_pattern is not None:
            matched = [
                n
                for n in found
                if n not in SYSTEM_DATABASES and re.search(config.database_pattern, n)
            ]
            if not matched:  # a typo, even beside names that are there
                given = short_repr(config.database_pattern)
                raise ConfigError(f"no database on the server matches --databases {given}")
            names += matched
        names = list(dict.fromkeys(names))
    if canary is not None:
        if canary not in names:
            raise ConfigError(
                f"the canary database {short_repr(canary)} is not among the databases "
                f"given ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
            )
        names.remove(canary)
        names.insert(0, canary)
    return names


async def database_exists(ws: Workspace, name: str) -> bool:
    """Whether the server has the database (True when it does not let us list them)."""
    client = await ws.client()
    try:
        return name in await client.list_database_names()
    except OperationFailure:
        return True  # credentials scoped to the databases: the run will tell


async def status(ws: Workspace, models: tuple[str, ...] | list[str] = ()) -> list[ModelStatus]:
    """Per model: the code's version and the stored documents at each version.

    One aggregation per collection; nothing is read into Python but the
    counts. Each stored version counts once, whatever its BSON form (the
    string ``"2"``, the int ``2``, the double ``2.0``).

    """
    classes = ws.models(models)
    await ws.connect()
    out: list[ModelStatus] = []
    names = set(await ws.database.list_collection_names())
    for cls in classes:
        rows = list(await count_versions(ws.database[cls.__model__]))
        former: dict[str, int] = {}
        for old in ws.registry.former_names(cls):
            if old in names:
                more = await count_versions(ws.database[old])
                former[old] = sum(n for _, n in more)
                rows += more
        stored: dict[str, int] = {}
        pending = newer = invalid = 0
        graph, head = ws.registry.graph(cls), cls.__parsed_version__
        for raw, n in rows:
            plan = graph.plan(raw, head, head=head)
            if plan.kind == "invalid":
                invalid += n
            elif plan.kind == "newer":
                newer += n
            elif plan.kind != "current":
                pending += n  # migrate, or missing a step: behind either way
            name = _invalid_name(raw) if plan.stored is None else str(plan.stored)
            stored[name] = stored.get(name, 0) + n
        ordered = dict(sorted(stored.items(), key=lambda kv: _sort_key(kv[0])))
        found = ModelStatus(
            cls.__model__, cls.__version__, ordered, pending, newer, invalid, former
        )
        unversioned = stored.get(BASE_VERSION, 0)
        if unversioned and cls.__parsed_version__ != parse_version(BASE_VERSION):
            since = await ws.history().last_complete(cls.__model__, cls.__version__)
            if since is not None:
                found.unversioned_since, found.unversioned = since, unversioned
        out.append(found)
    return out


def _invalid_name(raw: Any) -> str:
    """How an invalid stored version is shown: its repr, cut short."""
    return short_repr(raw, 40)


def _sort_key(version: str) -> tuple[int, Any]:
    try:
        return (0, parse_version(version))
    except MigrateError:
        return (1, version)


async def history(
    ws: Workspace, limit: int = 20
) -> tuple[dict[str, list[Step]], list[dict[str, Any]]]:
    """Each model's chain of steps, and the latest recorded runs (if connected)."""
    classes = ws.models()
    chains = {c.__model__: ws.registry.graph(c).steps for c in classes}
    for name, graph in ws.registry.graphs.items():
        key = ws.registry.resolve(name)
        if key not in chains and len(graph):
            chains[key] = ws.registry.graph(key).steps
    runs: list[dict[str, Any]] = []
    if ws.config.url:
        await ws.connect()
        runs = await ws.history().runs(limit)
        lock = await holder(ws)
        for run in runs:
            alive = lock is not None and lock.get("owner") == run.get("owner") and is_alive(lock)
            if run.get("outcome") == "running" and not alive:
                run["outcome"] = "abandoned (its runner no longer holds the lock)"
    return chains, runs


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
        last = last_validator_operation(ws.registry.graph(cls).steps, cls.__parsed_version__)
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
    ws: Workspace, *, pending: bool = False, indexes: bool = False, static: bool = True
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

    """
    try:
        ws.load()
        classes = ws.models()
    except MigrateError as exc:
        return [str(exc)]
    problems: list[str] = []
    if static:
        problems += [str(p) for p in ws.registry.problems()]
        problems += drift(ws)
        problems += index_drift(ws)
    if indexes or pending:
        problems += await collection_indexes(ws)
        problems += await collection_validators(ws)
    if pending:
        for s in await status(ws, [c.__model__ for c in classes]):
            if s.pending:
                problems.append(
                    f"model {s.model!r}: {s.pending} stored documents are behind "
                    f"version {s.version}"
                )
            if s.newer:
                problems.append(
                    f"model {s.model!r}: {s.newer} stored documents are newer than "
                    f"version {s.version} (written by newer code)"
                )
            if s.invalid:
                problems.append(
                    f"model {s.model!r}: {s.invalid} stored documents have an invalid __version__"
                )
            for old, n in s.former.items():
                problems.append(
                    f"model {s.model!r}: {n} documents are still in the collection of its "
                    f"former name {old!r}; `atomdb-migrate upgrade` moves them"
                )
            if s.unversioned_since is not None:
                problems.append(
                    f"model {s.model!r}: {s.unversioned} documents have no version although "
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
                        f"model {cls.__model__!r}: {n} stored documents still refer to it "
                        f"under its former name {old!r}; `atomdb-migrate upgrade` rewrites them"
                    )
    return problems
