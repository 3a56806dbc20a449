"""Moved to `atomdb_migrate.steps.registry`; this path keeps working."""

from .steps.registry import *  # noqa: F403
