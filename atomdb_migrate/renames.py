"""Moved to `atomdb_migrate.engine.renames`; this path keeps working."""

from .engine.renames import *  # noqa: F403
