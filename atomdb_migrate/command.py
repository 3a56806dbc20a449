"""Moved to `atomdb_migrate.commands.command`; this path keeps working."""

from .commands.command import *  # noqa: F403
