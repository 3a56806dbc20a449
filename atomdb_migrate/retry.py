"""Moved to `atomdb_migrate.driver.retry`; this path keeps working."""

from .driver.retry import *  # noqa: F403
