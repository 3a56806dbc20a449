"""Moved to `atomdb_migrate.engine.history`; this path keeps working."""

from .engine.history import *  # noqa: F403
