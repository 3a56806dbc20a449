"""The helpers and fixtures step authors use (atomdb_migrate.testing)."""

from __future__ import annotations

import os
import re
import struct
import unicodedata
from typing import Any

import pytest
from atom.api import Int, Str, Value
from bson import Binary, Decimal128, Int64, ObjectId
from hypothesis import event, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    MigrationRegistry,
    StepFailedError,
    VersionedModel,
    register_step,
    step,
)
from atomdb_migrate.testing import (
    _compare,
    assert_downgrades,
    assert_upgrades,
    bson_type_name,
    first_difference,
)


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


# ----------------------------------------------------------------------
# A failure on type alone names the path and the two BSON types
# ----------------------------------------------------------------------
#: Pairs of values Python calls equal that BSON stores as different types.
_TWINS = [
    (7, Int64(7)),
    (1, 1.0),
    (1, True),
    (0, False),
    (Int64(1), 1.0),
    (Int64(0), False),
    (2**40, float(2**40)),
    (Decimal128("1"), 1),
    (ObjectId("0" * 24), "0" * 24),
]

_KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
_TWIN_PAIRS = st.sampled_from(_TWINS)


@st.composite
def _nested(
    draw: st.DrawFn, pairs: st.SearchStrategy[tuple[Any, Any]] = _TWIN_PAIRS
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Two documents alike but for one value (a pair from `pairs`), and the path to it."""
    a, b = draw(pairs)
    if draw(st.booleans()):
        a, b = b, a
    path: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            index = draw(st.integers(0, 2))
            filler = draw(st.lists(st.integers(-5, 5), min_size=index, max_size=index))
            a, b = [*filler, a], [*filler, b]
            path.append(str(index))
        else:
            key = draw(_KEYS)
            a, b = {key: a}, {key: b}
            path.append(key)
    top = draw(_KEYS)
    path.append(top)
    return {top: a}, {top: b}, ".".join(reversed(path))


@settings(max_examples=int(os.environ.get("TYPE_MESSAGE_EXAMPLES", "200")), deadline=None)
@given(_nested())
def test_a_difference_in_type_alone_names_the_path_and_both_bson_types(
    case: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    actual, expected, path = case
    found = first_difference(actual, expected)
    assert found is not None
    assert f"at {path!r}" in found
    # The innermost values that differ: both type names are said, and differ.
    names = re.findall(r"\(BSON ([^)]+)\)", found)
    assert len(names) == 2 and names[0] != names[1], found


async def test_assert_upgrades_names_the_path_and_types(registry: MigrationRegistry) -> None:
    class Count(VersionedModel):
        __model__ = "testing.Count"
        __version__ = 1

        n = Value()

    register_step(Count, 0, 1, lambda d: d.update(n={"inner": [7]}))
    with pytest.raises(AssertionError) as raised:
        await assert_upgrades(Count, {}, {"n": {"inner": [Int64(7)]}})
    assert "at 'n.inner.0'" in str(raised.value)
    assert "(BSON int)" in str(raised.value) and "(BSON long)" in str(raised.value)


@pytest.mark.parametrize(
    ("actual", "expected", "words"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, "missing 'b'"),
        ({"a": 1, "b": 2}, {"a": 1}, "not expected 'b'"),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 2, "x": 1}}, "another order"),
        ({"a": [1, 2]}, {"a": [1]}, "2 items, 1 expected"),
        ({"a": "x"}, {"a": "y"}, "holds 'x', the expected one 'y'"),
        ({"a": 0.0}, {"a": -0.0}, "at 'a'"),
    ],
)
def test_other_differences_are_said(actual: Any, expected: Any, words: str) -> None:
    found = first_difference(actual, expected)
    assert found is not None and words in found


@given(
    st.recursive(
        st.integers() | st.text() | st.none(), lambda c: st.lists(c) | st.dictionaries(_KEYS, c)
    )
)
def test_a_value_is_never_different_from_itself(value: Any) -> None:
    assert first_difference({"v": value}, {"v": value}) is None


# ----------------------------------------------------------------------
# After a hostile pass
# ----------------------------------------------------------------------
_NAN = struct.unpack("<d", bytes.fromhex("000000000000f87f"))[0]
_OTHER_NAN = struct.unpack("<d", bytes.fromhex("010000000000f87f"))[0]


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (_NAN, -_NAN),  # both print as nan
        (_NAN, _OTHER_NAN),  # another payload
        ("\u00e9", "e\u0301"),  # é, composed and not: printed alike
        ("a\u200bb", "ab"),  # a zero-width space
    ],
)
def test_values_of_one_type_that_print_alike_are_told_apart(actual: Any, expected: Any) -> None:
    found = first_difference({"v": [actual]}, {"v": [expected]})
    assert found is not None and "at 'v.0'" in found
    holds, wanted = found.split("holds ", 1)[1].split(", the expected one ", 1)
    assert holds != wanted, found
    assert unicodedata.normalize("NFC", holds) != unicodedata.normalize("NFC", wanted), found


def test_binary_of_subtype_0_is_bytes_as_bson_stores_it() -> None:
    # pymongo reads subtype 0 back as bytes: the same BSON either way.
    assert first_difference({"b": Binary(b"x", 0)}, {"b": b"x"}) is None
    found = first_difference({"b": Binary(b"x", 4)}, {"b": b"x"})
    assert found is not None and "binData (subtype 4)" in found and "binData (subtype 0)" in found


async def test_assert_downgrades_speaks_of_the_downgraded_document(
    registry: MigrationRegistry,
) -> None:
    class Back(VersionedModel):
        __model__ = "testing.Back"
        __version__ = 2

        n = Value()

    register_step(Back, 1, 2, lambda d: None, downgrade=lambda d: d.update(n=1))
    with pytest.raises(AssertionError) as raised:
        await assert_downgrades(Back, {"n": 2, "__version__": "2"}, "1", {"n": True})
    message = str(raised.value)
    assert "downgraded document" in message and "upgraded" not in message, message
    assert "(BSON int)" in message and "(BSON bool)" in message, message


@st.composite
def _python_equal(draw: st.DrawFn) -> tuple[Any, Any]:
    """Two values Python calls equal, drawn from one number written as int, Int64, float, bool."""
    n = draw(st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**31) - 2, 2**31 + 1) | st.just(1))
    forms: list[Any] = [n, Int64(n)]
    if float(n) == n:
        forms.append(float(n))
    if n in (0, 1):
        forms.append(bool(n))
    return draw(st.sampled_from(forms)), draw(st.sampled_from(forms))


#: Values of one BSON type that differ, and print alike or compare equal in Python.
_LOOK_ALIKES = [(0.0, -0.0), (_NAN, -_NAN), (_NAN, _OTHER_NAN), ("\u00e9", "e\u0301")]

#: Generated pairs; those BSON stores as one type (2**40 and Int64(2**40)) are the same value.
_EXAMPLES = int(os.environ.get("TYPE_MESSAGE_EXAMPLES", "200"))


@settings(max_examples=_EXAMPLES, deadline=None)
@given(_nested(_python_equal()))
def test_generated_python_equal_values_are_told_apart_by_path_and_bson_types(
    case: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    actual, expected, path = case
    assert actual == expected  # as Python sees them
    a, b = _leaf(actual, path), _leaf(expected, path)
    found = first_difference(actual, expected)
    if bson_type_name(a) == bson_type_name(b):
        event("one BSON type: the same value")
        assert found is None, found
        return
    event(f"{bson_type_name(a)} against {bson_type_name(b)}")
    assert found is not None and f"at {path!r}" in found, found
    assert re.findall(r"\(BSON ([^)]+)\)", found) == [bson_type_name(a), bson_type_name(b)], found
    # assert_upgrades says the same, after its own words.
    with pytest.raises(AssertionError) as raised:
        _compare(actual, expected)
    assert found in str(raised.value)


@settings(max_examples=_EXAMPLES, deadline=None)
@given(
    _nested(
        st.sampled_from([(0.0, -0.0), (_NAN, -_NAN), (_NAN, _OTHER_NAN), ("\u00e9", "e\u0301")])
    )
)
def test_generated_values_of_one_type_that_differ_are_shown_apart(
    case: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    actual, expected, path = case
    found = first_difference(actual, expected)
    assert found is not None and f"at {path!r}" in found, found
    holds, wanted = found.split("holds ", 1)[1].split(", the expected one ", 1)
    assert unicodedata.normalize("NFKC", holds) != unicodedata.normalize("NFKC", wanted), found


def _leaf(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value
