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
 ├── ConflictError             a document kept changing while being written
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
 │    └── StepModuleError       a step module that does not load
 ├── ConnectionFailedError     the server cannot be reached or refuses us
 ├── ServerError               the server failed a command (not transiently)
 │    ├── ServerUnavailableError  a transient fault outlasted the retry window
 │    └── WriteConcernRefusedError  a write concern the server can never satisfy
 └── LockError                 the migration lock
      ├── LockHeldError         another runner holds it
      │    └── LockAliveError   `unlock` refused: the holder is still renewing
      └── LockLostError         this runner's lease ran out during the run
```

`InvalidVersionError` and `InvalidQueryError` also derive from `ValueError`,
`StepDefinitionError` from `TypeError` and `ValueError`, and
`UnknownModelError` from `LookupError`, so code written against the
built-in exceptions keeps working.

"""

from __future__ import annotations

from typing import Any

from atomdb.base import RestoreError

#: The longest a value or a quoted error is shown in a message: a step may
#: fail on a 16 MB document, and its message must still be one line.
MAX_SHOWN = 300


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to `limit` characters; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # an int of 5,000 digits, a broken __repr__
        text = f"<{type(value).__name__}: {type(exc).__name__}>"
    return shorten(text, limit)


def _describe(model: str | None, doc_id: Any) -> str:
    """Name the model and, where known, the document."""
    where = f"model {short_repr(model)}" if model else "a model"
    if doc_id is not None:
        where += f", document _id={short_repr(doc_id)}"
    return where


class MigrateError(Exception):
    """Base class of every error atomdb-migrate raises.

    Parameters
    ----------
    message: str
        What went wrong; the model and document are named before it.
    model: str, optional
        The ``__model__`` name of the model concerned.
    doc_id: Any, optional
        The ``_id`` of the document concerned.
    **facts:
        Further facts, kept as attributes of the same names.

    """

    #: The ``__model__`` name of the model concerned, where there is one.
    model: str | None = None

    #: The ``_id`` of the document concerned, where there is one.
    doc_id: Any = None

    def __init__(
        self, message: str, *, model: str | None = None, doc_id: Any = None, **facts: Any
    ) -> None:
        self.model = model
        self.doc_id = doc_id
        for name, value in facts.items():
            setattr(self, name, value)
        if model is not None or doc_id is not None:
            message = f"{_describe(model, doc_id)}: {message}"
        super().__init__(message)


class InvalidVersionError(MigrateError, ValueError):
    """A value is not a valid PEP 440 version.

    Raised for a model's ``__version__``, a step's versions, or the
    ``"__version__"`` stored in a document.

    """

    value: Any

    def __init__(
        self,
        value: Any,
        *,
        model: str | None = None,
        doc_id: Any = None,
        what: str = "version",
    ) -> None:
        super().__init__(
            f"{what} {short_repr(value, 80)} is not a valid PEP 440 version (such as '3' or '1.2')",
            model=model,
            doc_id=doc_id,
            value=value,
        )


class ChainError(MigrateError):
    """The steps registered for a model do not form a usable chain.

    Attributes
    ----------
    from_version: str
        The version the chain or step starts from.
    to_version: str
        The version the chain or step goes to.

    """

    from_version: str
    to_version: str


class GapError(ChainError):
    """No step leaves a version that the chain has to pass through.

    ``missing`` is the version no step leaves (or, for a downgrade, arrives at).

    """

    missing: str

    def __init__(
        self,
        model: str,
        from_version: str,
        to_version: str,
        missing: str,
        *,
        doc_id: Any = None,
        direction: str = "upgrade",
    ) -> None:
        edge = "leaves" if direction == "upgrade" else "arrives at"
        super().__init__(
            f"cannot {direction} from version {from_version} to {to_version}: "
            f"no step {edge} version {missing}",
            model=model,
            doc_id=doc_id,
            from_version=from_version,
            to_version=to_version,
            missing=missing,
        )


class DuplicateStepError(ChainError):
    """Two different steps of one model leave the same version."""

    first: str
    second: str

    def __init__(self, model: str, from_version: str, first: str, second: str) -> None:
        super().__init__(
            f"two steps leave version {from_version}: {first} and {second}",
            model=model,
            from_version=from_version,
            first=first,
            second=second,
        )


class CycleError(ChainError):
    """A step does not go to a greater version, so the chain could loop.

    Steps always move forward; every cycle between versions needs at least
    one step that does not, so such a step is refused when it is registered.

    """

    source: str

    def __init__(self, model: str, from_version: str, to_version: str, source: str) -> None:
        super().__init__(
            f"step {source} goes from version {from_version} to {to_version}; a step "
            "must go to a greater version, otherwise the chain can form a cycle",
            model=model,
            from_version=from_version,
            to_version=to_version,
            source=source,
        )


class StepBeyondHeadError(ChainError):
    """A step goes past the version the model's code declares."""

    head: str
    source: str

    def __init__(
        self, model: str, from_version: str, to_version: str, head: str, source: str
    ) -> None:
        super().__init__(
            f"step {source} goes from version {from_version} to {to_version}, "
            f"past the model's current version {head}",
            model=model,
            from_version=from_version,
            to_version=to_version,
            head=head,
            source=source,
        )


class MissingDowngradeError(ChainError):
    """A downgrade has to pass through a step that has no downgrade function."""

    source: str

    def __init__(
        self, model: str, from_version: str, to_version: str, source: str, reason: str = ""
    ) -> None:
        why = reason or "has no downgrade function"
        super().__init__(
            f"step {source} ({from_version} -> {to_version}) {why}, "
            f"so version {to_version} cannot be taken back to {from_version}",
            model=model,
            from_version=from_version,
            to_version=to_version,
            source=source,
        )


class IrreversibleOperationError(ChainError):
    """An operation has no exact inverse, so no downgrade is derived from it.

    Attributes
    ----------
    operation: Operation
        The operation.

    """

    operation: Any

    def __init__(self, operation: Any, reason: str) -> None:
        super().__init__(f"{operation!r} cannot be undone: {reason}", operation=operation)


class StepDefinitionError(MigrateError, TypeError, ValueError):
    """A step is defined wrong: an argument of `register_step` (or the `step`
    decorator), or the same name in a step module, is refused.

    Raised where the step is made, before anything is registered; the loader
    reports it as a `StepModuleError` at the line of the name. It is a
    `TypeError` and a `ValueError` too, as the refusals were before it.

    Attributes
    ----------
    argument: str
        The argument refused: ``"upgrade"``, ``"downgrade"``, ``"operations"``
        or ``"changes"``.

    """

    argument: str

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message, argument=argument)


class OperationError(MigrateError, ValueError):
    """A declarative operation cannot change one document as it is written.

    The document fails its step: on the server it is left as read, at its
    old version, and the client path reports it (with ``--continue-on-error``
    it is recorded and the run goes on).

    """


class ConversionError(OperationError):
    """``ops.convert`` met a value it cannot convert (``"abc"`` to int)."""


class UnsettablePathError(OperationError):
    """A value ``move_field``, ``copy_field`` or ``rename_field`` carries cannot be set
    where it goes: a value on the way is not a document (a string, a list, a
    null that is not an embedded model the step knows), or is a reference to
    another document (atom-db reads the referenced document, never a value
    set inside the reference).

    Left where it was, the value would sit where the model no longer reads
    it, and the next save would drop it: the document is refused instead.

    Attributes
    ----------
    path: str
        The destination.
    blocked: str
        The path on the way whose value is in the way.
    found: str
        What is there, shortened.
    reference: bool
        Whether `blocked` holds a reference (or is where one goes).

    """

    path: str
    blocked: str
    found: str
    reference: bool

    def __init__(
        self, operation: str, path: str, blocked: str, found: Any, *, reference: bool = False
    ) -> None:
        shown = short_repr(found, 80)
        what = (
            f"{blocked!r} holds a reference ({shown}): atom-db reads the referenced "
            "document, never a value set inside it"
            if reference
            else f"{blocked!r} holds {shown}, not a document (nor an embedded model the step "
            "knows, to create)"
        )
        super().__init__(
            f"{operation}: cannot set {path!r}: {what}: the value is left where it was and the "
            "document fails the step",
            path=path,
            blocked=blocked,
            found=shown,
            reference=reference,
        )


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 100 * 1024 else f"{size / 1024:.1f} KB"


class GuardTooLargeError(MigrateError, ValueError):
    """A conditional write cannot be sent: its update and the filter that matches
    the document as read do not fit in one command under MongoDB's 16 MB limit.

    The document is not the cause (it fits); what the filter must repeat of
    it beside the update is.

    Attributes
    ----------
    read: dict
        The encoded size of each value the filter matches as read, by name.
    update_size: int
        The encoded size of the update.
    loose: bool
        Whether matching the large values by type and size alone was tried.

    """

    read: dict[str, int]
    update_size: int
    loose: bool

    def __init__(self, read: dict[str, int], update_size: int, *, loose: bool) -> None:
        shown = ", ".join(
            f"{short_repr(k, 60)}: {_megabytes(n)}" for k, n in list(read.items())[:3]
        )
        more = f" and {len(read) - 3} more" if len(read) > 3 else ""
        how = "even matching its large values by size, " if loose else ""
        super().__init__(
            f"the update ({_megabytes(update_size)}) and the filter that matches what was "
            f"read ({shown}{more}) do not fit in one command: {how}they are over MongoDB's "
            "16 MB limit for a command",
            read=read,
            update_size=update_size,
            loose=loose,
        )


class StepError(MigrateError):
    """A step failed on one document; nothing was written.

    Attributes
    ----------
    from_version: str
        The version the step starts from.
    to_version: str
        The version the step goes to.
    source: str
        Where the step function is defined.

    """

    from_version: str
    to_version: str
    source: str

    def __init__(
        self,
        message: str,
        *,
        model: str,
        doc_id: Any,
        from_version: str,
        to_version: str,
        source: str,
    ) -> None:
        super().__init__(
            f"step {source} ({from_version} -> {to_version}) {shorten(message)}",
            model=model,
            doc_id=doc_id,
            from_version=from_version,
            to_version=to_version,
            source=source,
        )


class StepFailedError(StepError):
    """The step function raised; the original exception is the ``__cause__``."""


class StepResultError(StepError):
    """The step returned a value that is not a dict (or None), or changed ``_id``."""


class NewerDocumentError(MigrateError):
    """A stored document's version is newer than the model's code.

    Raised when restoring such a document (unless the model's
    ``__on_newer__`` is ``"restore"``) and when `save()` would replace it.

    """

    stored: str
    current: str

    def __init__(self, model: str, doc_id: Any, stored: str, current: str, *, action: str) -> None:
        super().__init__(
            f"stored version {stored} is newer than the code's version {current}; "
            f"refusing to {action}",
            model=model,
            doc_id=doc_id,
            stored=stored,
            current=current,
        )


class ConflictError(MigrateError):
    """A document kept changing under a conditional write; nothing was written."""

    attempts: int

    def __init__(self, model: str, doc_id: Any, attempts: int) -> None:
        super().__init__(
            f"the stored document kept changing during {attempts} conditional "
            "writes; nothing was written",
            model=model,
            doc_id=doc_id,
            attempts=attempts,
        )


class RestoreFailedError(MigrateError, RestoreError):
    """A stored document does not restore into its model: a member refused a value.

    atom-db raises its `RestoreError` for that when the model's
    ``__on_error__`` is ``"raise"``, naming the field only; this is that
    error with the model and the document's ``_id``, and it is still a
    `RestoreError`. The original exception is the ``__cause__``.

    Attributes
    ----------
    field: str
        The member that refused its value.
    exc: Exception
        Why (atom-db's own ``exc``: the member's validation error, or the
        error of a referenced or embedded object that did not restore).

    """

    field: str
    exc: Exception

    def __init__(self, model: str, doc_id: Any, error: RestoreError) -> None:
        # Not through MigrateError.__init__: its super() is RestoreError's,
        # which takes other arguments (and sets field, cls and exc).
        RestoreError.__init__(self, error.field, error.cls, error.exc)
        self.model = model
        self.doc_id = doc_id
        message = f"field {error.field!r} does not restore: {error.exc}"
        Exception.__init__(self, f"{_describe(model, doc_id)}: {message}")

    def __str__(self) -> str:
        return Exception.__str__(self)  # not RestoreError's, which names the field only


class UniqueIndexError(MigrateError):
    """A unique index cannot be built: stored documents share a key.

    A problem of the data, not of the server: the documents have to change
    (or the index not be unique) before a run can build it. The index it
    replaces, if any, is left as it was (or created again as it was).

    Attributes
    ----------
    collection: str
        The collection.
    index: str
        The index asked for, described (``index email_1 {email: 1} (unique=True)``).
    key: dict
        The key two documents share, by field (``{"email": "ada@example.org"}``).
    ids: list
        The ``_id`` of two documents that share it (fewer if they changed meanwhile).
    kept: str
        What became of the index it replaces ("" when it replaces none).

    """

    collection: str
    index: str
    key: dict[str, Any]
    ids: list[Any]
    kept: str
    #: Which documents share which key, in words.
    shared: str

    def __init__(
        self,
        model: str,
        collection: str,
        index: str,
        key: dict[str, Any],
        ids: list[Any],
        *,
        kept: str = "",
    ) -> None:
        shared = shared_key(key, ids)
        super().__init__(
            f"collection {collection}: {index} cannot be built: {shared}. Make the values "
            "unique (or the index not unique), then run upgrade again"
            + (f"; {kept}" if kept else ""),
            model=model,
            collection=collection,
            index=index,
            key=key,
            ids=ids,
            kept=kept,
            shared=shared,
        )


def shared_key(key: dict[str, Any], ids: list[Any]) -> str:
    """Which documents share which key, as `UniqueIndexError` says it."""
    values = (
        ", ".join(
            f"{k}={short_repr(v, 120)}" + (" (missing or null)" if v is None else "")
            for k, v in key.items()
        )
        or "a key"
    )
    if len(ids) >= 2:
        first, second = short_repr(ids[0], 80), short_repr(ids[1], 80)
        return f"documents _id={first} and _id={second} share {values}"
    return f"two documents share {values}"


class QueryError(MigrateError):
    """A filter that `atomdb_migrate.version_filter` cannot translate."""


class InvalidQueryError(QueryError, ValueError):
    """A filter outside the grammar `version_filter` knows, or a malformed one.

    Attributes
    ----------
    field: str or None
        The field whose condition is at fault (None for the filter's top level).

    """

    field: str | None

    def __init__(self, field: str | None, problem: str) -> None:
        where = f"the condition on {field!r}" if field is not None else "the filter"
        super().__init__(f"{where}: {problem}", field=field)


class UntranslatableQueryError(QueryError):
    """A filter that legacy documents cannot be matched by, as they are stored.

    A Python step computes the field, or may change it, so no filter on the
    stored document says what the step will make of it. Declare what a
    Python step changes (``changes = [...]``) to let filters on other fields
    through it.

    Attributes
    ----------
    field: str
        The field the condition is on.
    step: str
        The step that stands in the way (its module or function).
    version: str
        The stored version whose documents cannot be matched.

    """

    field: str
    step: str
    version: str
    #: Why the step stands in the way.
    reason: str

    def __init__(
        self, model: str, field: str, step: str, reason: str, *, version: str = ""
    ) -> None:
        stored = f" (documents stored at version {version})" if version else ""
        super().__init__(
            f"a condition on {field!r} cannot be matched against legacy documents{stored}: "
            f"{reason} in step {step}",
            model=model,
            field=field,
            step=step,
            version=version,
            reason=reason,
        )


class LegacyQueryError(QueryError):
    """A query through a model's manager answers otherwise than once documents are upgraded.

    Raised by the query guard set to "error" (`atomdb_migrate.guard_queries`);
    "warn" issues `LegacyQueryWarning` with the same message.

    Attributes
    ----------
    missed: int
        How many stored documents the query misses (or, where the filter
        cannot be translated, how many are stored at the versions concerned).
    extra: int
        How many it selects that it would not select once upgraded.
    versions: list of str
        The stored versions concerned.

    """

    missed: int
    extra: int
    versions: list[str]


class LegacyQueryWarning(UserWarning):
    """The query guard's warning: see `LegacyQueryError`."""


class UnknownModelError(MigrateError, LookupError):
    """No versioned model is registered under that ``__model__`` name."""

    known: list[str]

    def __init__(self, model: str, known: list[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown model {model!r}; known versioned models: {names}", known=known)
        self.model = model


class ConfigError(MigrateError):
    """The configuration is missing or wrong (options, pyproject table, models)."""


class StepModuleError(ConfigError):
    """One or more step modules do not load; nothing was registered.

    ``problems`` holds a ``(path, line, message)`` tuple per problem.

    """

    problems: list[tuple[str, int, str]]

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        lines = [f"{path}:{line}: {message}" for path, line, message in problems]
        super().__init__("; ".join(lines), problems=problems)


class ConnectionFailedError(MigrateError):
    """The MongoDB server could not be reached, or refused the credentials."""


class ServerError(MigrateError):
    """The server failed a command, and retrying it would not help.

    `operation` says what the runner was doing; `code` is the server's
    error code, where it gave one.

    """

    def __init__(self, operation: str, error: BaseException, **facts: Any) -> None:
        self.operation = operation
        #: The driver's error.
        self.error = error
        self.code = getattr(error, "code", None)
        self.cause = f"{type(error).__name__}: {shorten(str(error))}"
        super().__init__(self._message(), **facts)

    def _message(self) -> str:
        return f"the server failed while {self.operation}: {self.cause}"


class ServerUnavailableError(ServerError):
    """A transient fault (a dropped connection, an election, a shutdown, a
    write-concern error) lasted past the retry window: the run stopped with
    what it wrote written, and a rerun resumes.

    `error` is the fault ridden through; `answer_lost` says whether a try of
    it went unanswered (a connection dropped or timed out), so that the
    server may still apply what it sent.

    """

    def __init__(
        self, operation: str, error: BaseException, seconds: float, *, answer_lost: bool = False
    ) -> None:
        self.seconds = seconds
        self.answer_lost = answer_lost
        super().__init__(operation, error)

    def _message(self) -> str:
        return (
            f"the server failed while {self.operation}, and kept failing for "
            f"{self.seconds:.0f} s, past the retry window (--retry-for): {self.cause}. "
            "What was written is kept; run the command again to resume"
        )


class WriteConcernRefusedError(ServerError):
    """The server can never satisfy the write concern asked for (more members
    than the deployment has, or a tag set it does not define): not retried.

    `code` is the write-concern error's code (100: UnsatisfiableWriteConcern).

    """

    def __init__(self, operation: str, error: BaseException) -> None:
        details = getattr(error, "details", None) or {}
        concern = details.get("writeConcernErrors") or [details]
        first = concern[0] if concern and isinstance(concern[0], dict) else {}
        #: The write-concern error's own message.
        self.reason = " ".join(str(first.get("errmsg") or error).split())
        super().__init__(operation, error)
        self.code = first.get("code", self.code)

    def _message(self) -> str:
        return (
            f"the server refused the write concern while {self.operation}: "
            f"{shorten(self.reason)}. It cannot be satisfied here, and retrying would not "
            "help; use a --write-concern the deployment can satisfy (a number of members it "
            "has, or majority)"
        )


class LockError(MigrateError):
    """The migration lock could not be taken or kept."""


class LockHeldError(LockError):
    """Another runner holds the migration lock.

    ``holder`` is the lock document: ``owner``, ``host``, ``pid``,
    ``command``, ``acquired_at`` and ``expires_at``.

    """

    holder: dict[str, Any]

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(
            f"the migration lock is held by {holder.get('command', '?')} on host "
            f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}) since "
            f"{holder.get('acquired_at', '?')}; its lease expires at "
            f"{holder.get('expires_at', '?')} unless renewed. Wait for it (--wait), or, "
            "if that runner is dead, clear the lock with `atomdb-migrate unlock`",
            holder=holder,
        )


class LockLostError(LockError):
    """The runner's lease expired or was taken during the run; it stopped."""


class LockAliveError(LockHeldError):
    """`unlock` refused: the holder's lease is still being renewed, so it is alive."""

    def __init__(self, holder: dict[str, Any], age: float | None) -> None:
        renewed = (
            f"its lease was renewed {age:.1f} s ago"
            if age is not None
            else f"its lease runs until {holder.get('expires_at', '?')}"
        )
        LockError.__init__(
            self,
            f"the migration lock is held by {holder.get('command', '?')} on host "
            f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}), and {renewed}: that "
            "runner is alive. Stop it, or give --force to clear the lock anyway (two "
            "runners may then write at once)",
            holder=holder,
        )
