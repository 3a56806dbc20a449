"""Moved to `atomdb_migrate.cli.progress`; this path keeps working."""

from .cli.progress import *  # noqa: F403
