"""Running a list of operations: a step's `StepOperations`, in Python and on the server.

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from ..core.documents import Document
from ..core.storage import VERSION_KEY
from ..exceptions import StepDefinitionError
from .base import Operation, _all_of
from .collection import IndexOperation, SetValidator
from .paths import (
    FAILED_FIELD,
    ORIGINAL_FIELD,
    RESERVED_PREFIX,
    Embedded,
    EmbeddedSource,
    ModelPaths,
    _replace,
    literal,
    references_of,
)
from .rename_model import RenameModel


class StepOperations:
    """A step's list of operations, as a step function (the Python form) and
    as updates (the server form). (Called ``Operations`` before; the name
    stays, an alias.)

    Parameters
    ----------
    operations: iterable of Operation
        The operations, in order: a list, a tuple or any ordered iterable,
        not a set. The one place a step's operations are checked.
    embedded: mapping or callable, optional
        The embedded models on the model's paths at the version the
        operations leave documents at (`Embedded`), or a function giving
        them when first needed: `atomdb_migrate.registry.register_step`
        passes the registry's, which reads the step's ``schema``, or the
        model class for a step arriving at the model's version. Without it,
        no path is known to hold an embedded model.

    """

    def __init__(self, operations: Iterable[Operation], embedded: EmbeddedSource = None) -> None:
        given = _checked(operations)
        if embedded is None:
            source: Callable[[], Embedded] = Operation._embedded
        elif callable(embedded):
            source = embedded
        else:
            known = ModelPaths(embedded, references_of(embedded))
            source = lambda: known  # noqa: E731
        self.operations = tuple(op.bound(source) for op in given)

    def __call__(self, doc: Document) -> None:
        for op in self.operations:
            op.apply(doc)

    def __repr__(self) -> str:
        return f"[{', '.join(repr(op) for op in self.operations)}]"

    def inverse(self, embedded: EmbeddedSource = None) -> StepOperations:
        """The operations that undo these, last first; see `Operation.inverse`.

        `embedded`: the embedded models at the version they take documents
        back to (see `StepOperations`).

        """
        return StepOperations([op.inverse() for op in reversed(self.operations)], embedded)

    def confined_fields(self) -> set[str] | None:
        """The top-level fields the operations read or change, when they reach
        nothing else (every one `Operation.confined`); None otherwise."""
        fields: set[str] = set()
        for op in self.operations:
            if not op.confined:
                return None
            fields |= op.touches()
        return fields

    def renames(self) -> list[RenameModel]:
        return [op for op in self.operations if isinstance(op, RenameModel)]

    def indexes(self) -> list[IndexOperation]:
        """The operations on the collection's indexes, in order."""
        return [op for op in self.operations if isinstance(op, IndexOperation)]

    def validators(self) -> list[SetValidator]:
        """The operations on the collection's validator, in order."""
        return [op for op in self.operations if isinstance(op, SetValidator)]

    def server_updates(
        self, query: dict[str, Any], to_version: str
    ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The updates, in order, that run the step on the documents `query` matches.

        First, where there is one, the fast form: the documents of the
        common shape (see `Operation.fast`), changed with plain stages. Then
        the general form (`pipeline`) for the others. Each update sets the
        new version, so the second one no longer matches what the first
        changed.

        """
        general = (query, self.pipeline(to_version))
        fast = self.fast_update(to_version)
        if fast is None:
            return [general]
        conditions, stages = fast
        return [(_all_of(query, conditions), stages), general]

    def fast_update(
        self, to_version: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """The step's fast form: its query conditions and its two stages.

        There is one when every operation has a fast form and no two touch
        the same top-level field: then one ``$set`` (whose expressions all
        read the document as it was) and one ``$unset`` make every change.

        """
        seen: set[str] = set()
        conditions: list[dict[str, Any]] = []
        sets: dict[str, Any] = {}
        unsets: list[str] = []
        for op in self.operations:
            fast = op.fast()
            touched = op.touches()
            if fast is None or touched & seen:
                return None
            seen |= touched
            conditions += fast[0]
            sets.update(fast[1])
            unsets += fast[2]
        sets[VERSION_KEY] = literal(to_version)
        stages: list[dict[str, Any]] = [{"$set": sets}]
        if unsets:
            stages.append({"$unset": unsets})
        return conditions, stages

    @property
    def fallible(self) -> bool:
        """Whether an operation may refuse a document (a value that does not convert)."""
        return any(op.fallible for op in self.operations)

    def refusing(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """An aggregation counting the documents `query` matches that the operations
        would refuse (``[{"refused": n}]``; nothing when none); no stages when
        none of them can refuse one."""
        if not any(op.fallible for op in self.operations):
            return []
        stages: list[dict[str, Any]] = [{"$match": query}]
        for op in self.operations:
            stages.extend(op.stages())
        return [*stages, {"$match": {FAILED_FIELD: True}}, {"$count": "refused"}]

    def pipeline(self, to_version: str) -> list[dict[str, Any]]:
        """The update pipeline that runs the operations and sets the version.

        A step with a conversion keeps the document as read in a reserved
        field: where a conversion fails the document is put back unchanged,
        at its old version, for the client path to report.

        """
        fallible = any(op.fallible for op in self.operations)
        stages: list[dict[str, Any]] = []
        if fallible:
            stages.append({"$set": {ORIGINAL_FIELD: "$$ROOT"}})
        for op in self.operations:
            stages.extend(op.stages())
        stages.append({"$set": {VERSION_KEY: literal(to_version)}})
        if fallible:
            stages.append(
                _replace(
                    {"$cond": [{"$eq": [f"${FAILED_FIELD}", True]}, f"${ORIGINAL_FIELD}", "$$ROOT"]}
                )
            )
            stages.append({"$unset": [ORIGINAL_FIELD, FAILED_FIELD]})
        return stages


#: Where a fused pass holds a document a step refused, as that step found it,
#: while the steps after it run on what is left (see `fused_pipeline`).
HELD_FIELD = RESERVED_PREFIX + "held__"


def fused_pipeline(steps: Sequence[tuple[StepOperations, str]]) -> list[dict[str, Any]]:
    """One update pipeline running several steps in one pass: each step's stages in
    order, each step setting the version it leaves.

    `steps` are the steps' operations, each with the version it leaves
    documents at. A document a step refuses ends as step-by-step updates
    leave it: as the steps before it left it, at the version it starts from.
    Until the end of the pipeline it is held in a reserved field of an
    otherwise empty document (``_id`` aside), which the steps after run on
    to no effect; the last stage puts it back.

    """
    if len(steps) == 1:
        operations, to_version = steps[0]
        return operations.pipeline(to_version)
    stages: list[dict[str, Any]] = []
    for operations, to_version in steps:
        if not operations.fallible:
            stages.extend(operations.pipeline(to_version))
            continue
        stages.append({"$set": {ORIGINAL_FIELD: "$$ROOT"}})
        for op in operations.operations:
            stages.extend(op.stages())
        stages.append({"$set": {VERSION_KEY: literal(to_version)}})
        original = f"${ORIGINAL_FIELD}"
        held = {
            "_id": f"{original}._id",
            HELD_FIELD: {"$ifNull": [f"{original}.{HELD_FIELD}", original]},
        }
        stages.append(_replace({"$cond": [{"$eq": [f"${FAILED_FIELD}", True]}, held, "$$ROOT"]}))
        stages.append({"$unset": [ORIGINAL_FIELD, FAILED_FIELD]})
    if any(operations.fallible for operations, _ in steps):
        stages.append(_replace({"$ifNull": [f"${HELD_FIELD}", "$$ROOT"]}))
    return stages


def fused_updates(
    steps: Sequence[tuple[StepOperations, str]], query: dict[str, Any]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The updates, in order, that run several steps in one pass on the documents
    `query` matches (as `StepOperations.server_updates` does for one).

    First, where there is one, the fast form: every step has one, and no
    step's conditions read a field a step before it in the pass changes, so
    that all of them hold on the document as stored; its stages are the
    steps' plain stages in order. Then `fused_pipeline` for the others. Each
    update sets the last step's version, so the second one no longer matches
    what the first changed.

    """
    general = (query, fused_pipeline(steps))
    conditions: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    touched: set[str] = set()
    for operations, to_version in steps:
        fast = operations.fast_update(to_version)
        read = _fields_read(fast[0]) if fast is not None else {"$"}
        if fast is None or "$" in read or read & touched:
            return [general]
        conditions += fast[0]
        stages += fast[1]
        for op in operations.operations:
            touched |= op.touches()
    return [(_all_of(query, conditions), stages), general]


def _fields_read(conditions: Any) -> set[str]:
    """The top-level fields a query's conditions read (those under ``$or``,
    ``$and``, ``$nor`` included)."""
    found: set[str] = set()
    if isinstance(conditions, list):
        for item in conditions:
            found |= _fields_read(item)
    elif isinstance(conditions, dict):
        for name, value in conditions.items():
            if name in ("$or", "$and", "$nor"):
                found |= _fields_read(value)
            elif name.startswith("$"):
                found.add("$")  # an operator reading the whole document: never fused fast
            else:
                found.add(name.split(".")[0])
    return found


#: The former name of `StepOperations`.
Operations = StepOperations


def _checked(operations: Any) -> tuple[Operation, ...]:
    """A step's operations, checked: an ordered collection of `Operation`.

    Raises
    ------
    StepDefinitionError
        For a single operation, a set, a mapping, a string or anything not
        iterable, and for an item that is not an operation.

    """
    unordered = (Operation, str, bytes, Mapping, AbstractSet)
    if isinstance(operations, unordered) or not isinstance(operations, Iterable):
        raise StepDefinitionError(
            "operations", "operations must be a list of atomdb_migrate.ops operations"
        )
    given = tuple(operations)
    for op in given:
        if not isinstance(op, Operation):
            raise StepDefinitionError(
                "operations", f"not an operation: {op!r} (use the functions of atomdb_migrate.ops)"
            )
    return given
