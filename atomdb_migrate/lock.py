"""Moved to `atomdb_migrate.engine.lock`; this path keeps working."""

from .engine.lock import *  # noqa: F403
