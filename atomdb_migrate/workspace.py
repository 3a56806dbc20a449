"""Moved to `atomdb_migrate.commands.workspace`; this path keeps working."""

from .commands.workspace import *  # noqa: F403
