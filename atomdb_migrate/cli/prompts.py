"""Asking before a command changes what cannot be undone (``stamp``, ``unlock``):
on a terminal only, and never when given ``--yes``."""

from __future__ import annotations

import sys

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
