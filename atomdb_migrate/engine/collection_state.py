"""What a run does to a collection besides its documents: its indexes and its validator.

The runner makes a `CollectionState` for each model it runs and calls it
around the documents' pass:

1. before the documents change, `expand`: `run_indexes` with the first half
   of `index_phases` (creates, and drops of indexes created again), then
   `relax_validator`, which removes a validator the documents about to be
   written might not pass;
2. after every document passed, `contract`: `run_indexes` with the drops,
   then `set_validator`.

The indexes are `atomdb_migrate.engine.collection_indexes`'s: an index
dropped to make room for another is never left dropped when it can be
created again.

Each change is said in `lines` as soon as the server made it, so a run that
stops says (and records) what it did. A dry run says what it would do in
`lines`, checks every unique index it would build, and changes nothing.
Every call to the server goes through the run's `Retry`.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from packaging.version import Version

from ..driver.mongo import is_mongomock, read_validator, write_validator
from ..driver.retry import Retry
from ..exceptions import ConfigError, UniqueIndexError, short_repr
from ..operations.collection import IndexOperation, SetValidator
from ..operations.running import StepOperations
from ..schema.validators import (
    NO_VALIDATOR,
    Validator,
    validator_of,
)
from ..steps.versions import StepGraph
from .collection_indexes import CollectionIndexes, index_phases


def last_validator_operation(graph: StepGraph, limit: Version) -> SetValidator | None:
    """The last ``set_validator`` of the steps up to `limit` (`StepGraph.steps_to`),
    which decides the validator (None: the steps ask for none)."""
    steps = graph.steps_to(limit)
    found = [
        op
        for s in steps
        if isinstance(s.operations, StepOperations)
        for op in s.operations.validators()
    ]
    return found[-1] if found else None


def asked_validator(cls: Any, op: SetValidator) -> Validator:
    """The validator a ``set_validator`` asks for: the model class's ``$jsonSchema``
    at its level and action, or none."""
    if op.level is None or op.action is None:
        return NO_VALIDATOR
    return validator_of(cls, op.level, op.action)


@dataclass
class _ValidatorPlan:
    """What a run does with the collection's validator (see `CollectionState.plan_validator`)."""

    #: The validator the collection is to have after the run.
    wanted: Validator
    #: The collection's validator: as read at the start, then as the run left it.
    current: Validator


class CollectionState:
    """One model's run, as far as its collection's indexes and validator go.

    Parameters
    ----------
    cls
        The versioned model.
    collection
        Its collection.
    graph
        The model's steps.
    target
        The version the run takes the documents to.
    down
        Whether the run is a downgrade.
    retry
        The run's `Retry`, for every call to the server.
    dry_run
        Say what would be done, and do nothing.
    lines
        Where to say what was done (the model's `ModelReport.indexes`), each
        change as soon as the server made it.
    refused
        Dry run: where to put the unique indexes that documents sharing a key
        keep from being built (the model's `ModelReport.refused`).

    """

    def __init__(
        self,
        cls: Any,
        collection: Any,
        graph: StepGraph,
        target: Version,
        *,
        down: bool,
        retry: Retry,
        dry_run: bool,
        lines: list[str],
        refused: list[UniqueIndexError] | None = None,
    ) -> None:
        self.cls, self.collection, self.graph, self.target = cls, collection, graph, target
        self.down, self.retry, self.dry_run, self.lines = down, retry, dry_run, lines
        #: Dry run: the unique indexes documents sharing a key keep from being built.
        self.refused: list[UniqueIndexError] = [] if refused is None else refused
        #: What the run does with the validator, once planned; None: nothing.
        self.validator: _ValidatorPlan | None = None
        #: The indexes: their operations, run as the phases come.
        self.indexes = CollectionIndexes(
            cls, collection, retry=retry, dry_run=dry_run, lines=lines, refused=self.refused
        )
        #: The index operations after the documents change (set by `expand`).
        self.drops: list[IndexOperation] = []

    # ------------------------------------------------------------------
    # The phases
    # ------------------------------------------------------------------
    async def expand(self, pending: int) -> None:
        """Before the documents change: the first index phase, and the validator
        planned and, where the run has `pending` documents to write, removed."""
        first, self.drops = self.index_phases()
        await self.plan_validator()
        await self.run_indexes(first)
        await self.relax_validator(pending)

    async def contract(self) -> None:
        """After every document passed: the drops, then the validator set."""
        await self.run_indexes(self.drops)
        await self.set_validator()

    # ------------------------------------------------------------------
    # Indexes (`atomdb_migrate.engine.collection_indexes`)
    # ------------------------------------------------------------------
    def index_phases(self) -> tuple[list[IndexOperation], list[IndexOperation]]:
        """The index operations of the run: before the documents change, and after."""
        return index_phases(self.graph, self.target, down=self.down)

    async def run_indexes(self, operations: Sequence[IndexOperation]) -> None:
        """Run index operations (`CollectionIndexes.run`)."""
        await self.indexes.run(operations)

    # ------------------------------------------------------------------
    # The validator
    # ------------------------------------------------------------------
    async def plan_validator(self) -> None:
        """What the run does with the collection's validator; None: leaves it alone.

        Once a model's steps set a validator, the runner keeps it in step with
        the model class in the code: the last validator operation up to the
        target decides its level and action (or, None, that there is none),
        and the schema is derived from the class, which describes the
        model's version only. So:

        - an upgrade to the model's version sets that validator (a rerun
          finds it set, and does nothing);
        - an upgrade to an older version (``--to``) leaves the validator
          alone, and says so;
        - a downgrade removes it: the one the older version had is not
          known here (``upgrade`` run with the older code sets its own).

        """
        cls, target = self.cls, self.target
        head = cls.__parsed_version__
        # Downgrading, the validator the steps up to the model's version set.
        last = last_validator_operation(self.graph, head if self.down else target)
        if last is None or (self.down and target == head):
            return
        if is_mongomock(self.collection):
            self.lines.append("validator left alone: the in-memory backend keeps none")
            return
        if self.down:
            wanted = NO_VALIDATOR
        elif last.level is not None and target != head:
            self.lines.append(
                f"validator left alone: it describes the model at version {head}, not {target}"
            )
            return
        else:
            wanted = asked_validator(cls, last)
        current = await self.retry.call(
            f"reading the validator of {self.collection.name}",
            partial(read_validator, self.collection),
        )
        self.validator = _ValidatorPlan(wanted, current)

    async def relax_validator(self, pending: int) -> None:
        """Before the documents change: remove a validator the run has to replace or remove.

        A validator derived from an older model (or, downgrading, from the
        model's version) may refuse the documents the steps write. It is
        removed first where the run has documents to write, and the new one
        set once every document passed; a run that stops before leaves the
        collection without one, and the next run sets it.

        """
        plan = self.validator
        if plan is None or not plan.current or plan.current.same(plan.wanted):
            return
        if plan.wanted and not pending:
            return  # nothing to write: the new validator replaces it at the end
        what = f"{plan.current.describe()} before the documents change"
        if plan.wanted:
            what += "; the new one is set once every document passed"
        await self._write_validator(NO_VALIDATOR, what)
        plan.current = NO_VALIDATOR

    async def set_validator(self) -> None:
        """After the documents changed: set the validator, unless it is already as wanted."""
        plan = self.validator
        if plan is None or plan.current.same(plan.wanted):
            return
        what = plan.current.describe()
        if plan.wanted:
            model = f"{self.cls.__model__} at version {self.target}"
            what = f"{plan.wanted.describe()}: the $jsonSchema of {model}"
            if not self.dry_run:  # dry, the documents are not written yet
                await self._check_documents(plan.wanted)
        await self._write_validator(plan.wanted, what)
        plan.current = plan.wanted

    async def _check_documents(self, validator: Validator) -> None:
        """Refuse a strict validator the stored documents do not pass.

        The server would refuse every later write to such a document, the
        next run's steps included: the steps wrote what the model does not
        declare (an int where the model has a Float, say). A moderate
        validator, or one that only warns, leaves them writable: it is set,
        and the report says how many do not pass.

        """
        collection = self.collection
        query = {"$nor": [validator.rules]}
        first = await self.retry.call(
            f"checking the documents of {collection.name} against the validator",
            partial(collection.find_one, query, {"_id": 1}),
        )
        if first is None:
            return
        n = await self.retry.call(
            f"counting the documents of {collection.name} the validator refuses",
            partial(collection.count_documents, query),
        )
        if validator.level == "strict" and validator.action == "error":
            raise ConfigError(
                f"model {self.cls.__model__!r}: {n} stored documents do not pass the "
                f"model's $jsonSchema (the first: _id={short_repr(first.get('_id'))}), so "
                "the strict validator was not set: the server would refuse every later write "
                "to them. They hold what the model does not declare (a field it requires "
                "missing, or of another type: an int where it has a Float, say); "
                "`atomdb_migrate.json_schema(Model)` shows what it declares. Fix the "
                "documents with a step, then run upgrade again; `check --pending` fails "
                "until the validator is set"
            )
        self.lines.append(
            f"{n} stored documents do not pass the model's $jsonSchema (the first: "
            f"_id={short_repr(first.get('_id'))}); {validator.level} with action "
            f"{validator.action}, the validator leaves them writable"
        )

    async def _write_validator(self, validator: Validator, what: str) -> None:
        """Set (or remove) the validator, not in a dry run, and report it."""
        verb, done = ("set", "set") if validator else ("remove", "removed")
        if self.dry_run:
            self.lines.append(f"would {verb} {what}")
            return
        await self.retry.call(
            f"{'setting' if validator else 'removing'} the validator of {self.collection.name}",
            partial(write_validator, self.collection, validator),
        )
        self.lines.append(f"{done} {what}")
