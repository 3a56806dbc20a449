"""Moved to `atomdb_migrate.model.query_guard`; this path keeps working."""

from .model.query_guard import *  # noqa: F403
