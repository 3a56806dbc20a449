"""Moved to `atomdb_migrate.steps.checksums`; this path keeps working."""

from .steps.checksums import *  # noqa: F403
