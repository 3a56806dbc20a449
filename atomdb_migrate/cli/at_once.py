"""What the command line prints while several databases run at once
(``upgrade --workers N`` with several databases).

Each database runs in its own asyncio task; `starting`, called in that task
as its database starts, names the database for everything the task prints
after: its progress lines and log lines carry the database's name (``--json``:
a ``database`` field), its error names it, and its summary comes as one block
under its ``database NAME:`` line when it ends (`header`). The visit's
summary lists the databases in the order given, whatever order they ended in.

"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import click

__all__ = ["current", "header", "in_order", "prefix", "shown", "starting", "stopped"]

#: The database the running task works on, while several run at once.
_DATABASE: ContextVar[str | None] = ContextVar("atomdb_migrate_cli_database", default=None)


def shown(text: Any) -> str:
    """`text` (a name the database gave: a database's, a host's) for a line of text:
    each character that is not printable as its escape (``\\n``, ``\\x1b``,
    ``\\u202e``), so that a name cannot forge a line nor drive the terminal."""
    said = str(text)
    if said.isprintable():
        return said
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in said)


def starting(name: str) -> None:
    """The visit's `starting` with several databases at once: names the task's database."""
    _DATABASE.set(name)


def stopped() -> None:
    """The visit is over: what the command prints after names no database."""
    _DATABASE.set(None)


def current() -> str | None:
    """The database the running task works on, while several run at once; else None."""
    return _DATABASE.get()


def prefix(text: str) -> str:
    """`text` as a line of the running task's database (``tenant_eu: ...``)."""
    name = current()
    return text if name is None else f"{shown(name)}: {text}"


def header() -> None:
    """The ``database NAME:`` line before a database's summary, while several run at
    once (one after the other, it comes when the database starts)."""
    name = current()
    if name is not None:
        click.echo(f"database {shown(name)}:")


def in_order(rows: list[dict[str, Any]], names: Sequence[str] | None) -> None:
    """Sort the rows of ``--json`` (each with its ``database``) into the order the
    databases were given, keeping each database's rows in their order."""
    if not names:
        return
    order = {name: i for i, name in enumerate(names)}
    rows.sort(key=lambda row: order.get(row.get("database") or "", len(order)))
