"""The operations a step may list: each with a Python form and a server form.

One module per kind: `paths` (the path helpers in their three forms),
`conversions` (values and `convert`), `base` (`Operation`), `fields`,
`rename_model`, `collection` (indexes and the validator), `factories` (the
functions step modules call) and `running` (a step's list of operations).
Step modules use the facade, `atomdb_migrate.ops`.

"""

from __future__ import annotations

from ..exceptions import (
    ConversionError,
    OperationError,
    UnsettablePathError,
)
from .base import (
    Operation,
)
from .collection import (
    VALIDATION_ACTIONS,
    VALIDATION_LEVELS,
    CollectionOperation,
    CreateIndex,
    DropIndex,
    IndexOperation,
    SetValidator,
)
from .factories import (
    add_field,
    convert,
    copy_field,
    create_index,
    drop_index,
    move_field,
    remove_field,
    rename_field,
    rename_model,
    set_default_where_missing,
    set_validator,
)
from .fields import (
    AddField,
    Convert,
    CopyField,
    MoveField,
    RemoveField,
    RenameField,
    SetDefaultWhereMissing,
)
from .paths import (
    MISSING,
    NO_EMBEDDED,
    ModelPaths,
    Reference,
    embedded_models,
    references_of,
)
from .rename_model import (
    RenameModel,
)
from .running import (
    Operations,
)

__all__ = [
    "MISSING",
    "NO_EMBEDDED",
    "VALIDATION_ACTIONS",
    "VALIDATION_LEVELS",
    "AddField",
    "CollectionOperation",
    "ConversionError",
    "Convert",
    "CopyField",
    "CreateIndex",
    "DropIndex",
    "IndexOperation",
    "ModelPaths",
    "MoveField",
    "Operation",
    "OperationError",
    "Operations",
    "Reference",
    "RemoveField",
    "RenameField",
    "RenameModel",
    "SetDefaultWhereMissing",
    "SetValidator",
    "UnsettablePathError",
    "add_field",
    "convert",
    "copy_field",
    "create_index",
    "drop_index",
    "embedded_models",
    "move_field",
    "references_of",
    "remove_field",
    "rename_field",
    "rename_model",
    "set_default_where_missing",
    "set_validator",
]
