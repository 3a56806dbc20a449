"""The helpers and fixtures step authors use (atomdb_migrate.testing)."""

from __future__ import annotations

from typing import Any

import pytest
from atom.api import Int, Str, Value
from bson import Int64

from atomdb_migrate import (
    MigrationRegistry,
    StepFailedError,
    VersionedModel,
    register_step,
    step,
)
from atomdb_migrate.testing import assert_downgrades, assert_upgrades


class Member(VersionedModel):
    __model__ = "testing.Member"
    __version__ = 2

    first = Str()
    last = Str()
    age = Int()


@step(Member, 1, 2)
def split(doc: dict[str, Any]) -> None:
    doc["first"], _, doc["last"] = doc.pop("name").partition(" ")


@split.downgrade
def join(doc: dict[str, Any]) -> None:
    doc["name"] = f"{doc.pop('first')} {doc.pop('last')}"


async def test_a_step_in_three_lines() -> None:
    await assert_upgrades(
        Member,
        {"name": "Ada Lovelace", "age": 36, "__version__": "1"},
        {"first": "Ada", "last": "Lovelace", "age": 36},
    )


async def test_wrong_expectation_fails() -> None:
    with pytest.raises(AssertionError, match="!= expected"):
        await assert_upgrades(
            Member, {"name": "Ada Lovelace", "__version__": "1"}, {"first": "Ada", "last": "Byron"}
        )


@pytest.mark.parametrize("written", [True, 1.0, Int64(1)])
async def test_a_value_of_another_bson_type_is_not_what_was_expected(
    registry: MigrationRegistry, written: Any
) -> None:
    class Flag(VersionedModel):
        __model__ = "testing.Flag"
        __version__ = 1

        n = Value()

    register_step(Flag, 0, 1, lambda d: d.update(n=written))
    with pytest.raises(AssertionError, match="as BSON stores them"):
        await assert_upgrades(Flag, {"n": 0}, {"n": 1})
    await assert_upgrades(Flag, {"n": 0}, {"n": written})


async def test_a_result_that_does_not_restore_fails() -> None:
    with pytest.raises(AssertionError, match=r"testing.Member.age: TypeError"):
        await assert_upgrades(Member, {"name": "Ada Lovelace", "age": "old", "__version__": "1"})


async def test_a_failing_step_raises_its_error() -> None:
    with pytest.raises(StepFailedError, match="KeyError"):
        await assert_upgrades(Member, {"__version__": "1"})


async def test_downgrade() -> None:
    doc = {"first": "Ada", "last": "Lovelace", "__version__": "2"}
    await assert_downgrades(Member, doc, "1", {"name": "Ada Lovelace"})


async def test_migrate_db_fixture(migrate_db: Any) -> None:
    m = Member(first="Grace", last="Hopper")
    await m.save()
    stored = await migrate_db[Member.__model__].find_one({"_id": m._id})
    assert stored["__version__"] == "2"
    await migrate_db[Member.__model__].insert_one({"name": "Alan Turing", "__version__": "1"})
    alan = await Member.restore(await Member.objects.find_one({"name": "Alan Turing"}))
    assert alan.last == "Turing"


async def test_migrate_db_is_clean(migrate_db: Any) -> None:
    assert await migrate_db[Member.__model__].count_documents({}) == 0


def test_migration_registry_fixture(migration_registry: MigrationRegistry) -> None:
    step(Member, 2, 3)(lambda doc: None)
    assert len(migration_registry.graph(Member)) == 2


def test_registry_restored_after_the_fixture() -> None:
    assert len(MigrationRegistry.instance().graph(Member)) == 1


class Moved(VersionedModel):
    __model__ = "testing.Moved"
    __version__ = 1


def test_the_registry_fixture_forgets_the_renames_of_its_test() -> None:
    from atomdb.nosql import NoSQLModelSerializer

    from atomdb_migrate import VersionedModelSerializer, ops

    serializers = [NoSQLModelSerializer.instance(), VersionedModelSerializer.instance()]
    for serializer in serializers:
        assert "testing.OldMoved" not in serializer.registry  # built now
    with MigrationRegistry.instance().isolated():
        register_step(
            Moved, 0, 1, operations=[ops.rename_model("testing.OldMoved", Moved.__model__)]
        )
        assert all(s.registry["testing.OldMoved"] is Moved for s in serializers)
    assert all("testing.OldMoved" not in s.registry for s in serializers)
    assert MigrationRegistry.instance().former_names(Moved) == []
