"""Configuration: command-line options, the environment, and pyproject.toml.

Each setting comes from the first of: the command-line option; the
environment (the URL only: ``ATOMDB_MIGRATE_URL``, then ``MONGO_URL``); the
``[tool.atomdb-migrate]`` table of the nearest ``pyproject.toml`` (searched
from the working directory upwards); the default.

```toml
[tool.atomdb-migrate]
url = "mongodb://localhost:27017"     # better given in the environment
database = "app"                      # or the database in the URL's path
# databases = "^tenant_"              # or every database whose name matches
models = ["app.models"]               # modules to import so models register
migrations = "migrations"             # relative to pyproject.toml
lock-collection = "atomdb_migrate_lock"
history-collection = "atomdb_migrate_history"
lock-ttl = 30                         # seconds a lease lasts unless renewed
timeout = 10                          # seconds to reach the server
```

"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.masking import invalid_url
from ..driver.mongo import MEMORY_SCHEME
from ..exceptions import ConfigError, short_repr

#: The table of pyproject.toml that holds the settings.
TABLE = "atomdb-migrate"

#: The environment variables that give the URL, in order.
URL_VARIABLES = ("ATOMDB_MIGRATE_URL", "MONGO_URL")

#: The collection holding the migration lock.
DEFAULT_LOCK_COLLECTION = "atomdb_migrate_lock"

#: The collection recording each run.
DEFAULT_HISTORY_COLLECTION = "atomdb_migrate_history"

KEYS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "database": str,
    "databases": str,
    "models": list,
    "migrations": str,
    "lock-collection": str,
    "history-collection": str,
    "lock-ttl": (int, float),
    "timeout": (int, float),
    "version-index": bool,
}


@dataclass
class Config:
    """The settings of one invocation."""

    #: The MongoDB URL.
    url: str | None = None

    #: The database name; defaults to the database in the URL.
    database: str | None = None

    #: Several databases by name (``--database`` given more than once).
    databases: list[str] = field(default_factory=list)

    #: A regular expression: every database on the server whose whole name
    #: matches it (``--databases``), besides `databases`.
    database_pattern: str | None = None

    #: Modules to import so their versioned models register.
    models: list[str] = field(default_factory=list)

    #: The migrations directory.
    migrations: Path | None = None

    #: The collection holding the migration lock.
    lock_collection: str = DEFAULT_LOCK_COLLECTION

    #: The collection recording each run.
    history_collection: str = DEFAULT_HISTORY_COLLECTION

    #: Seconds a lock lease lasts unless its runner renews it.
    lock_ttl: float = 30.0

    #: Seconds to wait for the server before giving up.
    timeout: float = 10.0

    #: Whether ``upgrade`` creates the toolkit's index on ``{__version__: 1,
    #: _id: 1}`` in each model's collection (see `atomdb_migrate.mongo`).
    version_index: bool = True

    #: The pyproject.toml the settings were read from, if any.
    pyproject: Path | None = None

    @property
    def root(self) -> Path:
        """The project directory: where pyproject.toml is, else the working directory."""
        return self.pyproject.parent if self.pyproject else Path.cwd()

    @property
    def several_databases(self) -> bool:
        """Whether the settings name databases by list or pattern (see `command.databases`)."""
        return bool(self.databases) or self.database_pattern is not None

    def database_name(self) -> str:
        """The database to use: the setting, else the one in the URL.

        Raises
        ------
        ConfigError
            If neither names a database, or if the settings name several.

        """
        if self.several_databases:
            raise ConfigError(
                "this command works on one database at a time, and several were given "
                "(--database more than once, --databases, or `databases` in pyproject.toml): "
                "give one --database"
            )
        if self.database:
            return self.database
        if self.url and self.url.startswith(MEMORY_SCHEME):
            parts = self.url.split("/", 3)
            if len(parts) == 4 and parts[3]:
                return parts[3]
        elif self.url:
            from pymongo.uri_parser import parse_uri

            try:
                name = parse_uri(self.url).get("database")
            except Exception as exc:
                raise invalid_url(self.url, exc) from None
            if name:
                return str(name)
        raise ConfigError(
            "no database: give --database, put it in the URL "
            "(mongodb://host/NAME), or set `database` in pyproject.toml"
        )


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml from `start` (default: the working directory) up."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_table(path: Path) -> dict[str, Any]:
    """The ``[tool.atomdb-migrate]`` table of a pyproject.toml, checked."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    table = data.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r} in [tool.{TABLE}]; known keys: {', '.join(KEYS)}"
            )
        if not isinstance(value, KEYS[key]) or (isinstance(value, bool) and KEYS[key] is not bool):
            raise ConfigError(
                f"{path}: [tool.{TABLE}] {key} has the wrong type ({type(value).__name__})"
            )
    if not all(isinstance(m, str) for m in table.get("models", [])):
        raise ConfigError(f"{path}: [tool.{TABLE}] models must be a list of module names")
    for key in ("lock-ttl", "timeout"):
        if key in table:
            seconds(table[key], f"{path}: [tool.{TABLE}] {key}")
    return table


#: The shortest lease and server timeout accepted, in seconds.
MIN_SECONDS = 0.1


def seconds(value: float, what: str) -> float:
    """A number of seconds, checked: finite and at least `MIN_SECONDS`.

    Raises
    ------
    ConfigError
        For NaN, infinity, zero, a negative number, or less than `MIN_SECONDS`.

    """
    if not math.isfinite(value) or value < MIN_SECONDS:
        raise ConfigError(
            f"{what} must be a finite number of seconds, at least {MIN_SECONDS:g}, "
            f"not {short_repr(value)}"
        )
    return float(value)


def load_config(
    *,
    url: str | None = None,
    database: str | Sequence[str] | None = None,
    databases: str | None = None,
    models: Sequence[str] = (),
    migrations: str | Path | None = None,
    timeout: float | None = None,
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the settings from options, the environment and pyproject.toml.

    `database` names one database or several; `databases` is a regular
    expression for database names. Either, given, replaces both settings of
    pyproject.toml (``database``, ``databases``), which cannot be set together.

    """
    env = os.environ if environ is None else environ
    pyproject = find_pyproject(start)
    table = read_table(pyproject) if pyproject else {}
    root = pyproject.parent if pyproject else (start or Path.cwd())
    if url is None:
        url = next((env[v] for v in URL_VARIABLES if env.get(v)), None) or table.get("url")
    if migrations is None and "migrations" in table:
        migrations = root / table["migrations"]
    names = [database] if isinstance(database, str) else list(database or ())
    if not names and databases is None:
        if "database" in table and "databases" in table:
            raise ConfigError(
                f"{pyproject}: [tool.{TABLE}] sets both database and databases; keep one"
            )
        names = [table["database"]] if "database" in table else []
        databases = table.get("databases")
    names = [database_name(name) for name in dict.fromkeys(names)]
    several = len(names) > 1 or databases is not None
    return Config(
        url=url,
        database=None if several else next(iter(names), None),
        databases=names if several else [],
        database_pattern=pattern(databases),
        models=list(models) or list(table.get("models", [])),
        migrations=Path(migrations) if migrations is not None else None,
        lock_collection=table.get("lock-collection", DEFAULT_LOCK_COLLECTION),
        history_collection=table.get("history-collection", DEFAULT_HISTORY_COLLECTION),
        lock_ttl=seconds(table.get("lock-ttl", Config.lock_ttl), "lock-ttl"),
        timeout=seconds(
            table.get("timeout", Config.timeout) if timeout is None else timeout, "--timeout"
        ),
        version_index=table.get("version-index", Config.version_index),
        pyproject=pyproject,
    )


#: What MongoDB refuses in a database name (and the longest it takes, in bytes).
_NOT_IN_DATABASE_NAMES = '/\\. "$*<>:|?\x00'
_DATABASE_NAME_BYTES = 63


def database_name(name: str) -> str:
    """A database name, checked as MongoDB checks it.

    Raises
    ------
    ConfigError
        If it is empty, too long, or holds a character MongoDB refuses.

    """
    if not name:
        raise ConfigError("a database name cannot be empty")
    bad = sorted({c for c in name if c in _NOT_IN_DATABASE_NAMES})
    if bad:
        raise ConfigError(
            f"database name {short_repr(name)} holds {' '.join(repr(c) for c in bad)}, "
            "which MongoDB refuses in a database name"
        )
    if len(name.encode()) > _DATABASE_NAME_BYTES:
        raise ConfigError(
            f"database name {short_repr(name)} is longer than MongoDB takes "
            f"({_DATABASE_NAME_BYTES} bytes)"
        )
    return name


def pattern(text: str | None) -> str | None:
    """A regular expression for database names, checked.

    Raises
    ------
    ConfigError
        If it does not compile, or is empty.

    """
    if text is None:
        return None
    if not text:
        raise ConfigError("--databases needs a regular expression, not an empty one")
    try:
        re.compile(text)
    except re.error as exc:
        message = f"--databases {short_repr(text)} is not a regular expression: {exc}"
        raise ConfigError(message) from None
    return text
