"""Versions, the chain of steps, a step failing on a document, an operation
refusing one.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from typing import Any

from .base import MigrateError, short_repr, shorten


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


class BelowBaseError(GapError):
    """A document is stored below its model's ``__base_version__``, and no step
    leaves its version: the steps below the base were squashed, on the promise
    that no such document is stored any more.

    Attributes
    ----------
    base: str
        The model's ``__base_version__``.

    """

    base: str

    def __init__(
        self,
        model: str,
        from_version: str,
        to_version: str,
        missing: str,
        base: str,
        *,
        doc_id: Any = None,
    ) -> None:
        super().__init__(model, from_version, to_version, missing, doc_id=doc_id)
        message = (
            f"{self.args[0]}: version {from_version} is below the model's "
            f"__base_version__ {base} (its steps below {base} were squashed: no document "
            f"below it should be stored any more); upgrade such documents with the release "
            f"that still has those steps (`atomdb-migrate upgrade`), and run "
            f"`atomdb-migrate check --pending` before a squash ships"
        )
        self.args = (message,)
        self.base = base


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
    """A step goes past the version the model's code declares.

    ``above`` is set when the step starts at or above that version: a new
    step whose model's ``__version__`` is still to be raised, or the newer
    release's step shipped with the old code of a rollback build (which
    ``check`` accepts when the model reads newer documents, or with
    ``--allow-newer-steps``).

    """

    head: str
    source: str
    above: bool

    def __init__(
        self,
        model: str,
        from_version: str,
        to_version: str,
        head: str,
        source: str,
        *,
        above: bool = False,
    ) -> None:
        said = (
            f"; raise the model's __version__ to {to_version}, or, in a rollback build "
            "(the old code with the newer release's step modules), set "
            "`__on_newer__ = 'downgrade'` on the model or give `check --allow-newer-steps`"
            if above
            else ""
        )
        super().__init__(
            f"step {source} goes from version {from_version} to {to_version}, "
            f"past the model's current version {head}{said}",
            model=model,
            from_version=from_version,
            to_version=to_version,
            head=head,
            source=source,
            above=above,
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
        The argument refused: ``"upgrade"``, ``"operations"`` or ``"changes"``.

    """

    argument: str

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message, argument=argument)


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
