"""Restoring without a database: references as objects not loaded yet.

atom-db restores a reference (``{"_id", "__ref__", "__model__"}``) through
its model manager: a ``Typed(Model)`` member through ``Model.restore`` and
the model's object cache, any other member (``Instance``, a list of them)
through the serializer, which fetches the referenced document. With no
database set, both raise atom-db's ``OSError: No database has been set``.

`offline` sets an `OfflineDatabase` for the time of a block, when no
database is set. Every model then has an object cache of its own for the
block, and a reference restores as an object of its model holding the
referenced ``_id``, not loaded yet (``__restored__`` False), which is what
atom-db makes of a ``Typed(Model)`` reference with a database: a versioned
model's serializer hands the reference back as the state to restore, and
for a plain atom-db model the offline collection answers a lookup by
``_id`` with that ``_id`` alone. Nothing else is answered: a test that reads
or writes needs a database (the ``migrate_db`` fixture).

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from atomdb.nosql import NoSQLModelManager

from ..core.storage import ID_KEY
from ..driver.mongo import ManagerState, wire_manager

__all__ = ["OfflineCollection", "OfflineDatabase", "is_offline", "offline"]

#: What a test that needs the server is told.
NEEDS_DATABASE = (
    "no database is set: a step test restores references without one, and reads or "
    "writes nothing else; use the migrate_db fixture (atomdb_migrate.testing) for a "
    "test that does"
)


class OfflineCollection:
    """A collection of no database: it answers a lookup by ``_id`` alone.

    Parameters
    ----------
    name: str
        The collection's name (a model's ``__model__``).

    """

    def __init__(self, name: str) -> None:
        self.name = name

    async def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The ``_id`` asked for, as the whole document (None for any other filter).

        atom-db fetches a referenced plain model's document this way; it
        restores from it an object holding that ``_id``.

        """
        if isinstance(filter, dict) and filter.keys() == {ID_KEY}:
            return {ID_KEY: filter[ID_KEY]}
        return None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self.name}.{name}: {NEEDS_DATABASE}")


class OfflineDatabase:
    """A database standing in where none is set: its collections are `OfflineCollection`."""

    name = "offline"

    def __getitem__(self, name: str) -> OfflineCollection:
        return OfflineCollection(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return OfflineCollection(name)


def _database() -> Any:
    """The database atom-db's manager holds (None when none is set)."""
    manager: Any = NoSQLModelManager.instance()
    return manager.get_member("database").get_slot(manager)


def is_offline() -> bool:
    """Whether atom-db's manager holds the `OfflineDatabase` (inside `offline`)."""
    return isinstance(_database(), OfflineDatabase)


@contextmanager
def offline() -> Iterator[bool]:
    """In the block, an `OfflineDatabase` where no database is set.

    Yields whether it set one: with a database set (the ``migrate_db``
    fixture, an app's own) nothing changes, and references are looked up
    there. After the block the manager is as it was: no database, and its
    object caches as they were.

    """
    if _database() is not None:
        yield False
        return
    saved = ManagerState()
    wire_manager(OfflineDatabase())
    try:
        yield True
    finally:
        saved.restore()
