"""Moved to `atomdb_migrate.commands.checksums`; this path keeps working."""

from .commands.checksums import *  # noqa: F403
from .commands.checksums import step_record as describe  # noqa: F401 (the former name)
