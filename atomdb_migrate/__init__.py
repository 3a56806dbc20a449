"""Migrations and schema evolution for MongoDB data stored by atom-db.

A `VersionedModel` carries a ``__version__``; every document it saves
carries ``"__version__"``; documents stored at an older version are taken
through the model's steps, registered with `step`, the moment they are read.

"""

from .exceptions import (
    ChainError,
    ConflictError,
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    MigrateError,
    MissingDowngradeError,
    NewerDocumentError,
    StepBeyondHeadError,
    StepError,
    StepFailedError,
    StepResultError,
    UnknownModelError,
)
from .model import VersionedModel, VersionedModelSerializer
from .registry import MigrationRegistry, register_step, step
from .versions import Step, StepGraph

__version__ = "0.1.0"

__all__ = [
    "ChainError",
    "ConflictError",
    "CycleError",
    "DuplicateStepError",
    "GapError",
    "InvalidVersionError",
    "MigrateError",
    "MigrationRegistry",
    "MissingDowngradeError",
    "NewerDocumentError",
    "Step",
    "StepBeyondHeadError",
    "StepError",
    "StepFailedError",
    "StepGraph",
    "StepResultError",
    "UnknownModelError",
    "VersionedModel",
    "VersionedModelSerializer",
    "register_step",
    "step",
]
