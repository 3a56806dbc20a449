"""A model's former names in a run: their collections renamed, references rewritten.

For a model renamed by ``ops.rename_model`` steps, an upgrade moves the
collections of the former names due at its target into the name the model
has there (`FormerNames.collections`), and then rewrites the references to
those names in every collection (`FormerNames.references`). The work on
the data is `atomdb_migrate.engine.renames`; this module decides which
names are due and runs it through the run's `Retry` and lease.

"""

from __future__ import annotations

from functools import partial
from typing import Any

from packaging.version import Version

from ..driver.mongo import collection_names
from ..driver.retry import Retry
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry
from .lease import Lease
from .options import Direction
from .renames import RenameReport, rename_collection, rewrite_references
from .report import ModelReport


class FormerNames:
    """Renames a run's models' former names into their names.

    Parameters
    ----------
    database
        The run's database.
    registry
        Where the models' names and renames are registered.
    retry
        The run's `Retry`.
    lease
        The run's lease: its lock is checked by the renames.
    batch_size
        Documents per read and per write of a merge or a rewrite.
    skip_collections
        Collections never scanned for references (the lock and the history).

    """

    def __init__(
        self,
        database: Any,
        registry: MigrationRegistry,
        retry: Retry,
        lease: Lease,
        *,
        batch_size: int,
        skip_collections: tuple[str, ...] = (),
    ) -> None:
        self.database, self.registry, self.retry, self.lease = database, registry, retry, lease
        self.batch_size, self.skip_collections = batch_size, skip_collections

    def due(self, cls: type[VersionedModel], target: Version) -> tuple[str, list[str]]:
        """The name the model has at `target`, and the former names renamed into it
        by steps at or below `target` (the most recent first)."""
        name = self.registry.name_at(cls, target)
        due = [
            old
            for old in self.registry.former_names(cls)
            if old != name and (self.registry.renamed_at(old) or target) <= target
        ]
        return name, due

    async def collection(
        self,
        cls: type[VersionedModel],
        report: ModelReport,
        target: Version,
        direction: Direction,
        *,
        dry: bool,
    ) -> tuple[Any, tuple[Any, ...]]:
        """The collection a run reads (upgrading, the former names' renamed into it
        first: `collections`), and the other collections a dry run counts."""
        if direction.down:
            return self.database[cls.__model__], ()
        return await self.collections(cls, report, target, dry=dry)

    async def collections(
        self, cls: type[VersionedModel], report: ModelReport, target: Version, *, dry: bool
    ) -> tuple[Any, tuple[Any, ...]]:
        """Rename the collections of the model's former names into the name it has at
        `target`; return the collection to read, and the other collections a dry run
        counts.

        A run to a version before a ``rename_model`` step reads the collection
        of the name the model had then, and leaves the later names alone.
        `dry` renames nothing: it reads the first collection that exists, and
        counts the others it would merge into it.

        """
        name, due = self.due(cls, target)
        collection = self.database[name]
        if not due:
            return collection, ()
        names = await collection_names(self.database)
        exists = name in names
        others: list[Any] = []
        for old in due:
            if old not in names:
                continue
            rename = RenameReport(old, name)
            report.renames.append(rename)
            if dry:
                rename.collection = "merge" if exists else "rename"
                if exists:
                    others.append(self.database[old])
                else:
                    collection, exists = self.database[old], True
                continue
            await self.retry.call(
                f"moving collection {old} to {name}",
                partial(
                    rename_collection,
                    self.database,
                    rename,
                    batch_size=self.batch_size,
                    lock=self.lease.lock,
                ),
            )
        return collection, tuple(others)

    async def references(
        self, cls: type[VersionedModel], report: ModelReport, target: Version
    ) -> None:
        """Rewrite the references to every former name due at `target`, in every
        collection, to the model's name there."""
        name, due = self.due(cls, target)
        for old in due:
            rename = next((r for r in report.renames if r.old == old), None)
            if rename is None:
                rename = RenameReport(old, name)
                report.renames.append(rename)
            await self.retry.call(
                f"rewriting the references to {old}",
                partial(
                    rewrite_references,
                    self.database,
                    rename,
                    skip=self.skip_collections,
                    batch_size=self.batch_size,
                    lock=self.lease.lock,
                ),
            )
