"""Moved to `atomdb_migrate.schema.validators`; this path keeps working."""

from .schema.validators import *  # noqa: F403
