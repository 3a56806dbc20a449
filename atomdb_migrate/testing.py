"""Helpers and a pytest plugin for testing steps.

A step is tested in three lines: feed a legacy document, say what the
upgraded one holds, and the helper also checks that the result restores into
the model without a restore error::

    from atomdb_migrate.testing import assert_upgrades

    async def test_split_name():
        await assert_upgrades(User, {"name": "Ada Lovelace", "__version__": "1"},
                              {"first": "Ada", "last": "Lovelace"})

The plugin (installed with the package, active under pytest) adds two
fixtures:

- ``migrate_db``: a clean in-memory database (mongomock) wired to atom-db's
  model manager, for tests that save and restore;
- ``migration_registry``: the process's registry, with the steps a test
  registers removed after it.

"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from .config import MEMORY_SCHEME
from .documents import Document
from .model import VersionedModel, restore_check
from .mongo import (
    ManagerState,
    drop_memory_database,
    memory_client,
    wire_manager,
)
from .registry import MigrationRegistry
from .versions import VERSION_KEY, apply_chain, parse_version
from .writes import same_value

#: Keys of a stored document that are bookkeeping, not fields.
BOOKKEEPING = ("_id", "__model__", "__ref__", VERSION_KEY)

__all__ = ["assert_downgrades", "assert_upgrades", "memory_database"]


async def assert_upgrades(
    model: type[VersionedModel],
    legacy: Document,
    expected: Document | None = None,
    *,
    restores: bool = True,
) -> Document:
    """Upgrade a legacy document and check the result.

    Parameters
    ----------
    model: type
        The versioned model.
    legacy: dict
        The document as older code stored it (``__version__`` included, or
        none for version 0). It is not changed.
    expected: dict, optional
        What the upgraded document must hold: every field, apart from the
        bookkeeping keys (``_id``, ``__model__``, ``__ref__``,
        ``__version__``) unless you list them.
    restores: bool
        Also check that the result restores into the model without a single
        field failing.

    Returns
    -------
    upgraded: dict
        The upgraded document, for further checks.

    Values are compared as BSON stores them: the int ``1`` is not the double
    ``1.0``, nor ``True``, nor ``Int64(1)``.

    """
    __tracebackhide__ = True
    upgraded = await model.upgrade_state(legacy)
    assert upgraded.get(VERSION_KEY) == model.__version__, (
        f"upgraded to version {upgraded.get(VERSION_KEY)!r}, not {model.__version__!r}"
    )
    if expected is not None:
        _compare(upgraded, expected)
    if restores:
        await assert_restores(model, upgraded)
    return upgraded


async def assert_downgrades(
    model: type[VersionedModel], document: Document, to: str, expected: Document | None = None
) -> Document:
    """Take a document back to version `to` through the downgrade functions and check it."""
    __tracebackhide__ = True
    graph = MigrationRegistry.instance().graph(model)
    steps = graph.plan_downgrade(document.get(VERSION_KEY, model.__version__), to)
    result, _ = await apply_chain(steps, document, downgrade=True)
    assert parse_version(result[VERSION_KEY]) == parse_version(to)
    if expected is not None:
        _compare(result, expected)
    return result


async def assert_restores(model: type[VersionedModel], document: Document) -> VersionedModel:
    """Restore a document into a new object; fail if any field does not restore."""
    __tracebackhide__ = True
    obj = model.__new__(model)
    with restore_check() as problems:
        await obj.__restorestate__(document)
    assert not problems, "fields that did not restore: " + "; ".join(problems)
    return obj


def _compare(actual: Document, expected: Document) -> None:
    __tracebackhide__ = True
    shown = {k: v for k, v in actual.items() if k not in BOOKKEEPING or k in expected}
    # Key order is not compared, BSON types are: sort both the same way.
    same = shown.keys() == expected.keys() and all(
        same_value(shown[k], expected[k]) for k in expected
    )
    assert same, f"upgraded document {shown!r} != expected {expected!r} (as BSON stores them)"


def memory_database(name: str | None = None) -> Any:
    """A new in-memory database, wired to atom-db's model manager (with a new cache).

    The manager stays pointed at it; the ``migrate_db`` fixture puts the
    manager back after the test.

    """
    database = memory_client(f"{MEMORY_SCHEME}testing")[name or f"test_{uuid.uuid4().hex[:12]}"]
    wire_manager(database)
    return database


# ----------------------------------------------------------------------
# The pytest plugin
# ----------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - only used under pytest
    pass
else:

    @pytest.fixture
    def migrate_db() -> Iterator[Any]:
        """A clean in-memory database wired to the model manager, for the test only.

        After the test the database is dropped and the manager is put back
        as it was: its database, proxies and object cache.

        """
        saved = ManagerState()
        database = memory_database()
        try:
            yield database
        finally:
            saved.restore()
            drop_memory_database(database)

    @pytest.fixture
    def migration_registry() -> Iterator[MigrationRegistry]:
        """The registry; steps registered by the test are removed after it."""
        with MigrationRegistry.instance().isolated() as registry:
            yield registry
