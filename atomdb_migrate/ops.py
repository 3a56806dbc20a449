"""Declarative operations: one definition, run in Python or on the server.

A step may be a list of operations instead of (or before) an upgrade
function::

    from atomdb_migrate import ops

    model = "app.models.Page"
    from_version = "2"
    to_version = "3"
    operations = [
        ops.rename_field("heading", "title"),
        ops.move_field("meta.status", "status"),
        ops.add_field("views", 0),
    ]

Each operation has two forms that give the same result, which the test
suite checks document by document against a real server:

- `Operation.apply` changes a document in Python. It runs when a document
  is restored (the lazy path) and on the client path of ``upgrade``.
- `Operation.stages` gives the stages of a MongoDB update with an
  aggregation pipeline, so ``upgrade`` runs a step made only of operations
  as one ``update_many`` per collection and no document leaves the server.

Paths are dotted (``"meta.status"``) and go through embedded documents
only. Missing documents on the way are created when a value is set: as
``{}``, or, where the step knows the path's value is an embedded model
(atom-db's ``JSONModel``, from its ``schema`` or its model class; see
`StepOperations`), as atom-db stores one, with its ``__model__``. Where a path
runs into a value that is not a document (a string, a list, a null):

- a value carried from another path (``move_field``, ``copy_field``,
  ``rename_field`` across documents) refuses the document
  (`UnsettablePathError`): left where it was, it would sit where the model
  no longer reads it. A null embedded model is created, as a missing one;
- a default (``add_field``, ``set_default_where_missing``) is not set, and
  nor is it inside an embedded model that is null or missing: the object
  has no such model, and gets none.

Only exact inverses are derived for downgrades (`Operation.inverse`):
``add_field`` and ``remove_field(path, default)`` undo each other,
``rename_field``/``move_field`` move back, ``copy_field`` removes the copy,
``create_index`` is dropped and ``drop_index(keys)`` created again.
The others refuse with `IrreversibleOperationError`.

``create_index``, ``drop_index`` and ``set_validator`` change the
collection, not documents (`CollectionOperation`): nothing happens on read,
and ``upgrade`` runs a model's creates before its steps' document changes
and its drops after them (expand, then contract); it sets a validator after
them too, and removes one before them. A validator's downgrade removes it:
the one the collection had before is not known.

"""

from __future__ import annotations

from .exceptions import (
    ConversionError,
    OperationError,
    UnsettablePathError,
)
from .operations.base import (
    Operation,
)
from .operations.collection import (
    VALIDATION_ACTIONS,
    VALIDATION_LEVELS,
    CollectionOperation,
    CreateIndex,
    DropIndex,
    IndexOperation,
    SetValidator,
)
from .operations.factories import (
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
from .operations.fields import (
    AddField,
    Convert,
    CopyField,
    MoveField,
    RemoveField,
    RenameField,
    SetDefaultWhereMissing,
)
from .operations.paths import (
    MISSING,
    NO_EMBEDDED,
    ModelPaths,
    Reference,
    embedded_models,
    references_of,
)
from .operations.rename_model import (
    RenameModel,
)
from .operations.running import (
    Operations,
    StepOperations,
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
    "StepOperations",
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
