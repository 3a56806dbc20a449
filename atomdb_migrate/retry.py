"""Moved to `atomdb_migrate.driver.retry`; this path keeps working."""

from .driver.retry import *  # noqa: F403
from .driver.retry import fault_line as describe  # noqa: F401 (the former name)
