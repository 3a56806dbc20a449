"""Moved to `atomdb_migrate.queries.formulas`; this path keeps working."""

from .queries.formulas import *  # noqa: F403
