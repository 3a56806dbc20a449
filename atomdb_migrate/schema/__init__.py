"""Rank 3: what a model declares, with no I/O: `snapshots` (schema snapshots,
comparing them, inferring operations), declared `indexes` and `validators`
(the ``$jsonSchema``). The names of `atomdb_migrate.schema.snapshots` are
re-exported here, so the old module path keeps working.

"""

from .snapshots import *  # noqa: F403
