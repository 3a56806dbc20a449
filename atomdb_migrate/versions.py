"""Moved to `atomdb_migrate.steps.versions`; this path keeps working."""

from .steps.versions import *  # noqa: F403
