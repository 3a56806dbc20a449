"""Moved to `atomdb_migrate.engine.collection_state`; this path keeps working."""

from .engine.collection_state import *  # noqa: F403
