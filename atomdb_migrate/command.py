"""One plain function per command; the CLI only parses options and prints.

Every function here can be called from Python (an app's own deploy script,
a test) with a `Workspace`::

    ws = Workspace(load_config(url="mongodb://db/app", models=["app.models"]))
    async with ws:
        result = await upgrade(ws)

"""

from __future__ import annotations

import importlib
import re
import string
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from atomdb.nosql import NoSQLModelManager

from .config import TABLE, Config, mask, mask_url
from .exceptions import (
    ConfigError,
    ConnectionFailedError,
    MigrateError,
    UnknownModelError,
)
from .history import History
from .loader import load_migrations
from .lock import LeaseLock
from .model import VersionedModel
from .registry import MigrationRegistry
from .runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLE,
    ModelReport,
    Progress,
    Runner,
    count_versions,
)
from .schema import SchemaDiff, compare, infer_operations, newest_snapshot, snapshot
from .versions import BASE_VERSION, Step, parse_version

#: URLs of this scheme name an in-memory database (mongomock), kept for the
#: life of the process: ``mongomock://memory/blog``. For examples and tests.
MEMORY_SCHEME = "mongomock://"

_MEMORY_CLIENTS: dict[str, Any] = {}


def memory_client(url: str) -> Any:
    """The in-memory client for a ``mongomock://`` URL (one per host part, per process)."""
    host = url[len(MEMORY_SCHEME) :].split("/", 1)[0]
    client = _MEMORY_CLIENTS.get(host)
    if client is None:
        try:
            from mongomock_motor import AsyncMongoMockClient
        except ImportError as exc:
            raise ConfigError(
                f"mongomock:// URLs need mongomock-motor ({exc}): "
                "pip install 'atomdb-migrate[memory]'"
            ) from None
        client = _MEMORY_CLIENTS[host] = AsyncMongoMockClient()
    return client


def wire_manager(database: Any) -> None:
    """Point atom-db's model manager at a database, with a new object cache."""
    manager: Any = NoSQLModelManager.instance()
    manager.database = database
    manager.proxies = {}


class Workspace:
    """The configuration, the models and steps it names, and the connection.

    Models and step modules are loaded once, on first use; the connection is
    opened by ``async with workspace`` (or `connect`) and checked at once, so
    a wrong URL fails within the configured timeout.

    """

    def __init__(self, config: Config, registry: MigrationRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or MigrationRegistry.instance()
        self.steps: list[Step] = []
        self._loaded = False
        self._client: Any = None
        self._database: Any = None

    # ------------------------------------------------------------------
    # Models and steps
    # ------------------------------------------------------------------
    def load(self) -> None:
        """Import the configured model modules and load the step modules (once)."""
        if self._loaded:
            return
        root = str(self.config.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        for name in self.config.models:
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(
                    f"cannot import models module {name!r}: {type(exc).__name__}: {exc}"
                ) from exc
        if self.config.migrations is not None:
            self.steps = load_migrations(self.config.migrations, registry=self.registry)
        self._loaded = True

    def model(self, name: str) -> type[VersionedModel]:
        """A versioned model by its ``__model__`` name or, if unique, its class name."""
        self.load()
        if name in self.registry.models:
            return self.registry.models[name]
        matches = [m for n, m in self.registry.models.items() if n.rsplit(".", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        raise UnknownModelError(name, list(self.registry.models))

    def models(self, names: tuple[str, ...] | list[str] = ()) -> list[type[VersionedModel]]:
        """The models named, or every registered versioned model."""
        self.load()
        if names:
            return [self.model(n) for n in names]
        return [self.registry.models[n] for n in sorted(self.registry.models)]

    # ------------------------------------------------------------------
    # Connection
    # ------------------------------------------------------------------
    @property
    def database(self) -> Any:
        if self._database is None:
            raise ConfigError("not connected")
        return self._database

    async def connect(self) -> Any:
        """Connect, check the server answers, and wire atom-db's manager to it."""
        if self._database is not None:
            return self._database
        url = self.config.url
        if not url:
            raise ConfigError(
                "no MongoDB URL: give --url, set ATOMDB_MIGRATE_URL or MONGO_URL, "
                "or set `url` in pyproject.toml"
            )
        name = self.config.database_name()
        if url.startswith(MEMORY_SCHEME):
            self._database = memory_client(url)[name]
            self._client = None  # kept for the process: later commands see the same data
            wire_manager(self._database)
            return self._database
        from pymongo import AsyncMongoClient
        from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

        timeout_ms = int(self.config.timeout * 1000)
        try:
            client: Any = AsyncMongoClient(
                url,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                socketTimeoutMS=max(timeout_ms, 60000),
            )
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"invalid MongoDB URL {mask_url(url)!r}: {mask(str(exc), url)}"
            ) from None
        try:
            await client.admin.command("ping")
            database = client[name]
            # Credentials scoped to one database are checked on first use.
            await database.command("ping")
        except OperationFailure as exc:
            await client.close()
            reason = "authentication failed" if exc.code in (13, 18) else "refused"
            raise ConnectionFailedError(
                f"{mask_url(url)}: {reason}: {mask(str(exc.details or exc), url)}"
            ) from None
        except PyMongoError as exc:
            await client.close()
            raise ConnectionFailedError(
                f"cannot reach {mask_url(url)} within {self.config.timeout:g}s: "
                f"{mask(_first_reason(exc), url)}"
            ) from None
        self._client, self._database = client, database
        wire_manager(database)
        return database

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = self._database = None

    async def __aenter__(self) -> Workspace:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------
    def lock(self, command: str, wait: bool = False) -> LeaseLock:
        return LeaseLock(
            self.database[self.config.lock_collection],
            ttl=self.config.lock_ttl,
            command=command,
            wait=wait,
        )

    def history(self) -> History:
        return History(self.database[self.config.history_collection])


def _first_reason(exc: Exception) -> str:
    """PyMongo's reason, without its timeouts and topology description."""
    text = str(exc).splitlines()[0].split(", Timeout:")[0]
    return re.sub(r" \(configured timeouts:[^)]*\)", "", text)


# ----------------------------------------------------------------------
# init and revision: files only
# ----------------------------------------------------------------------
TABLE_TEMPLATE = """
[tool.{table}]
migrations = "{migrations}"
# models = ["app.models"]       # modules to import so the versioned models register
# database = "app"              # or put the database in the URL
# url: better given in ATOMDB_MIGRATE_URL or MONGO_URL than written here
"""


def init(directory: Path, migrations: str = "migrations") -> list[str]:
    """Create the migrations directory and the ``[tool.atomdb-migrate]`` table.

    Returns what was done, a line each. Nothing that exists is overwritten.

    """
    done: list[str] = []
    folder = directory / migrations
    if folder.is_dir():
        done.append(f"{folder} exists")
    else:
        folder.mkdir(parents=True)
        done.append(f"created {folder}")
    pyproject = directory / "pyproject.toml"
    text = pyproject.read_text() if pyproject.is_file() else ""
    if re.search(rf"^\[tool\.{re.escape(TABLE)}\]", text, flags=re.M):
        done.append(f"{pyproject} already has [tool.{TABLE}]")
    else:
        sep = "" if not text or text.endswith("\n") else "\n"
        pyproject.write_text(text + sep + TABLE_TEMPLATE.format(table=TABLE, migrations=migrations))
        done.append(f"added [tool.{TABLE}] to {pyproject}")
    return done


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


def revision(ws: Workspace, message: str, model: str, *, autogenerate: bool = False) -> Revision:
    """Write a new step module for a model, and return what was written.

    The step leaves the model's newest version: the last version its steps
    reach or its ``__version__``, whichever is greater, and goes to the next
    one. When the model's ``__version__`` is already ahead of its steps, the
    step goes from the last version they reach to ``__version__``.

    The module records the model's fields as its ``schema``. With
    `autogenerate`, its ``operations`` are inferred from the difference
    between the model and the newest snapshot (see `atomdb_migrate.schema`).

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
    latest = graph.latest
    if latest is not None and latest < cls.__parsed_version__:
        start, end = str(latest), cls.__version__
    else:
        start = str(max(cls.__parsed_version__, latest) if latest else cls.__parsed_version__)
        end = next_version(start)
    fields = snapshot(cls)
    values = dict(
        message=message.replace('"""', "'''"),
        model=cls.__model__,
        from_version=start,
        to_version=end,
        schema=_format_schema(fields),
    )
    diff: SchemaDiff | None = None
    if autogenerate:
        base = newest_snapshot(graph.steps)
        if base is None:
            lines = [
                "# No step of this model records a schema yet: nothing to compare with.",
                "# This step records the model's fields; write its operations by hand.",
            ]
            values["previous"] = "no earlier step (none records one)"
        else:
            diff = compare(base.schema or {}, fields)
            lines = infer_operations(cls, diff) or ["# No change found since the snapshot."]
            values["previous"] = f"{Path(base.source).name} (version {base.to_version})"
        values["operations"] = "".join(f"    {line}\n" for line in lines)
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
        path, cls.__model__, start, end, diff, bump=parse_version(end) != cls.__parsed_version__
    )


def _format_schema(fields: dict[str, str]) -> str:
    if not fields:
        return "{}"
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in fields.items()) + "}"


# ----------------------------------------------------------------------
# upgrade, downgrade, stamp: locked, recorded
# ----------------------------------------------------------------------
@dataclass
class RunResult:
    """What a run of upgrade or downgrade did, per model."""

    command: str
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
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    continue_on_error: bool = False,
    wait: bool = False,
    sample: int = DEFAULT_SAMPLE,
    progress: Progress | None = None,
) -> RunResult:
    """Bring stored documents to the code's versions (or `to`, for one model)."""
    classes = ws.models(models)
    if to is not None and len(classes) != 1:
        raise ConfigError("--to needs exactly one model")
    return await _run(
        ws,
        "upgrade",
        classes,
        to,
        dry_run=dry_run,
        batch_size=batch_size,
        continue_on_error=continue_on_error,
        wait=wait,
        sample=sample,
        progress=progress,
    )


async def downgrade(
    ws: Workspace,
    model: str,
    to: str,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    continue_on_error: bool = False,
    wait: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Take one model's documents back to `to` through the downgrade functions."""
    cls = ws.model(model)
    return await _run(
        ws,
        "downgrade",
        [cls],
        to,
        dry_run=dry_run,
        batch_size=batch_size,
        continue_on_error=continue_on_error,
        wait=wait,
        sample=0,
        progress=progress,
    )


async def _run(
    ws: Workspace,
    command: str,
    classes: list[type[VersionedModel]],
    to: str | None,
    *,
    dry_run: bool,
    batch_size: int,
    continue_on_error: bool,
    wait: bool,
    sample: int,
    progress: Progress | None,
) -> RunResult:
    result = RunResult(command, dry_run)
    await ws.connect()
    runner = Runner(
        ws.database,
        batch_size=batch_size,
        continue_on_error=continue_on_error,
        dry_run=dry_run,
        sample=sample,
        progress=progress,
        registry=ws.registry,
        skip_collections=(ws.config.lock_collection, ws.config.history_collection),
    )

    async def run_all() -> None:
        for cls in classes:
            run = runner.downgrade if command == "downgrade" else runner.upgrade
            result.reports.append(await run(cls, to))

    if dry_run:  # writes nothing: no lock, no history
        await run_all()
        return result
    if not continue_on_error:
        # Refuse a broken chain before taking the lock: then nothing at all
        # is written, not even a history record.
        survey = Runner(ws.database, dry_run=True, sample=0, registry=ws.registry)
        for cls in classes:
            await (survey.downgrade(cls, to) if command == "downgrade" else survey.upgrade(cls, to))
    arguments = {
        "models": [c.__model__ for c in classes],
        "to": to,
        "batch_size": batch_size,
        "continue_on_error": continue_on_error,
    }
    async with ws.lock(command, wait=wait) as lock:
        runner.lock = lock
        history = ws.history()
        record = await history.start(command, arguments)
        try:
            await run_all()
        except BaseException as exc:
            outcome = "failed" if isinstance(exc, Exception) else "interrupted"
            await history.finish(
                record,
                outcome,
                {r.model: r.counts() for r in result.reports},
                failures=result.failures,
                error=mask(str(exc), ws.config.url) or type(exc).__name__,
            )
            raise
        outcome = "succeeded" if not any(r.failed for r in result.reports) else "failed"
        await history.finish(
            record, outcome, {r.model: r.counts() for r in result.reports}, failures=result.failures
        )
    return result


async def stamp(ws: Workspace, model: str, version: str, *, wait: bool = False) -> int:
    """Set every stored document of a model to `version` without transforming it.

    For adopting data that is already in the shape of that version. Returns
    how many documents changed.

    """
    cls = ws.model(model)
    value = str(parse_version(version, model=cls.__model__))
    await ws.connect()
    async with ws.lock("stamp", wait=wait):
        history = ws.history()
        record = await history.start("stamp", {"models": [cls.__model__], "to": value})
        res = await ws.database[cls.__model__].update_many(
            {"__version__": {"$ne": value}}, {"$set": {"__version__": value}}
        )
        await history.finish(
            record, "succeeded", {cls.__model__: {"stamped": res.modified_count, "target": value}}
        )
    return int(res.modified_count)


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

    @property
    def total(self) -> int:
        return sum(self.stored.values())


async def status(ws: Workspace, models: tuple[str, ...] | list[str] = ()) -> list[ModelStatus]:
    """Per model: the code's version and the stored documents at each version.

    One aggregation per collection; nothing is read into Python but the counts.

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
                former[old] = sum(r["n"] for r in more)
                rows += more
        stored: dict[str, int] = {}
        pending = newer = invalid = 0
        for row in rows:
            raw = row["_id"]
            name = BASE_VERSION if raw is None else str(raw)
            stored[name] = stored.get(name, 0) + row["n"]
            try:
                v = parse_version(BASE_VERSION if raw is None else raw)
            except MigrateError:
                invalid += row["n"]
                continue
            if v < cls.__parsed_version__:
                pending += row["n"]
            elif v > cls.__parsed_version__:
                newer += row["n"]
        ordered = dict(sorted(stored.items(), key=lambda kv: _sort_key(kv[0])))
        out.append(
            ModelStatus(cls.__model__, cls.__version__, ordered, pending, newer, invalid, former)
        )
    return out


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
        if name not in chains and len(graph):
            chains[name] = graph.steps
    runs: list[dict[str, Any]] = []
    if ws.config.url:
        await ws.connect()
        runs = await ws.history().runs(limit)
    return chains, runs


def drift(ws: Workspace) -> list[str]:
    """Models whose fields differ from their newest snapshot at the same version.

    A model whose ``__version__`` is past its newest snapshot is not checked:
    its new step is still to be written (the chain check says so).

    """
    found = []
    for cls in ws.models():
        base = newest_snapshot(ws.registry.graph(cls).steps)
        if base is None or base.to_key != cls.__parsed_version__:
            continue
        diff = compare(base.schema or {}, snapshot(cls))
        if diff:
            found.append(
                f"model {cls.__model__!r}: fields differ from the schema of version "
                f"{base.to_version} in {base.source}: {diff.describe()}. A change "
                "without a migration? Run `atomdb-migrate revision --autogenerate "
                f"--model {cls.__model__} -m ...`, or update that schema if the "
                "stored documents do not change"
            )
    return found


async def check(ws: Workspace, *, pending: bool = False) -> list[str]:
    """Every problem found, a line each; empty when all is well.

    Chains must be complete, every step module must load, and every model's
    fields must match its newest schema snapshot at the same version. With
    `pending`, documents still behind their model's version are a problem too.

    """
    try:
        ws.load()
    except MigrateError as exc:
        return [str(exc)]
    problems = [str(p) for p in ws.registry.problems()]
    problems += drift(ws)
    if pending:
        for s in await status(ws):
            if s.pending:
                problems.append(
                    f"model {s.model!r}: {s.pending} stored documents are behind "
                    f"version {s.version}"
                )
            if s.invalid:
                problems.append(
                    f"model {s.model!r}: {s.invalid} stored documents have an invalid __version__"
                )
    return problems
