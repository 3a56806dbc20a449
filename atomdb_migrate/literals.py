"""Moved to `atomdb_migrate.core.literals`; this path keeps working."""

from .core.literals import *  # noqa: F403
