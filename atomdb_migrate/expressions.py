"""Moved to `atomdb_migrate.queries.expressions`; this path keeps working."""

from .queries.expressions import *  # noqa: F403
