"""Moved to `atomdb_migrate.queries.regexes`; this path keeps working."""

from .queries.regexes import *  # noqa: F403
