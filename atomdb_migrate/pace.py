"""Moved to `atomdb_migrate.engine.pace`; this path keeps working."""

from .engine.pace import *  # noqa: F403
