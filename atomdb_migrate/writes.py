"""Moved to `atomdb_migrate.core.writes`; this path keeps working."""

from .core.writes import *  # noqa: F403
from .core.writes import unchanged_filter as guard  # noqa: F401 (the former name)
