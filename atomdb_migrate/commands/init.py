"""`init`: the migrations directory and the project's ``[tool.atomdb-migrate]``
table (files only; no connection).

"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ..exceptions import ConfigError
from .config import TABLE, find_pyproject

__all__ = ["TABLE_TEMPLATE", "init"]

TABLE_TEMPLATE = """\
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
    entry = TABLE_TEMPLATE.format(table=TABLE, migrations=_toml_string(relative))
    pyproject.write_text(text + _separator(text) + entry)
    done.append(f"added [tool.{TABLE}] to {pyproject}")
    return done


def _separator(text: str) -> str:
    """What goes between a file's `text` and a table added after it: nothing in an
    empty file (the table starts it), else what makes one blank line."""
    if not text.strip():
        return ""
    return "\n" * max(0, 2 - (len(text) - len(text.rstrip("\n"))))


def _toml_string(text: str) -> str:
    """A TOML basic string holding `text`."""
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'
