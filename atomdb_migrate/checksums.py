"""Moved to `atomdb_migrate.steps.checksums`; this path keeps working."""

from .commands.checksums import *  # noqa: F403
