"""Asking before a command changes what cannot be undone (``stamp``, ``unlock``):
on a terminal only, and never when given ``--yes``."""

from __future__ import annotations

import sys
from typing import Any

import click


def on_terminal() -> bool:
    """Whether the command reads its input from a terminal: someone there to ask."""
    stdin = sys.stdin  # (click's test runner sets its own)
    return stdin is not None and stdin.isatty()


def asks_first(yes: bool) -> bool:
    """Whether a command that asks on a terminal (``stamp``) asks: on a terminal,
    unless given ``--yes``."""
    return not yes and on_terminal()


def confirmed(question: str, *, yes: bool) -> bool:
    """Whether to go on: `yes` given (``--yes``), or `question` answered yes. No
    answer (no terminal, the end of the input) is no."""
    if yes:
        return True
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        return False


def describe_holder(found: dict[str, Any]) -> str:
    """Who holds the migration lock, since when, and until when."""
    return (
        f"held by {found.get('command', '?')} on host {found.get('host', '?')} "
        f"(pid {found.get('pid', '?')}) since {found.get('acquired_at', '?')}; last "
        f"renewed {found.get('renewed_at', '?')}; lease until {found.get('expires_at', '?')}"
    )
