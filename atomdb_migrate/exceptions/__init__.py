"""The exceptions atomdb-migrate raises, in one tree.

Every error the package raises on purpose derives from `MigrateError`, so
``except MigrateError`` catches them all. Each error carries the facts that
explain it as attributes (`model`, `doc_id`, the versions, the step) and names
them in its message.

```
MigrateError
 ├── InvalidVersionError       a value that is not a PEP 440 version
 ├── ChainError                the steps of a model do not form a usable chain
 │    ├── GapError              no step leaves a version the chain must pass
 │    │    └── BelowBaseError  a document below the model's __base_version__
 │    ├── DuplicateStepError    two steps leave the same version
 │    ├── CycleError            a step that does not move to a greater version
 │    ├── StepBeyondHeadError   a step goes past the model's current version
 │    ├── MissingDowngradeError a downgrade needs a step with no downgrade
 │    └── IrreversibleOperationError  an operation with no exact inverse
 ├── StepDefinitionError       a step defined wrong (`register_step`'s arguments,
 │                             a step module's names)
 ├── StepError                 a step failed on one document
 │    ├── StepFailedError       the step function raised
 │    └── StepResultError       the step returned something that is not a
 │                              dict, or changed the document's ``_id``
 ├── OperationError            an operation refuses one document (it is left as read)
 │    ├── ConversionError       a value ``ops.convert`` cannot convert
 │    └── UnsettablePathError   a value moved or copied where it cannot be set
 ├── GuardTooLargeError        a conditional write and its filter do not fit
 │                              in one command
 ├── NewerDocumentError        a stored document is newer than the code
 ├── DowngradeLeftNewerError   a downgrade left documents newer than the code
 │                              running it (newer, versions, needed)
 ├── ConflictError             a document kept changing while being written
 ├── RestoreFailedError        a stored document does not restore into its model
 │                              (also atom-db's RestoreError)
 ├── UniqueIndexError          a unique index cannot be built: documents share a key
 ├── QueryError                a filter `version_filter` cannot take
 │    ├── InvalidQueryError     not a filter it knows (an unknown operator,
 │    │                         a malformed value)
 │    ├── UntranslatableQueryError  a field a Python step computes or may
 │    │                         change, so legacy documents cannot be matched
 │    └── LegacyQueryError      the query guard: a query through a model's
 │                              manager misses legacy documents
 ├── UnknownModelError         no versioned model has that ``__model__`` name
 ├── ConfigError               options, the pyproject table, or the models
 │    ├── StepModuleError       a step module that does not load
 │    └── ReleaseNotFoundError  no recorded release is the one asked for
 ├── ConnectionFailedError     the server cannot be reached or refuses us
 ├── ServerError               the server failed a command (not transiently)
 │    ├── ServerUnavailableError  a transient fault outlasted the retry window
 │    └── WriteConcernRefusedError  a write concern the server can never satisfy
 └── LockError                 the migration lock
      ├── LockHeldError         another runner holds it
      │    └── LockAliveError   `unlock` refused: the holder is still renewing
      ├── LockLostError         this runner's lease ran out during the run
      └── JoinError             `upgrade --join`: no run to join, or other code
           ├── NoRunToJoinError   no run of workers started within the wait
           ├── RunMismatchError   the run's models, targets or checksums differ
           └── JoinedRunFailedError  the run joined failed, or its starter stopped
```

`InvalidVersionError` and `InvalidQueryError` also derive from `ValueError`,
`StepDefinitionError` from `TypeError` and `ValueError`, and
`UnknownModelError` from `LookupError`, so code written against the
built-in exceptions keeps working.

The classes are written in one module per part (`base`, `steps`,
`documents`, `queries`, `config`, `server`) and imported from here, where
they belong: ``atomdb_migrate.exceptions.GapError`` is their name.

"""

from __future__ import annotations

from atomdb.base import RestoreError as RestoreError  # atom-db's, which RestoreFailedError is

from .base import (
    MAX_SHOWN,
    MigrateError,
    short_repr,
    shorten,
)
from .config import (
    ConfigError,
    ReleaseNotFoundError,
    StepModuleError,
    UnknownModelError,
)
from .documents import (
    ConflictError,
    DowngradeLeftNewerError,
    GuardTooLargeError,
    NewerDocumentError,
    RestoreFailedError,
    UniqueIndexError,
    shared_key,
)
from .queries import (
    InvalidQueryError,
    LegacyQueryError,
    LegacyQueryWarning,
    QueryError,
    UntranslatableQueryError,
)
from .server import (
    ConnectionFailedError,
    JoinedRunFailedError,
    JoinError,
    LockAliveError,
    LockError,
    LockHeldError,
    LockLostError,
    NoRunToJoinError,
    RunMismatchError,
    ServerError,
    ServerUnavailableError,
    WriteConcernRefusedError,
)
from .steps import (
    BelowBaseError,
    ChainError,
    ConversionError,
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    IrreversibleOperationError,
    MissingDowngradeError,
    OperationError,
    StepBeyondHeadError,
    StepDefinitionError,
    StepError,
    StepFailedError,
    StepResultError,
    UnsettablePathError,
)

__all__ = [
    "MAX_SHOWN",
    "BelowBaseError",
    "ChainError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "ConversionError",
    "CycleError",
    "DowngradeLeftNewerError",
    "DuplicateStepError",
    "GapError",
    "GuardTooLargeError",
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
    "MissingDowngradeError",
    "NewerDocumentError",
    "NoRunToJoinError",
    "OperationError",
    "QueryError",
    "ReleaseNotFoundError",
    "RestoreFailedError",
    "RunMismatchError",
    "ServerError",
    "ServerUnavailableError",
    "StepBeyondHeadError",
    "StepDefinitionError",
    "StepError",
    "StepFailedError",
    "StepModuleError",
    "StepResultError",
    "UniqueIndexError",
    "UnknownModelError",
    "UnsettablePathError",
    "UntranslatableQueryError",
    "WriteConcernRefusedError",
    "shared_key",
    "short_repr",
    "shorten",
]

# Each class is named where users import it from, as when the tree was one
# module (in tracebacks, reprs and pickles).
for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__
del _name
