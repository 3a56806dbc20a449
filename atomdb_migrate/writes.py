"""Moved to `atomdb_migrate.core.writes`; this path keeps working."""

from .core.writes import *  # noqa: F403
