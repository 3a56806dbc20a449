"""Moved to `atomdb_migrate.core.documents`; this path keeps working."""

from .core.documents import *  # noqa: F403
