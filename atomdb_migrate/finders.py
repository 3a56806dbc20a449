"""Moved to `atomdb_migrate.model.finders`; this path keeps working."""

from .model.finders import *  # noqa: F403
