"""Moved to `atomdb_migrate.driver.mongo`; this path keeps working."""

from .driver.mongo import *  # noqa: F403
