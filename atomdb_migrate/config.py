"""Moved to `atomdb_migrate.commands.config`; this path keeps working."""

from .commands.config import *  # noqa: F403
