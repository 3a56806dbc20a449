"""Moved to `atomdb_migrate.queries.matching`; this path keeps working."""

from .queries.matching import *  # noqa: F403
