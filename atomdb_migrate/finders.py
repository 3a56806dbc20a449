"""Moved to `atomdb_migrate.model.finders`; this path keeps working."""

from .model.finders import *  # noqa: F403
from .model.finders import VersionCounts as Survey  # noqa: F401 (the former name)
