"""Moved to `atomdb_migrate.engine.runner`; this path keeps working."""

from .engine.runner import *  # noqa: F403
