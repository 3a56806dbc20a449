"""Moved to `atomdb_migrate.model.guard`; this path keeps working."""

from .model.guard import *  # noqa: F403
