"""Step tests that stay valid across releases (atomdb_migrate.testing).

- ``assert_upgrades(..., to=V)`` tests one step, or a range of them, and
  keeps passing when later steps arrive; a `to` the chain does not know, past
  the model's version or behind the document's, is refused with words.
- A model holding references restores in ``assert_upgrades`` without a
  database: each reference restores as an object not loaded yet, naming the
  referenced ``_id``, as atom-db restores a ``Typed(Model)`` reference.

"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
from atom.api import Instance, Int, List, Str, Typed
from atomdb.nosql import NoSQLModel, NoSQLModelManager
from bson import ObjectId
from hypothesis import event, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    ChainError,
    InvalidVersionError,
    MigrationRegistry,
    VersionedModel,
    register_step,
)
from atomdb_migrate.testing import assert_restores, assert_upgrades, memory_database

#: How many generated chains and targets the property tests try.
RANGE_EXAMPLES = int(os.environ.get("STEP_RANGE_EXAMPLES", "150"))
#: How many generated documents with references the differential test restores.
REFERENCE_EXAMPLES = int(os.environ.get("OFFLINE_REFERENCE_EXAMPLES", "60"))


# ----------------------------------------------------------------------
# to=: one step, or a range
# ----------------------------------------------------------------------
class Person(VersionedModel):
    """At version 3: name split at 2, email added at 3."""

    __model__ = "steptests.Person"
    __version__ = 3

    first = Str()
    last = Str()
    email = Str()


def split(doc: dict[str, Any]) -> None:
    doc["first"], _, doc["last"] = doc.pop("name").partition(" ")


def add_email(doc: dict[str, Any]) -> None:
    doc.setdefault("email", "")


@pytest.fixture
def person_steps(registry: MigrationRegistry) -> MigrationRegistry:
    register_step(Person, 1, 2, split)
    register_step(Person, 2, 3, add_email)
    return registry


async def test_one_step(person_steps: MigrationRegistry) -> None:
    upgraded = await assert_upgrades(
        Person,
        {"name": "Ada Lovelace", "__version__": "1"},
        {"first": "Ada", "last": "Lovelace"},
        to="2",
    )
    assert upgraded["__version__"] == "2"


async def test_a_range_of_steps(person_steps: MigrationRegistry) -> None:
    await assert_upgrades(
        Person,
        {"name": "Ada Lovelace", "__version__": "1"},
        {"first": "Ada", "last": "Lovelace", "email": ""},
        to=3,
    )
    await assert_upgrades(
        Person,
        {"first": "A", "last": "L", "__version__": "2"},
        {"first": "A", "last": "L", "email": ""},
        to="3.0",
    )


async def test_a_step_test_stays_valid_when_a_release_adds_a_step(
    registry: MigrationRegistry,
) -> None:
    """The test of step 1 -> 2, written when the model was at 2, passes at 3 too."""

    async def step_test(model: type[VersionedModel]) -> None:
        await assert_upgrades(
            model,
            {"name": "Ada Lovelace", "__version__": "1"},
            {"first": "Ada", "last": "Lovelace"},
            to="2",
        )

    # Release 2: the model was at version 2 (a model class as that release had it).
    class PersonAt2(VersionedModel):
        __model__ = "steptests.PersonAt2"
        __version__ = 2

        first = Str()
        last = Str()

    register_step(PersonAt2, 1, 2, split)
    await step_test(PersonAt2)
    # Release 3 adds a step: the same test, unchanged.
    register_step(Person, 1, 2, split)
    register_step(Person, 2, 3, add_email)
    await step_test(Person)
    # Without to=, the old expectation no longer holds at version 3.
    with pytest.raises(AssertionError, match=r"missing 'email'|not expected 'email'"):
        await assert_upgrades(
            Person,
            {"name": "Ada Lovelace", "__version__": "1"},
            {"first": "Ada", "last": "Lovelace"},
        )


async def test_the_result_at_an_older_version_still_restores_through_the_later_steps(
    person_steps: MigrationRegistry,
) -> None:
    # The version-2 result goes on through 2 -> 3 and restores into Person.
    await assert_upgrades(Person, {"name": "Ada Lovelace", "__version__": "1"}, to="2")
    register_step(Person, 0, 1, lambda doc: doc.update(name=7))
    # A version-1 result that a later step cannot take: the step's error.
    with pytest.raises(Exception, match=r"AttributeError|partition"):
        await assert_upgrades(Person, {}, {"name": 7}, to="1")
    await assert_upgrades(Person, {}, {"name": 7}, to="1", restores=False)


@pytest.mark.parametrize(
    ("to", "error", "words"),
    [
        ("4", ChainError, "version 4 is past the model's version 3"),
        ("1.5", ChainError, "the chain does not know version 1.5 (it knows 0, 1, 2, 3)"),
        ("0", ChainError, "the document is at version 1, past version 0"),
        ("x", InvalidVersionError, "to 'x' is not a valid PEP 440 version"),
    ],
)
async def test_a_wrong_target_is_refused_with_words(
    person_steps: MigrationRegistry, to: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as raised:
        await assert_upgrades(Person, {"name": "Ada Lovelace", "__version__": "1"}, to=to)
    message = str(raised.value)
    assert words in message, message
    assert "steptests.Person" in message, message


async def test_the_document_behind_to_says_assert_downgrades(
    person_steps: MigrationRegistry,
) -> None:
    with pytest.raises(ChainError, match="assert_downgrades") as raised:
        await assert_upgrades(Person, {"first": "A", "last": "L", "__version__": "3"}, to="2")
    assert (raised.value.from_version, raised.value.to_version) == ("3", "2")


async def test_a_document_already_at_to_is_checked_as_it_is(
    person_steps: MigrationRegistry,
) -> None:
    doc = {"first": "A", "last": "L", "__version__": "2"}
    assert await assert_upgrades(Person, doc, {"first": "A", "last": "L"}, to="2") == doc


# A property over generated chains: the result is the steps from the document's
# version to `to`, run in order; every other `to` is refused.
class Trail(VersionedModel):
    """Each step appends the version it arrives at to ``trail``."""

    __model__ = "steptests.Trail"
    __version__ = 6

    trail = List(Str())


#: Versions a generated chain may pass through, between 0 and 6.
_BETWEEN = ["0.5", "1", "1.5", "2", "3", "4", "5.1"]
#: Targets to try: versions of the chains, others, and no versions.
_TARGETS = ["0", *_BETWEEN, "6", "7", "2.5", "10", "6.0", "01", "x", ""]


def _arrive(version: str) -> Any:
    def step(doc: dict[str, Any]) -> None:
        doc["trail"] = [*doc.get("trail", []), version]

    return step


@settings(max_examples=RANGE_EXAMPLES, deadline=None)
@given(
    chain=st.lists(st.sampled_from(_BETWEEN), unique=True).map(sorted),
    start=st.integers(0, 10),
    to=st.sampled_from(_TARGETS) | st.integers(-1, 8),
)
def test_generated_targets_run_exactly_the_steps_up_to_them(
    chain: list[str], start: int, to: Any
) -> None:
    from packaging.version import InvalidVersion, Version

    versions = ["0", *sorted(chain, key=Version), "6"]
    begin = versions[start % len(versions)]
    legacy = {"trail": [], "__version__": begin}
    try:
        target: Version | None = Version(str(to))
    except InvalidVersion:
        target = None
    known = [Version(v) for v in versions]
    with MigrationRegistry.instance().isolated():
        for a, b in itertools.pairwise(versions):
            register_step(Trail, a, b, _arrive(b))
        run = assert_upgrades(Trail, legacy, to=to)
        if target is None:
            event("not a version")
            with pytest.raises(InvalidVersionError):
                asyncio.run(run)
            return
        if target not in known or target < Version(begin):
            event("refused")
            with pytest.raises(ChainError):
                asyncio.run(run)
            return
        event("upgraded" if target > Version(begin) else "already there")
        upgraded = asyncio.run(run)
    expected = [v for v in versions if Version(begin) < Version(v) <= target]
    assert upgraded["trail"] == expected
    # The version as the chain spells it ("6" for to="6.0").
    assert upgraded["__version__"] in versions and Version(upgraded["__version__"]) == target


# ----------------------------------------------------------------------
# References without a database
# ----------------------------------------------------------------------
class Customer(VersionedModel):
    __model__ = "steptests.Customer"
    __version__ = 1

    name = Str()


class Tag(NoSQLModel):
    """A plain atom-db model (not versioned)."""

    __model__ = "steptests.Tag"

    label = Str()


class Order(VersionedModel):
    """A reference of each kind atom-db restores: Typed, Instance, in a list, plain."""

    __model__ = "steptests.Order"
    __version__ = 2

    customer = Typed(Customer)
    payer = Instance(Customer)
    others = List(Instance(Customer))
    tag = Instance(Tag)
    plain = Typed(Tag)
    total = Int()


def stub(model: type[NoSQLModel], oid: ObjectId | None = None, ref: int = 1) -> dict[str, Any]:
    return {"_id": oid or ObjectId(), "__ref__": ref, "__model__": model.__model__}


def rename_total(doc: dict[str, Any]) -> None:
    doc["total"] = doc.pop("amount", 0)


def database_set() -> bool:
    manager: Any = NoSQLModelManager.instance()
    return manager.get_member("database").get_slot(manager) is not None


@pytest.fixture(autouse=True)
def no_database() -> Iterator[None]:
    """No database set during the test, as in a step test without fixtures
    (an earlier test may have left the manager pointed at one)."""
    from atomdb_migrate.driver.mongo import ManagerState

    saved = ManagerState()
    manager: Any = NoSQLModelManager.instance()
    manager.get_member("database").del_slot(manager)
    manager.get_member("proxies").del_slot(manager)
    try:
        yield
    finally:
        saved.restore()


@pytest.fixture
def order_steps(registry: MigrationRegistry) -> MigrationRegistry:
    register_step(Order, 1, 2, rename_total)
    return registry


@pytest.mark.parametrize("field", ["customer", "payer", "tag", "plain"])
async def test_a_reference_restores_without_a_database(
    order_steps: MigrationRegistry, field: str
) -> None:
    assert not database_set()
    model = Tag if field in ("tag", "plain") else Customer
    ref = stub(model)
    legacy = {"amount": 3, field: ref, "__version__": "1"}
    upgraded = await assert_upgrades(Order, legacy, {"total": 3, field: ref})
    order = await assert_restores(Order, upgraded)
    held = getattr(order, field)
    assert type(held) is model and held._id == ref["_id"]
    if model is Customer:
        assert held.__restored__ is False  # to be loaded, as atom-db leaves a Typed reference
    # The manager is left as it was found: no database.
    assert not database_set()
    with pytest.raises(OSError, match="No database has been set"):
        Order.objects  # noqa: B018


async def test_references_in_a_list_restore_without_a_database(
    order_steps: MigrationRegistry,
) -> None:
    refs = [stub(Customer, ref=n) for n in range(3)]
    order = await assert_restores(Order, {"others": refs, "total": 1, "__version__": "2"})
    assert [(type(c), c._id) for c in order.others] == [(Customer, r["_id"]) for r in refs]


async def test_a_reference_to_an_unknown_model_still_fails_the_check(
    order_steps: MigrationRegistry,
) -> None:
    wrong = {"_id": ObjectId(), "__ref__": 1, "__model__": "steptests.Nobody"}
    with pytest.raises(AssertionError, match=r"steptests\.Order\.payer: KeyError"):
        await assert_upgrades(Order, {"payer": wrong, "__version__": "1"})
    with pytest.raises(AssertionError, match=r"Trying to use steptests\.Tag state"):
        await assert_upgrades(Order, {"customer": stub(Tag), "__version__": "1"})


async def test_with_migrate_db_references_are_looked_up_there(
    order_steps: MigrationRegistry, migrate_db: Any
) -> None:
    ada = Customer(name="Ada")
    await ada.save()
    ref = stub(Customer, ada._id)
    order = await assert_restores(Order, {"payer": ref, "total": 1, "__version__": "2"})
    assert order.payer is ada  # from the object cache of the database's manager
    missing = await assert_restores(Order, {"payer": stub(Customer), "__version__": "2"})
    assert missing.payer is None  # atom-db: a document not found


def test_the_offline_database_answers_only_lookups_by_id() -> None:
    from atomdb_migrate.model.offline import OfflineDatabase

    collection = OfflineDatabase()["app.Thing"]
    oid = ObjectId()
    assert asyncio.run(collection.find_one({"_id": oid})) == {"_id": oid}
    assert asyncio.run(collection.find_one({"name": "x"})) is None
    with pytest.raises(AttributeError, match="migrate_db"):
        collection.insert_one  # noqa: B018


#: A document of Order with references of every kind, and the referenced documents.
@st.composite
def _orders(
    draw: st.DrawFn,
) -> tuple[dict[str, Any], list[tuple[type[NoSQLModel], dict[str, Any]]]]:
    stored: list[tuple[type[NoSQLModel], dict[str, Any]]] = []
    counter = iter(range(1, 1000))

    def reference(model: type[NoSQLModel]) -> dict[str, Any]:
        ref = stub(model, ref=next(counter))
        fields = {"name": "n"} if model is Customer else {"label": "l"}
        version = {"__version__": "1"} if model is Customer else {}
        stored.append(
            (model, {"_id": ref["_id"], "__model__": model.__model__, **fields, **version})
        )
        return ref

    doc: dict[str, Any] = {"__version__": "2", "total": draw(st.integers(0, 9))}
    for field, model in (("customer", Customer), ("payer", Customer), ("tag", Tag), ("plain", Tag)):
        if draw(st.booleans()):
            doc[field] = reference(model)
    doc["others"] = [reference(Customer) for _ in range(draw(st.integers(0, 3)))]
    return doc, stored


def _references(order: Order) -> list[tuple[str, Any, Any]]:
    found = [
        (f, type(getattr(order, f)), getattr(getattr(order, f), "_id", None))
        for f in ("customer", "payer", "tag", "plain")
    ]
    found += [(f"others.{i}", type(c), c._id) for i, c in enumerate(order.others)]
    return found


@settings(max_examples=REFERENCE_EXAMPLES, deadline=None)
@given(_orders())
def test_offline_references_are_the_objects_a_database_would_give(
    case: tuple[dict[str, Any], list[tuple[type[NoSQLModel], dict[str, Any]]]],
) -> None:
    """Differential: restored without a database, every reference is an object of
    the class and ``_id`` the same restore gives against a database holding the
    referenced documents."""
    from atomdb_migrate.driver.mongo import ManagerState, drop_memory_database

    doc, stored = case

    async def both() -> tuple[list[Any], list[Any]]:
        offline = _references(await assert_restores(Order, doc))
        saved = ManagerState()
        database = memory_database()
        try:
            for model, state in stored:
                await database[model.__model__].insert_one(state)
            online = _references(await assert_restores(Order, doc))
        finally:
            saved.restore()
            drop_memory_database(database)
        return offline, online

    offline, online = asyncio.run(both())
    event(f"{sum(kind is not type(None) for _, kind, _ in offline)} references")
    assert offline == online
