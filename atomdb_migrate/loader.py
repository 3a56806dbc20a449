"""Moved to `atomdb_migrate.commands.loader`; this path keeps working."""

from .commands.loader import *  # noqa: F403
