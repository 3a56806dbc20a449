"""What a run does to a collection's indexes (see `atomdb_migrate.engine.collection_state`).

The index operations of the steps come in two phases (`index_phases`):
those before the documents change (creates, and drops of indexes created
again), and those after every document passed (the drops).
`CollectionIndexes.run` runs either.

An index dropped to make room for another (the same name with other keys
or options, or the same keys under another name) is never left dropped
when it can be created again: a unique replacement is first checked for
documents sharing a key (`UniqueIndexError`, nothing dropped), and a build
that still fails brings the old index back, as it was, before the error is
raised.

"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from packaging.version import Version

from ..driver.mongo import aggregate, to_list
from ..driver.retry import Retry, fault_line
from ..exceptions import ConfigError, ServerError, UniqueIndexError, short_repr
from ..operations.collection import CreateIndex, IndexOperation
from ..operations.running import StepOperations
from ..schema import indexes
from ..steps.versions import StepGraph

log = logging.getLogger("atomdb_migrate")


def index_phases(
    graph: StepGraph, target: Version, *, down: bool
) -> tuple[list[IndexOperation], list[IndexOperation]]:
    """The index operations of the steps up to the target (for a downgrade: of
    the inverses of the steps above it, the latest first), as they come to:
    those before the documents change, and those after (`indexes.phases`)."""
    if down:
        taken = [s.downgrade_fn for s in reversed(graph.steps_above(target))]
    else:
        taken = [s.operations for s in graph.steps_to(target)]
    found = [op for ops in taken if isinstance(ops, StepOperations) for op in ops.indexes()]
    return indexes.phases(found)


class CollectionIndexes:
    """One model's run, as far as its collection's indexes go.

    Parameters
    ----------
    cls
        The versioned model (its name goes in the errors).
    collection
        Its collection.
    retry
        The run's `Retry`, for every call to the server.
    dry_run
        Say what would be done, and do nothing.
    lines
        Where to say what was done, each change as soon as the server made it.
    refused
        Dry run: where to put the unique indexes that documents sharing a key
        keep from being built.

    """

    def __init__(
        self,
        cls: Any,
        collection: Any,
        *,
        retry: Retry,
        dry_run: bool,
        lines: list[str],
        refused: list[UniqueIndexError],
    ) -> None:
        self.cls, self.collection, self.retry = cls, collection, retry
        self.dry_run, self.lines, self.refused = dry_run, lines, refused

    async def run(self, operations: Sequence[IndexOperation]) -> None:
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
                    f"could not create {what} again ({fault_line(exc)}): the collection lacks "
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
                f"{self.collection.name}: {fault_line(exc.error)}. Change the step's "
                "create_index" + (f"; {kept}" if kept else "")
            )
        return exc
