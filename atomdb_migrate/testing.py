"""Helpers and a pytest plugin for testing steps.

A step is tested in three lines: feed a legacy document, say what the
upgraded one holds, and the helper also checks that the result restores into
the model without a restore error::

    from atomdb_migrate.testing import assert_upgrades

    async def test_split_name():
        await assert_upgrades(User, {"name": "Ada Lovelace", "__version__": "1"},
                              {"first": "Ada", "last": "Lovelace"}, to=2)

``to=2`` tests the step arriving at version 2 alone, so the test stays valid
when later releases add steps. References restore without a database, as
objects not loaded yet.

The plugin (installed with the package, active under pytest) adds two
fixtures:

- ``migrate_db``: a clean in-memory database (mongomock) wired to atom-db's
  model manager, for tests that save and restore;
- ``migration_registry``: the process's registry, with the steps a test
  registers removed after it.

Before each test it calls `reset`: the package's caches (translated
filters, counted stored versions, messages logged once) start empty, so no
test sees what an earlier one left.

"""

from __future__ import annotations

import re
import struct
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

from bson import Code, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp
from packaging.version import Version

from .core.bson_rules import bson_kind, same_value
from .core.caches import reset
from .core.documents import Document
from .core.storage import ID_KEY, IMPLICIT, VERSION_KEY
from .driver.mongo import (
    MEMORY_SCHEME,
    ManagerState,
    drop_memory_database,
    memory_client,
    wire_manager,
)
from .exceptions import ChainError
from .model.offline import offline
from .model.versioned import VersionedModel, restore_check
from .steps.registry import MigrationRegistry
from .steps.versions import VersionLike, apply_chain, parse_version, stored_version

#: Keys of a stored document that are bookkeeping, not fields.
BOOKKEEPING = IMPLICIT

__all__ = [
    "assert_downgrades",
    "assert_upgrades",
    "first_difference",
    "memory_database",
    "reset",
]


async def assert_upgrades(
    model: type[VersionedModel],
    legacy: Document,
    expected: Document | None = None,
    *,
    to: VersionLike | None = None,
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
    to: str or int, optional
        The version to upgrade to: a version the model's chain knows,
        between the document's version and the model's. Defaults to the
        model's version. Give the version a step arrives at to test that
        step alone (from the version it leaves), or a range of steps: the
        test stays valid when later releases add steps.
    restores: bool
        Also check that the result restores into the model without a single
        field failing. A result at an older version (`to`) is taken on
        through the later steps first, as a read would take it. A reference
        restores without a database, as an object not loaded yet (see
        `atomdb_migrate.model.offline`); with one set (``migrate_db``), it is
        looked up there.

    Returns
    -------
    upgraded: dict
        The upgraded document, for further checks.

    Raises
    ------
    InvalidVersionError
        If `to` is not a version.
    ChainError
        If `to` is past the model's version, not a version its chain knows,
        or behind the document's version.

    Values are compared as BSON stores them: the int ``1`` is not the double
    ``1.0``, nor ``True``, nor ``Int64(1)``.

    """
    __tracebackhide__ = True
    target = model.__parsed_version__ if to is None else upgrade_target(model, legacy, to)
    if target == model.__parsed_version__:
        upgraded = await model.upgrade_state(legacy)
    else:
        upgraded = await _upgrade_to(model, legacy, target)
    assert upgraded.get(VERSION_KEY) == str(target), (
        f"upgraded to version {upgraded.get(VERSION_KEY)!r}, not {str(target)!r}"
    )
    if expected is not None:
        _compare(upgraded, expected)
    if restores:
        await assert_restores(model, upgraded)
    return upgraded


def upgrade_target(model: type[VersionedModel], legacy: Document, to: VersionLike) -> Version:
    """The version `assert_upgrades` takes `legacy` to, checked.

    Raises
    ------
    InvalidVersionError
        If `to` (or the document's version) is not a version.
    ChainError
        If `to` is past the model's version, not a version the model's chain
        knows (0, a version a step leaves or arrives at, the model's), or
        behind the document's version.

    """
    name, head = model.__model__, model.__parsed_version__
    target = parse_version(to, model=name, what="to")
    stored = stored_version(legacy.get(VERSION_KEY), model=name, doc_id=legacy.get(ID_KEY))
    said = f"assert_upgrades(to={to!r})"
    versions = {"model": name, "from_version": str(stored), "to_version": str(target)}
    if target > head:
        raise ChainError(
            f"{said}: version {target} is past the model's version {head}; "
            "raise the model's __version__ first",
            **versions,
        )
    known = MigrationRegistry.instance().graph(model).known_versions(head)
    if target not in known:
        raise ChainError(
            f"{said}: the chain does not know version {target} "
            f"(it knows {', '.join(map(str, known))}); give the version a step arrives at",
            **versions,
        )
    if stored > target:
        raise ChainError(
            f"{said}: the document is at version {stored}, past version {target}; "
            "assert_downgrades takes a document back",
            **versions,
        )
    return target


async def _upgrade_to(model: type[VersionedModel], legacy: Document, target: Version) -> Document:
    """`legacy` taken through the model's steps up to `target` (below the model's
    version), as `upgrade_state` takes it to the model's: on a copy."""
    __tracebackhide__ = True
    graph = MigrationRegistry.instance().graph(model)
    plan = graph.plan(legacy.get(VERSION_KEY), target, head=model.__parsed_version__)
    if plan.kind == "current":
        return legacy
    if plan.kind != "migrate":
        plan.raise_for(legacy.get(ID_KEY))
    upgraded, _ = await apply_chain(plan.steps, legacy, track=False)
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
        _compare(result, expected, "downgraded")
    return result


async def assert_restores(model: type[VersionedModel], document: Document) -> VersionedModel:
    """Restore a document into a new object; fail if any field does not restore.

    With no database set, references restore as objects not loaded yet
    (`atomdb_migrate.model.offline`); with one, they are looked up there.

    """
    __tracebackhide__ = True
    obj = model.__new__(model)
    with offline(), restore_check() as problems:
        await obj.__restorestate__(document)
    assert not problems, "fields that did not restore: " + "; ".join(problems)
    return obj


def _compare(actual: Document, expected: Document, what: str = "upgraded") -> None:
    __tracebackhide__ = True
    shown = {k: v for k, v in actual.items() if k not in BOOKKEEPING or k in expected}
    # Key order is not compared at the top level, BSON types are: sort both the same way.
    shown = {k: shown[k] for k in sorted(shown)}
    wanted = {k: expected[k] for k in sorted(expected)}
    found = first_difference(shown, wanted, what=what)
    assert found is None, (
        f"{what} document {shown!r} != expected {expected!r} (as BSON stores them): {found}"
    )


#: MongoDB's names (as ``$type`` spells them) for the BSON types values are stored as.
_TYPE_NAMES = {
    ObjectId: "objectId",
    Decimal128: "decimal",
    Timestamp: "timestamp",
    Regex: "regex",
    re.Pattern: "regex",
    Code: "javascript",
    MinKey: "minKey",
    MaxKey: "maxKey",
    type(None): "null",
}


def bson_type_name(value: Any) -> str:
    """The BSON type a value is stored as, in ``$type``'s spelling (``int``, ``long``, ...)."""
    kind = bson_kind(value)
    if isinstance(kind, str):
        return kind
    if isinstance(kind, tuple):
        return f"binData (subtype {kind[1]})"
    for python_type, name in _TYPE_NAMES.items():
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def first_difference(
    actual: Any, expected: Any, path: str = "", *, what: str = "upgraded"
) -> str | None:
    """Where two values first differ as BSON stores them, said in words; None if they do not.

    The words name the path (``a.b.0``; the whole value when it is empty)
    and, where the values differ in type alone (``7`` and ``Int64(7)``), the
    two BSON types. Two values of one type that print alike (NaNs of
    another sign or payload, strings of other code points that look the
    same) are shown in a form that tells them apart. `what` names the
    document `actual` is ("upgraded", "downgraded").

    """
    where = f"at {path!r}" if path else "at the top level"
    kind_a, kind_b = bson_type_name(actual), bson_type_name(expected)
    if kind_a != kind_b:
        return (
            f"{where}: the {what} document holds {actual!r} (BSON {kind_a}), "
            f"the expected one {expected!r} (BSON {kind_b})"
        )
    if kind_a == "object":
        keys_a, keys_b = list(actual), list(expected)
        missing = [k for k in keys_b if k not in actual]
        extra = [k for k in keys_a if k not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"not expected {', '.join(map(repr, extra))}")
            return f"{where}: fields {'; '.join(parts)}"
        for key in keys_b:
            found = first_difference(actual[key], expected[key], _join(path, str(key)), what=what)
            if found is not None:
                return found
        if keys_a != keys_b:
            return (
                f"{where}: the same fields in another order ({keys_a!r} against {keys_b!r})"
                f"{_ORDER_MATTERS if path else ''}"
            )
        return None
    if kind_a == "array":
        for index, (a, b) in enumerate(zip(actual, expected, strict=False)):
            found = first_difference(a, b, _join(path, str(index)), what=what)
            if found is not None:
                return found
        if len(actual) != len(expected):
            return f"{where}: {len(actual)} items, {len(expected)} expected"
        return None
    if same_value(actual, expected) or _same_binary(actual, expected):
        return None
    shown_a, shown_b = _told_apart(actual, expected)
    return f"{where}: the {what} document holds {shown_a}, the expected one {shown_b}"


#: Why the fields' order of an embedded document counts (`assert_upgrades` does
#: not compare the top level's order).
_ORDER_MATTERS = (
    ": an embedded document's fields are compared in order, as the server compares "
    "them (a query {'address': {...}} matches only that order); write the expected "
    "one in the order the step leaves them (a field a step adds goes last)"
)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _same_binary(a: Any, b: Any) -> bool:
    """Whether two binary values of one subtype hold the same bytes.

    ``b"x"`` and ``Binary(b"x", 0)`` are one BSON value (pymongo reads
    subtype 0 back as bytes), though Python says they differ.

    """
    kind = bson_kind(a)
    return isinstance(kind, tuple) and kind == bson_kind(b) and bytes(a) == bytes(b)


def _told_apart(a: Any, b: Any) -> tuple[str, str]:
    """Texts for two values of one BSON type that differ: their reprs, unless they look alike."""
    shown_a, shown_b = repr(a), repr(b)
    if unicodedata.normalize("NFKC", shown_a) != unicodedata.normalize("NFKC", shown_b):
        return shown_a, shown_b
    if isinstance(a, float) and isinstance(b, float):
        # NaNs of another sign or payload: the bits BSON stores.
        return (f"{shown_a} (bits {_bits(a)})", f"{shown_b} (bits {_bits(b)})")
    if isinstance(a, str) and isinstance(b, str):
        # Strings of other code points that print alike: escape all but ASCII.
        return ascii(a), ascii(b)
    return f"{shown_a} ({_qualname(a)})", f"{shown_b} ({_qualname(b)})"


def _qualname(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _bits(value: float) -> str:
    return "0x" + struct.pack(">d", value).hex()


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

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item: pytest.Item) -> None:
        """Before each test (and its fixtures): the package's caches start empty (`reset`)."""
        reset()

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
