"""Rank 3: what a model declares, with no I/O: `snapshots` (schema snapshots,
comparing them), declared `indexes` and `validators` (the ``$jsonSchema``).
The names of `atomdb_migrate.schema.snapshots` are re-exported here, so the
old module path keeps working; inferring operations from a difference moved
up to `atomdb_migrate.autogenerate` (see docs/architecture.md).

"""

from .snapshots import *  # noqa: F403
