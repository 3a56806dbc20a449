"""Saves through the steps, against values the members change at restore.

atom-db's members do not always hold what the document stored: a ``Float``
makes an int a float, a field the document lacks takes the member's
default, and a value a member refuses is logged and skipped (the member
keeps its default). None of these is a change the code made: a save by
code one version behind must write only what the object changed since it
was restored, and leave the rest of the newer document as stored.

``ROLLING_HOSTILE_EXAMPLES`` sets the number of examples of the property
test (default 40).

"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from atom.api import Bool, Dict, Float, Int, List, Str, Value
from bson import Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.core.bson_rules import same_value
from atomdb_migrate.exceptions import ConflictError, NewerDocumentError, RestoreFailedError

NAME = "rolling.Hostile"


class Old(VersionedModel):
    """The code one release behind, with members that coerce or default."""

    __model__ = NAME
    __version__ = 1
    __on_newer__ = "downgrade"

    name = Str()
    score = Float()
    count = Int()
    active = Bool()
    meta = Dict()
    tags = List()
    extra = Value()


def chain(removed: str | None = None, default: Any = 0) -> None:
    """``name`` renamed ``full_name``, then ``email`` added (or `removed` removed)."""
    register_step(NAME, 1, 2, operations=[ops.rename_field("name", "full_name")])
    last = ops.add_field("email", "") if removed is None else ops.remove_field(removed, default)
    register_step(NAME, 2, 3, operations=[last])


async def stored(_id: Any) -> dict[str, Any]:
    doc = await Old.objects.find_one({"_id": _id})
    assert doc is not None
    return dict(doc)


async def read_newer(**fields: Any) -> tuple[Any, Any]:
    """A document at version 3 holding `fields`, and the old code's object read from it."""
    doc = {"__model__": NAME, "__version__": "3", "full_name": "Ada", **fields}
    _id = (await Old.objects.insert_one(doc)).inserted_id
    Old.objects.cache.pop(_id, None)
    return _id, await Old.restore(await stored(_id), force=True)


async def test_a_value_a_member_converted_at_restore_is_not_a_change(
    db: Any, registry: MigrationRegistry
) -> None:
    chain(removed="score", default=0)  # the downgrade gives the int 0; the Float holds 0.0
    _id, person = await read_newer()
    assert person.score == 0.0
    person.name = "Ada L."
    await person.save()  # refused before: 'score' changed, through ops.remove_field
    doc = await stored(_id)
    assert doc["full_name"] == "Ada L." and "score" not in doc


async def test_a_concurrent_change_to_a_converted_field_survives(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(score=1, email="e")
    await Old.objects.update_one({"_id": _id}, {"$set": {"score": 2.5}})
    person.name = "Ada L."
    await person.save()  # a ConflictError on 'score' before, which the code never changed
    doc = await stored(_id)
    assert (doc["full_name"], doc["score"]) == ("Ada L.", 2.5)
    assert type(doc["score"]) is float


async def test_a_value_atom_db_skipped_at_restore_is_not_written_over(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(full_name=5, count=1, email="e")
    assert person.name == "", "atom-db logged and skipped the value the member refused"
    person.count = 2
    await person.save()
    doc = await stored(_id)
    assert (doc["full_name"], doc["count"]) == (5, 2), "the stored value was lost before"


async def test_fields_the_newer_document_lacks_are_not_filled_with_defaults(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(email="e")
    person.count = 3
    await person.save()
    doc = await stored(_id)
    assert doc["count"] == 3
    assert not {"score", "active", "meta", "tags", "extra"} & set(doc), sorted(doc)


async def test_an_object_read_through_a_projection_writes_its_change_alone(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    doc = {"__model__": NAME, "__version__": "3", "full_name": "Ada", "count": 36, "email": "e"}
    _id = (await Old.objects.insert_one(doc)).inserted_id
    Old.objects.cache.pop(_id, None)
    projection = {"full_name": 1, "__version__": 1, "__model__": 1}
    person = await Old.restore(await Old.objects.find_one({"_id": _id}, projection))
    assert person.count == 0, "not read: the member's default"
    person.name = "Ada L."
    await person.save()  # a ConflictError on 'count' before, which it never read
    assert await stored(_id) == {**doc, "_id": _id, "full_name": "Ada L."}


async def test_an_object_whose_restore_failed_does_not_save_through_the_steps(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()

    class Strict(Old):
        __model__ = NAME
        __on_error__ = "raise"

    doc = {"__model__": NAME, "__version__": "3", "full_name": 5, "count": 1, "email": "e"}
    _id = (await Old.objects.insert_one(doc)).inserted_id
    person = Strict.__new__(Strict)
    with pytest.raises(RestoreFailedError):
        await person.__restorestate__(await stored(_id))
    person.count = 2
    with pytest.raises(NewerDocumentError):
        await person.save()  # wrote '' over full_name before
    assert await stored(_id) == {**doc, "_id": _id}


async def test_a_save_after_the_document_was_deleted_says_so(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(count=1, email="e")
    await Old.objects.delete_one({"_id": _id})
    person.count = 2
    with pytest.raises(ConflictError) as caught:
        await person.save()
    assert caught.value.fields == ["_id"]
    assert "the document was deleted since it was read" in str(caught.value)
    assert await Old.objects.find_one({"_id": _id}) is None, "not inserted again"


async def test_a_change_of_bson_type_alone_is_written_as_that_type(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(extra=1, email="e")
    for value in (1.0, True, 1, Decimal128("1"), Int64(1)):
        person.extra = value
        await person.save()
        assert type((await stored(_id))["extra"]) is type(value), value


async def test_a_nested_change_beside_a_converted_sibling_writes_the_change(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(meta={"a": 1, "b": {"c": True}}, email="e")
    person.meta["d"] = 2
    await person.save()
    assert (await stored(_id))["meta"] == {"a": 1, "b": {"c": True}, "d": 2}
    person.meta = {}
    await person.save()
    assert (await stored(_id))["meta"] == {}


# ---------------------------------------------------------------------------
# Property: an old save writes the field it changed and nothing else
# ---------------------------------------------------------------------------
#: Values stored in the fields the old code does not change: of every kind a
#: member may convert, refuse, or take as it is.
STORED = st.one_of(
    st.just("missing"),
    st.sampled_from([None, 0, 1, -1, 0.0, 1.0, 2.5, True, False, "", "s", [], [1, 1.0], {}]),
    st.integers(-(2**40), 2**40).map(Int64),
    st.sampled_from([Decimal128("1"), {"a": 1}, {"a": {"b": 1.0}}]),
)

SETTINGS = settings(
    max_examples=int(os.environ.get("ROLLING_HOSTILE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(
    values=st.fixed_dictionaries(
        {k: STORED for k in ("score", "count", "active", "meta", "tags", "extra")}
    ),
    name=st.sampled_from(["Ada L.", "", "x"]),
)
async def test_an_old_save_writes_only_what_the_object_changed(
    db: Any, values: dict[str, Any], name: str
) -> None:
    with MigrationRegistry.instance().isolated():
        chain()
        fields = {k: v for k, v in values.items() if not (isinstance(v, str) and v == "missing")}
        _id, person = await read_newer(email="e", **fields)
        before = await stored(_id)
        person.name = name
        await person.save()
        after = await stored(_id)
        expected = {**before, "full_name": name}
        assert same_value(after, expected), (before, after)


def test_the_property_s_values_hold_what_members_convert() -> None:
    """The stored values include one the Float converts and one the Int refuses."""
    person = Old()
    person.score = 1  # type: ignore[assignment]
    assert type(person.score) is float
    with pytest.raises(TypeError):
        person.count = 1.5  # type: ignore[assignment]


# ---------------------------------------------------------------------------
# Two saves of one object at once
# ---------------------------------------------------------------------------
async def test_two_saves_of_one_object_at_once_both_land(
    db: Any, registry: MigrationRegistry
) -> None:
    """atom-db's cache hands the same object to every reader of the document: two
    tasks may save it at once, each after its own change."""
    chain()
    _id, person = await read_newer(count=1, email="e")

    async def edit(field: str, value: Any) -> None:
        setattr(person, field, value)
        await person.save()

    await asyncio.gather(edit("count", 2), edit("name", "Ada L."))
    doc = await stored(_id)
    assert (doc["count"], doc["full_name"]) == (2, "Ada L.")
    person.count = 3
    await asyncio.gather(person.save(), person.save())
    assert (await stored(_id))["count"] == 3


async def test_another_writer_s_same_change_is_still_a_conflict(
    db: Any, registry: MigrationRegistry
) -> None:
    """Two writers that each took a counter from 1 to 2 made two changes: the second
    is refused, as any concurrent change to the field it changes."""
    chain()
    _id, person = await read_newer(count=1, email="e")
    await Old.objects.update_one({"_id": _id}, {"$set": {"count": 2}})
    person.count = 2
    with pytest.raises(ConflictError) as caught:
        await person.save()
    assert caught.value.fields == ["count"]


@SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["name", "count", "tags"]), st.integers(0, 3)),
        min_size=2,
        max_size=4,
    )
)
async def test_saves_of_one_object_at_once_all_land(db: Any, edits: list[tuple[str, int]]) -> None:
    """Tasks that each change the one cached object and save it, at once, with no
    other writer: none conflicts, and the stored document ends as the object."""
    with MigrationRegistry.instance().isolated():
        chain()
        _id, person = await read_newer(count=0, tags=[], email="e")
        values = {"name": str, "count": int, "tags": lambda n: [n]}

        async def edit(field: str, n: int) -> None:
            setattr(person, field, values[field](n))
            await person.save()

        await asyncio.gather(*(edit(field, n) for field, n in edits))
        doc = await stored(_id)
        expected = (person.name, person.count, person.tags, "e")
        assert (doc["full_name"], doc["count"], doc["tags"], doc["email"]) == expected


# ---------------------------------------------------------------------------
# New objects at the newest version
# ---------------------------------------------------------------------------
class OldNewest(VersionedModel):
    """The old code, inserting new objects at the newest version its steps know."""

    __model__ = NAME
    __version__ = 1
    __on_newer__ = "downgrade"
    __insert_at__ = "newest"

    name = Str()
    count = Int()


async def test_a_new_object_given_its_own_id_is_inserted_at_the_newest_version(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id = ObjectId()
    person = OldNewest(_id=_id, name="Ada", count=1)
    await person.save()  # inserted at version 1 before: `_id` set read as "not new"
    doc = await stored(_id)
    assert (doc["__version__"], doc["full_name"], doc["email"]) == ("3", "Ada", "")
    person.count = 2
    await person.save()
    doc = await stored(_id)
    assert (doc["__version__"], doc["count"], doc["full_name"]) == ("3", 2, "Ada")


async def test_an_object_given_the_id_of_a_stored_document_replaces_it_as_before(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    doc = {"__model__": NAME, "__version__": "1", "name": "Ada", "count": 1}
    _id = (await Old.objects.insert_one(doc)).inserted_id
    Old.objects.cache.pop(_id, None)
    person = OldNewest(_id=_id, name="Bea", count=2)
    await person.save()
    assert (await stored(_id))["name"] == "Bea"
    await Old.objects.replace_one({"_id": _id}, {**doc, "__version__": "3", "full_name": "C"})
    other = OldNewest(_id=_id, name="Dee", count=3)
    with pytest.raises(NewerDocumentError):
        await other.save()  # never read: refused as ever


async def test_two_saves_of_one_new_object_at_once_insert_one_document(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    for model in (Old, OldNewest):
        person = model(name="Ada", count=1)
        await asyncio.gather(person.save(), person.save())
        assert (
            await Old.objects.count_documents({"name": "Ada"})
            + await Old.objects.count_documents({"full_name": "Ada"})
            == 1
        ), model
        await Old.objects.delete_many({})


def test_saves_of_one_object_at_once_in_two_event_loops_one_after_another(
    secantus_url: str,
) -> None:
    """An object outlives its event loop (a module-level object, a loop per test):
    its saves at once in the next loop wait for each other there too."""
    from pymongo import AsyncMongoClient

    from atomdb_migrate.driver.mongo import ManagerState, wire_manager

    name = f"atomdb_migrate_test_loops_{uuid.uuid4().hex[:12]}"
    person = Old(name="Ada", count=0)

    async def saves() -> int:
        client: Any = AsyncMongoClient(secantus_url)
        wire_manager(client[name])
        try:
            for _ in range(2):
                person.count += 1
                await asyncio.gather(person.save(), person.save())
            doc = await Old.objects.find_one({"_id": person._id})
            return int(doc["count"])
        finally:
            await client.close()

    saved = ManagerState()
    try:
        with MigrationRegistry.instance().isolated():
            chain()
            assert asyncio.run(saves()) == 2
            assert asyncio.run(saves()) == 4  # RuntimeError before: a lock of the first loop
    finally:
        saved.restore()
        MongoClient(secantus_url).drop_database(name)


# ---------------------------------------------------------------------------
# Beside a change, inside the same field
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after"),
    [(1, 1.0), (1, Int64(1)), (0.0, -0.0), ([1], [1.0]), ({"k": 1}, {"k": 1.0})],
    ids=["int-double", "int-long", "zero-sign", "array", "document"],
)
async def test_another_writer_s_change_beside_the_save_s_in_one_field_survives(
    db: Any, registry: MigrationRegistry, before: Any, after: Any
) -> None:
    """The filter matches the numbers inside a field by value: the change beside is
    not seen, and the save wrote all of the field as it read it."""
    chain()
    _id, person = await read_newer(meta={"x": before, "y": 0}, email="e")
    await Old.objects.update_one({"_id": _id}, {"$set": {"meta.x": after}})
    person.meta["y"] = 1
    await person.save()
    meta = (await stored(_id))["meta"]
    assert same_value(meta, {"x": after, "y": 1}), meta


async def test_changes_at_paths_that_cannot_be_set_write_the_whole_field(
    db: Any, registry: MigrationRegistry
) -> None:
    chain()
    _id, person = await read_newer(meta={"a.b": 1, "$c": 2, "d": None}, email="e")
    person.meta = {"a.b": 2, "$c": 3, "d": {"e": 1}}
    await person.save()
    assert (await stored(_id))["meta"] == {"a.b": 2, "$c": 3, "d": {"e": 1}}


#: Values inside an embedded document: some the filter matches by value only.
INSIDE = st.sampled_from([0, 1, 1.0, -0.0, 0.0, True, "1", None, [1], [1.0], {"k": 1}])


@SETTINGS
@given(
    read=st.fixed_dictionaries({k: INSIDE for k in "xyz"}),
    theirs=st.dictionaries(st.sampled_from("xyz"), INSIDE, max_size=2),
    mine=st.sampled_from("xyz"),
    value=INSIDE,
)
async def test_changes_beside_the_save_s_in_one_field_survive(
    db: Any, read: dict[str, Any], theirs: dict[str, Any], mine: str, value: Any
) -> None:
    """Another writer changes keys of ``meta``, the old code another key of it: the
    stored ``meta`` holds both, as BSON stores them."""
    theirs.pop(mine, None)
    with MigrationRegistry.instance().isolated():
        chain()
        _id, person = await read_newer(meta=dict(read), email="e")
        if theirs:
            sets = {f"meta.{k}": v for k, v in theirs.items()}
            await Old.objects.update_one({"_id": _id}, {"$set": sets})
        person.meta = {**person.meta, mine: value}
        await person.save()
        meta = (await stored(_id))["meta"]
        assert same_value(meta, {**read, **theirs, mine: value}), (read, theirs, meta)


@pytest.mark.parametrize("model", [Old, OldNewest], ids=["own", "newest"])
async def test_a_new_object_given_its_own_id_breaking_a_unique_index_says_so(
    db: Any, registry: MigrationRegistry, model: type[VersionedModel]
) -> None:
    """Not a document stored at another version: the duplicate key error, as atom-db
    raises it (a ConflictError before, after five writes)."""
    chain()
    await Old.objects.create_index("count", unique=True)
    await Old.objects.insert_one({"__model__": NAME, "__version__": "1", "name": "A", "count": 1})
    person = model(_id=ObjectId(), name="B", count=1)
    with pytest.raises(DuplicateKeyError):
        await person.save()
    assert await Old.objects.count_documents({}) == 1
