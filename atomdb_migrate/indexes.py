"""Moved to `atomdb_migrate.schema.indexes`; this path keeps working."""

from .autogenerate.render import written  # noqa: F401 (moved to the one renderer)
from .schema.indexes import *  # noqa: F403
