"""Migrations and schema evolution for MongoDB data stored by atom-db.

A `VersionedModel` carries a ``__version__``; every document it saves
carries ``"__version__"``; documents stored at an older version are taken
through the model's steps, registered with `step` (or made of the
declarative operations in `ops`), the moment they are read.

"""

from . import ops
from .commands.loader import load_migrations
from .commands.sweep import Sweeping, SweepReport, sweep, sweeping
from .exceptions import (
    BelowBaseError,
    ChainError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    ConversionError,
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidQueryError,
    InvalidVersionError,
    IrreversibleOperationError,
    JoinedRunFailedError,
    JoinError,
    LegacyQueryError,
    LegacyQueryWarning,
    LockAliveError,
    LockError,
    LockHeldError,
    LockLostError,
    MigrateError,
    MissingDowngradeError,
    NewerDocumentError,
    NoRunToJoinError,
    QueryError,
    RestoreFailedError,
    RunMismatchError,
    StepBeyondHeadError,
    StepDefinitionError,
    StepError,
    StepFailedError,
    StepModuleError,
    StepResultError,
    UniqueIndexError,
    UnknownModelError,
    UntranslatableQueryError,
)
from .model.finders import count, find, find_one
from .model.query_guard import guard_queries
from .model.versioned import VersionedModel, VersionedModelSerializer
from .queries.version_filters import version_filter
from .schema.validators import json_schema
from .steps.registry import MigrationRegistry, register_step, step
from .steps.versions import Step, StepGraph

__version__ = "0.1.0"

__all__ = [
    "BelowBaseError",
    "ChainError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "ConversionError",
    "CycleError",
    "DuplicateStepError",
    "GapError",
    "InvalidQueryError",
    "InvalidVersionError",
    "IrreversibleOperationError",
    "JoinError",
    "JoinedRunFailedError",
    "LegacyQueryError",
    "LegacyQueryWarning",
    "LockAliveError",
    "LockError",
    "LockHeldError",
    "LockLostError",
    "MigrateError",
    "MigrationRegistry",
    "MissingDowngradeError",
    "NewerDocumentError",
    "NoRunToJoinError",
    "QueryError",
    "RestoreFailedError",
    "RunMismatchError",
    "Step",
    "StepBeyondHeadError",
    "StepDefinitionError",
    "StepError",
    "StepFailedError",
    "StepGraph",
    "StepModuleError",
    "StepResultError",
    "SweepReport",
    "Sweeping",
    "UniqueIndexError",
    "UnknownModelError",
    "UntranslatableQueryError",
    "VersionedModel",
    "VersionedModelSerializer",
    "count",
    "find",
    "find_one",
    "guard_queries",
    "json_schema",
    "load_migrations",
    "ops",
    "register_step",
    "step",
    "sweep",
    "sweeping",
    "version_filter",
]
