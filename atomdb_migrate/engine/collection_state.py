"""What a run does to a collection besides its documents: its indexes and its validator.

The runner makes a `CollectionState` for each model it runs and calls it
around the documents' pass:

1. before the documents change (expand): `run_indexes` with the first half
   of `index_phases` (creates, and drops of indexes created again), then
   `relax_validator`, which removes a validator the documents about to be
   written might not pass;
2. after every document passed (contract): `run_indexes` with the drops,
   then `set_validator`.

An index dropped to make room for another (the same name with other keys
or options, or the same keys under another name) is never left dropped
when it can be created again: a unique replacement is first checked for
documents sharing a key (`UniqueIndexError`, nothing dropped), and a build
that still fails brings the old index back, as it was, before the error is
raised.

Each change is said in `lines` as soon as the server made it, so a run that
stops says (and records) what it did. A dry run says what it would do in
`lines`, checks every unique index it would build, and changes nothing.
Every call to the server goes through the run's `Retry`.

"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from packaging.version import Version

from ..driver.mongo import aggregate, is_mongomock, read_validator, to_list, write_validator
from ..driver.retry import Retry, describe
from ..exceptions import ConfigError, ServerError, UniqueIndexError, short_repr
from ..operations.collection import CreateIndex, IndexOperation, SetValidator
from ..operations.running import Operations
from ..schema import indexes
from ..schema.validators import (
    NO_VALIDATOR,
    Validator,
    validator_of,
)
from ..steps.versions import Step

log = logging.getLogger("atomdb_migrate")


def last_validator_operation(steps: list[Step], limit: Version) -> SetValidator | None:
    """The last ``set_validator`` of the steps up to `limit`, which decides the
    validator (None: the steps ask for none)."""
    found = [
        op
        for s in steps
        if s.to_key <= limit and isinstance(s.operations, Operations)
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
    steps
        The model's chain of steps.
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
        steps: list[Step],
        target: Version,
        *,
        down: bool,
        retry: Retry,
        dry_run: bool,
        lines: list[str],
        refused: list[UniqueIndexError] | None = None,
    ) -> None:
        self.cls, self.collection, self.steps, self.target = cls, collection, steps, target
        self.down, self.retry, self.dry_run, self.lines = down, retry, dry_run, lines
        #: Dry run: the unique indexes documents sharing a key keep from being built.
        self.refused: list[UniqueIndexError] = [] if refused is None else refused
        #: What the run does with the validator, once planned; None: nothing.
        self.validator: _ValidatorPlan | None = None

    # ------------------------------------------------------------------
    # Indexes
    # ------------------------------------------------------------------
    def index_phases(self) -> tuple[list[IndexOperation], list[IndexOperation]]:
        """The index operations of the steps up to the target (for a downgrade: of
        the inverses of the steps above it, the latest first), as they come to:
        those before the documents change, and those after (`indexes.phases`)."""
        target, steps = self.target, self.steps
        if self.down:
            taken = [s.downgrade_fn for s in reversed(steps) if s.from_key >= target]
        else:
            taken = [s.operations for s in steps if s.to_key <= target]
        found = [op for ops in taken if isinstance(ops, Operations) for op in ops.indexes()]
        return indexes.phases(found)

    async def run_indexes(self, operations: Sequence[IndexOperation]) -> None:
        """Run index operations: an index that is already as asked is left alone,
        and so is one dropped to be created again as it already is.

        An index dropped to make room for another (replaced under its name, or
        renamed) is dropped only once the collection can take the new one: a
        unique one is first checked for documents sharing a key, and refused
        (`UniqueIndexError`) with the old one left as it is. If the new one
        still fails, the old one is created again as it was before the error
        is raised. A dry run checks every unique index it would create, and
        reports those it could not build in `refused`.

        """
        if not operations:
            return
        collection = self.collection
        existing = await self.retry.call(
            f"listing the indexes of {collection.name}", collection.index_information
        )
        changes = self._index_changes(operations, existing)
        await self._check_unique(changes)
        if self.dry_run:
            return
        dropped: dict[str, dict[str, Any]] = {}  # dropped to make room, not yet replaced
        for op, found in changes:
            if isinstance(op, CreateIndex):
                try:
                    await self._create_index(op)
                except BaseException as exc:
                    kept = await self._restore_indexes(dropped, op)
                    raise await self._index_error(op, exc, kept) from None
                self.lines.append(f"created {op.describe()}")
                for name in [n for n, info in dropped.items() if indexes.replaces(op, n, info)]:
                    del dropped[name]
            else:
                await self._drop_index(op)
                assert found is not None
                dropped[op.name] = found
                self.lines.append(f"dropped {op.describe()}")

    def _index_changes(
        self, operations: Sequence[IndexOperation], existing: dict[str, Any]
    ) -> list[tuple[IndexOperation, dict[str, Any] | None]]:
        """The creates and drops the operations make of the collection's indexes, in
        order, each with the index as the collection has it (for a drop); a dry run
        says each here. Nothing is sent to the server.

        Raises
        ------
        ConfigError
            If a create conflicts with an index of its name: before any change.

        """
        changes: list[tuple[IndexOperation, dict[str, Any] | None]] = []
        for i, op in enumerate(operations):
            found = existing.get(op.name)
            if isinstance(op, CreateIndex):
                if found is not None:
                    if not indexes.same_index(found, op):
                        raise ConfigError(
                            f"model {self.cls.__model__!r}: {op.describe()} conflicts with the "
                            f"index {op.name} of {self.collection.name}, which is "
                            f"{short_repr({k: v for k, v in found.items() if k != 'v'})}: drop "
                            "that index, or give create_index another name"
                        )
                    continue
                existing[op.name] = {"key": op.keys, **op.options}
                changes.append((op, None))
            elif found is None or any(
                isinstance(later, CreateIndex)
                and later.name == op.name
                and indexes.same_index(found, later)
                for later in operations[i + 1 :]
            ):
                continue  # dropped already, or already as it is to be created again
            else:
                del existing[op.name]
                changes.append((op, found))
        return changes

    async def _check_unique(
        self, changes: list[tuple[IndexOperation, dict[str, Any] | None]]
    ) -> None:
        """Look for documents sharing a key of each unique index to build where a
        failed build would cost an index (one dropped ahead of it), and, dry, of
        every one. A dry run reports each change, and records what it found."""
        dropped: list[tuple[str, dict[str, Any]]] = []
        refused: dict[int, UniqueIndexError] = {}  # by position in `changes`
        kept: set[str] = set()  # dropped ahead of a replacement that cannot be built
        for i, (op, found) in enumerate(changes):
            if found is not None:
                dropped.append((op.name, found))
            elif isinstance(op, CreateIndex) and op.options.get("unique"):
                replaced = [(n, info) for n, info in dropped if indexes.replaces(op, n, info)]
                if not (self.dry_run or replaced):
                    continue  # nothing dropped for it: the build itself says
                error = await self._duplicates(
                    op,
                    "; ".join(
                        f"the {indexes.found_described(n, info)} it replaces was left as it is"
                        for n, info in replaced
                    ),
                )
                if error is not None and not self.dry_run:
                    raise error
                if error is not None:
                    refused[i] = error
                    kept.update(n for n, _ in replaced)
        if not self.dry_run:
            return
        for i, (op, found) in enumerate(changes):
            if i in refused:
                self.refused.append(refused[i])
                self.lines.append(
                    f"would create {op.describe()}, but it cannot be built: {refused[i].shared}"
                )
            elif found is not None and op.name in kept:
                self.lines.append(
                    f"would leave {op.describe()} as it is: its replacement cannot be built"
                )
            else:
                verb = "create" if isinstance(op, CreateIndex) else "drop"
                self.lines.append(f"would {verb} {op.describe()}")

    async def _duplicates(self, op: CreateIndex, kept: str = "") -> UniqueIndexError | None:
        """The error of a unique index that documents sharing a key keep from being
        built (None: none found)."""
        pipeline = indexes.duplicates_pipeline(op)
        if pipeline is None:
            return None
        collection = self.collection
        rows = await self.retry.call(
            f"looking for documents of {collection.name} that share a key of {op.describe()}",
            partial(aggregate, collection, pipeline, allowDiskUse=True),
        )
        if not rows:
            return None
        row = rows[0]
        return UniqueIndexError(
            self.cls.__model__,
            collection.name,
            op.describe(),
            indexes.shared_key(op, row),
            [row.get("first"), row.get("last")],
            kept=kept,
        )

    async def _sharing(self, op: CreateIndex, key: dict[str, Any]) -> list[Any]:
        """The ``_id`` of two documents holding the key the server named (under the
        index's collation, which the duplicates' aggregation does not apply)."""
        options = {"collation": op.options["collation"]} if "collation" in op.options else {}

        async def two() -> list[Any]:
            cursor = self.collection.find(key, {"_id": 1}, **options)
            return await to_list(cursor.sort("_id", 1).limit(2))

        try:
            found = await self.retry.call(
                f"finding the documents of {self.collection.name} that share a key", two
            )
        except ServerError:
            return []
        return [doc["_id"] for doc in found]

    async def _create_index(self, op: CreateIndex) -> None:
        await self.retry.call(
            f"creating {op.describe()} on {self.collection.name}",
            partial(self.collection.create_index, op.keys, **op.options),
        )

    async def _drop_index(self, op: IndexOperation) -> None:
        try:
            await self.retry.call(
                f"dropping {op.describe()} on {self.collection.name}",
                partial(self.collection.drop_index, op.name),
            )
        except ServerError as exc:
            if exc.code != 27:  # IndexNotFound: gone already (a retried drop that had passed)
                raise

    async def _restore_indexes(
        self, dropped: dict[str, dict[str, Any]], failed: CreateIndex
    ) -> str:
        """Create again, as they were, the indexes dropped to make room for ones not
        built (`failed` the first); say what became of each."""
        said = []
        for name, info in dropped.items():
            what = indexes.found_described(name, info)
            keys, options = indexes.as_created(info)
            try:
                await self.retry.call(
                    f"creating {what} again on {self.collection.name}",
                    partial(self.collection.create_index, keys, name=name, **options),
                )
            except BaseException as exc:
                line = (
                    f"could not create {what} again ({describe(exc)}): the collection lacks "
                    f"it; create it by hand, or run upgrade again once {failed.describe()} "
                    "can be built"
                )
                log.error("%s: %s", self.collection.name, line)
                self.lines.append(line)
                said.append(f"the {what} it replaces was dropped, and {line}")
                if not isinstance(exc, Exception):
                    raise
                continue
            self.lines.append(f"created {what} again, as it was: {failed.describe()} failed")
            said.append(f"the {what} it replaces was created again as it was")
        dropped.clear()
        return "; ".join(said)

    async def _index_error(self, op: CreateIndex, exc: BaseException, kept: str) -> BaseException:
        """The error a failed build raises: `UniqueIndexError` where documents share a
        key, `ConfigError` where the server refuses the index (beside another, or
        as it is asked for), the server's own otherwise."""
        code = getattr(exc, "code", None)
        if code in (11000, 11001):  # DuplicateKey
            try:
                found = await self._duplicates(op, kept)
            except ServerError:
                found = None  # the server's own words then
            if found is not None:
                return found
            details = getattr(getattr(exc, "error", None), "details", None) or {}
            found_key = details.get("keyValue")
            key = dict(found_key) if isinstance(found_key, dict) else {}
            return UniqueIndexError(
                self.cls.__model__,
                self.collection.name,
                op.describe(),
                key,
                await self._sharing(op, key) if key else [],
                kept=kept,
            )
        if code in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
            assert isinstance(exc, ServerError)
            return ConfigError(
                f"model {self.cls.__model__!r}: {op.describe()} conflicts with an "
                f"index of {self.collection.name}: {exc.error}" + (f"; {kept}" if kept else "")
            )
        if code in (67, 197):  # CannotCreateIndex, InvalidIndexSpecificationOption
            assert isinstance(exc, ServerError)
            return ConfigError(
                f"model {self.cls.__model__!r}: the server refuses {op.describe()} on "
                f"{self.collection.name}: {describe(exc.error)}. Change the step's "
                "create_index" + (f"; {kept}" if kept else "")
            )
        return exc

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
        last = last_validator_operation(self.steps, head if self.down else target)
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
