"""Defining a step: its arguments checked once, and the `Step` made whole.

`register_step`, the `step` decorator (both in
`atomdb_migrate.steps.registry`) and the loader of step modules all make
their steps with `define_step`: it is the one place that checks a step's
``changes``, turns its ``operations`` into a `StepOperations` (which checks
them), reads its message from a docstring, and derives a step's upgrade and
downgrade functions from its operations. The registry then adds the step;
the loader first makes every module's step, so that a module refused names
its line before any step is registered.

"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from ..core.documents import Document
from ..exceptions import IrreversibleOperationError, StepDefinitionError
from .versions import Step, StepFunction, VersionLike, parse_version

if TYPE_CHECKING:
    from ..operations.base import Operation
    from ..operations.paths import Embedded
    from ..operations.running import StepOperations

#: The tags of comments that ask the author to confirm what a generated step
#: does to stored data. `atomdb-migrate check` refuses a step module holding
#: one until the comment is deleted (see `atomdb_migrate.commands.loader`);
#: autogenerate writes them. Here, below both, so that loading the step
#: modules does not import autogenerate.
CONFIRM_TAGS = ("DELETES DATA", "LOSSY")

#: Where a step's operations learn the embedded models on a model's paths at a
#: version (`MigrationRegistry.embedded_at`).
EmbeddedAt = Callable[[str, Version], "Embedded"]


def message_of(owner: Any) -> str:
    """A step's message from a docstring: the first line of `owner`'s (a step
    function's, or a step module's), or "" when it has none."""
    doc = (getattr(owner, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def check_changes(changes: Iterable[str] | None) -> tuple[str, ...] | None:
    """A step's declared ``changes``, checked: dotted paths of stored fields.

    Raises
    ------
    StepDefinitionError
        If `changes` is a string or not a list of strings, or if a path is
        empty or names a field the toolkit manages.

    """
    if changes is None:
        return None
    if isinstance(changes, Mapping):
        pairs = mapped_changes(changes)
        return tuple(dict.fromkeys(p for pair in pairs for p in pair))
    found = tuple(changes) if not isinstance(changes, str) else None
    if found is None or not all(isinstance(c, str) for c in found):
        raise StepDefinitionError(
            "changes", f"changes must be a list of field paths, not {changes!r}"
        )
    from ..operations.paths import split_path

    for path in found:
        try:
            split_path(path, what="changes:")
        except ValueError as exc:
            raise StepDefinitionError("changes", str(exc)) from None
    return found


def mapped_changes(changes: Any) -> tuple[tuple[str, str], ...]:
    """The paths a Python step declares it carries a field's value from and to:
    ``changes`` given as a mapping, ``{"name": "full_name"}``; none for a list.

    Code one version behind then saves a change to such a field through the
    step (the step runs on the changed document, and its downgrade must give
    the change back: see `atomdb_migrate.model.rolling`).

    Raises
    ------
    StepDefinitionError
        If a key or a value is not a path.

    """
    if not isinstance(changes, Mapping):
        return ()
    pairs = tuple(changes.items())
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise StepDefinitionError(
            "changes", f"changes must map field paths to field paths, not {changes!r}"
        )
    from ..operations.paths import split_path

    for path in (p for pair in pairs for p in pair):
        try:
            split_path(path, what="changes:")
        except ValueError as exc:
            raise StepDefinitionError("changes", str(exc)) from None
    return pairs


def define_step(
    model: str,
    from_version: VersionLike,
    to_version: VersionLike,
    upgrade: StepFunction | None = None,
    downgrade: StepFunction | None = None,
    *,
    operations: Iterable[Operation] | None = None,
    schema: dict[str, str] | None = None,
    changes: Iterable[str] | None = None,
    message: str = "",
    source: str = "",
    unfinished: Iterable[str] = (),
    embedded_at: EmbeddedAt | None = None,
) -> Step:
    """Check a step's arguments and make the step, registering nothing.

    The arguments are `register_step`'s (`model` by its ``__model__``
    name), and:

    Parameters
    ----------
    unfinished: list of str
        What is left to write in the step's module (see `Step.unfinished`).
    embedded_at: callable, optional
        Where the step's operations learn the embedded models on the model's
        paths at a version, when they first run (the model class may be
        defined after its steps): the registry's `embedded_at`.

    Raises
    ------
    StepDefinitionError
        For an argument refused; its `argument` says which.
    InvalidVersionError
        For a version that is not one.

    """
    declared = check_changes(changes)
    if operations is None and upgrade is None:
        raise StepDefinitionError("upgrade", "a step needs an upgrade function or operations")
    if not message and upgrade is not None:
        message = message_of(upgrade)
    common: dict[str, Any] = {
        "model": model,
        "from_version": str(from_version),
        "to_version": str(to_version),
        "message": message,
        "schema": schema,
        "changes": declared,
        "maps": mapped_changes(changes),
        "unfinished": tuple(unfinished),
    }
    if operations is None:
        assert upgrade is not None
        return Step(upgrade_fn=upgrade, downgrade_fn=downgrade, source=source, **common)
    from ..operations.running import StepOperations

    start = parse_version(str(from_version), model=model, what="step version")
    end = parse_version(str(to_version), model=model, what="step version")
    ops = StepOperations(operations, _at(embedded_at, model, end))
    up, down, reason = _operation_functions(ops, upgrade, downgrade, _at(embedded_at, model, start))
    return Step(
        upgrade_fn=up,
        downgrade_fn=down,
        source=source or f"{model} {from_version} -> {to_version} {ops!r}",
        operations=ops,
        server_side=upgrade is None,
        downgrade_reason=reason,
        **common,
    )


def _at(
    embedded_at: EmbeddedAt | None, model: str, version: Version
) -> Callable[[], Embedded] | None:
    """Where operations learn the embedded models at `version`, asked when first
    needed (None: they know of none)."""
    return None if embedded_at is None else partial(embedded_at, model, version)


def _operation_functions(
    ops: StepOperations,
    upgrade: StepFunction | None,
    downgrade: StepFunction | None,
    before: Callable[[], Embedded] | None,
) -> tuple[StepFunction, StepFunction | None, str]:
    """A step's upgrade and downgrade functions from its operations and functions.

    The upgrade runs the operations, then the upgrade function if there is
    one. A downgrade function, when given, is the step's downgrade: it takes
    a document from the step's ``to_version`` back to its ``from_version``,
    undoing the upgrade function and the operations alike. Without one, a
    step made only of operations derives its downgrade from their exact
    inverses, where they all have one, which learn the embedded models at
    the step's ``from_version`` from `before`.

    Returns the upgrade function, the downgrade function (None when there is
    none) and, then, why.

    """
    up: StepFunction = ops if upgrade is None else _then(ops, upgrade)
    moved = ops.renames()
    if moved:
        return up, None, _move_refusal(moved[0], downgrade is not None)
    if downgrade is not None:
        return up, downgrade, ""
    if upgrade is not None:
        return up, None, "has no downgrade function"
    try:
        return up, ops.inverse(before), ""
    except IrreversibleOperationError as exc:
        return up, None, f"cannot be downgraded: {exc}{_function_hint(ops, exc)}"


def _then(ops: StepOperations, after: StepFunction) -> StepFunction:
    """The upgrade of a step with operations and a function: the operations,
    then the function. What the function gives back is given back as it is:
    `atomdb_migrate.steps.chain.run_chain` checks it, as for any step."""

    async def run_both(doc: Document) -> Any:
        ops(doc)
        result = after(doc)
        return await result if inspect.isawaitable(result) else result

    run_both.__wrapped__ = after  # type: ignore[attr-defined]  # for its checksum
    return run_both


def _move_refusal(move: Operation, function: bool) -> str:
    """Why a step with a ``rename_model`` has no downgrade, with or without a function.

    A downgrade function changes documents only: given one, the documents
    would go back to the older version under the new name, in a collection
    the older code does not read, and so would every reference to them.

    """
    try:
        move.inverse()
    except IrreversibleOperationError as exc:
        why = str(exc)
    else:  # pragma: no cover - rename_model has no inverse
        why = f"{move!r} cannot be undone"
    if function:
        why += (
            "; the step's downgrade function is not used: it changes documents only, "
            "and would leave them and the references to them under the new name"
        )
    return f"cannot be downgraded: {why}"


def _function_hint(ops: StepOperations, exc: IrreversibleOperationError) -> str:
    """The remedy a refusal suggests: a downgrade function, where it is one.

    A downgrade function changes documents only, and replaces the step's
    derived downgrade: the step's index operations are then left as they are.

    """
    if not getattr(exc.operation, "__undone_by_function__", True):
        return ""  # an index operation: describe it, or undo it with a new step
    if ops.indexes():
        return (
            " (or give the step a downgrade function: it takes the documents back, "
            "and leaves the step's indexes as they are)"
        )
    return " (or give the step a downgrade function)"
