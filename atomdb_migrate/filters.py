"""Moved to `atomdb_migrate.queries.filters`; this path keeps working."""

from .queries.filters import *  # noqa: F403
