"""Configuration: command-line options, the environment, and pyproject.toml.

Each setting comes from the first of: the command-line option; the
environment (the URL only: ``ATOMDB_MIGRATE_URL``, then ``MONGO_URL``); the
``[tool.atomdb-migrate]`` table of the nearest ``pyproject.toml`` (searched
from the working directory upwards); the default.

```toml
[tool.atomdb-migrate]
url = "mongodb://localhost:27017"     # better given in the environment
database = "app"                      # or the database in the URL's path
models = ["app.models"]               # modules to import so models register
migrations = "migrations"             # relative to pyproject.toml
lock-collection = "atomdb_migrate_lock"
history-collection = "atomdb_migrate_history"
lock-ttl = 30                         # seconds a lease lasts unless renewed
timeout = 10                          # seconds to reach the server
```

"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

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
    "models": list,
    "migrations": str,
    "lock-collection": str,
    "history-collection": str,
    "lock-ttl": (int, float),
    "timeout": (int, float),
}


@dataclass
class Config:
    """The settings of one invocation."""

    #: The MongoDB URL.
    url: str | None = None

    #: The database name; defaults to the database in the URL.
    database: str | None = None

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

    #: The pyproject.toml the settings were read from, if any.
    pyproject: Path | None = None

    @property
    def root(self) -> Path:
        """The project directory: where pyproject.toml is, else the working directory."""
        return self.pyproject.parent if self.pyproject else Path.cwd()

    def database_name(self) -> str:
        """The database to use: the setting, else the one in the URL.

        Raises
        ------
        ConfigError
            If neither names a database.

        """
        if self.database:
            return self.database
        if self.url and self.url.startswith("mongomock://"):
            parts = self.url.split("/", 3)
            if len(parts) == 4 and parts[3]:
                return parts[3]
        elif self.url:
            from pymongo.uri_parser import parse_uri

            try:
                name = parse_uri(self.url).get("database")
            except Exception as exc:
                raise ConfigError(
                    f"invalid MongoDB URL {mask_url(self.url)!r}: {mask(str(exc), self.url)}"
                ) from None
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
        if not isinstance(value, KEYS[key]) or isinstance(value, bool):
            raise ConfigError(
                f"{path}: [tool.{TABLE}] {key} has the wrong type ({type(value).__name__})"
            )
    if not all(isinstance(m, str) for m in table.get("models", [])):
        raise ConfigError(f"{path}: [tool.{TABLE}] models must be a list of module names")
    return table


def load_config(
    *,
    url: str | None = None,
    database: str | None = None,
    models: Sequence[str] = (),
    migrations: str | Path | None = None,
    timeout: float | None = None,
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the settings from options, the environment and pyproject.toml."""
    env = os.environ if environ is None else environ
    pyproject = find_pyproject(start)
    table = read_table(pyproject) if pyproject else {}
    root = pyproject.parent if pyproject else (start or Path.cwd())
    if url is None:
        url = next((env[v] for v in URL_VARIABLES if env.get(v)), None) or table.get("url")
    if migrations is None and "migrations" in table:
        migrations = root / table["migrations"]
    return Config(
        url=url,
        database=database or table.get("database"),
        models=list(models) or list(table.get("models", [])),
        migrations=Path(migrations) if migrations is not None else None,
        lock_collection=table.get("lock-collection", DEFAULT_LOCK_COLLECTION),
        history_collection=table.get("history-collection", DEFAULT_HISTORY_COLLECTION),
        lock_ttl=float(table.get("lock-ttl", 30.0)),
        timeout=float(timeout if timeout is not None else table.get("timeout", 10.0)),
        pyproject=pyproject,
    )


_CREDENTIALS = re.compile(
    r"^(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@", re.IGNORECASE
)


def url_password(url: str | None) -> str | None:
    """The password in a URL, if it has one."""
    if not url:
        return None
    m = _CREDENTIALS.match(url)
    return m.group("password") if m and m.group("password") else None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url, count=1)


def mask(text: str, url: str | None) -> str:
    """Text with the URL's password (as written, and decoded) replaced by ``***``."""
    password = url_password(url)
    if not password:
        return text
    from urllib.parse import unquote

    for secret in {password, unquote(password)}:
        if secret:
            text = text.replace(secret, "***")
    return text
