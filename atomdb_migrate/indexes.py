"""Moved to `atomdb_migrate.schema.indexes`; this path keeps working."""

from .schema.indexes import *  # noqa: F403
