"""Moved to `atomdb_migrate.core.masking`; this path keeps working."""

from .core.masking import *  # noqa: F403
