"""Rank 7: writing step modules. `infer` (the operations a difference between
two schema snapshots asks for, as operation objects), `render` (the one
renderer: operations written out as Python source) and `revision` (a step
module's text, from the ``templates/``).

The inference's names, which the old flat ``atomdb_migrate.schema`` module
held, are re-exported here (see docs/architecture.md).

"""

from .infer import (
    CONFIRM,
    CONFIRM_TAGS,
    CONVERTS,
    LOSSY,
    Inferred,
    conversion,
    infer_operations,
    moves,
)
from .revision import computed_upgrade, upgrade_to_write

__all__ = [
    "CONFIRM",
    "CONFIRM_TAGS",
    "CONVERTS",
    "LOSSY",
    "Inferred",
    "computed_upgrade",
    "conversion",
    "infer_operations",
    "moves",
    "upgrade_to_write",
]
