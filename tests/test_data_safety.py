"""Data safety at the edges: each way a hostile pass lost data, on every backend.

Old code reading newer documents, type-only changes, projections, failed
write-backs, the app's own client, numeric and null versions, documents of
another class than dict, keys MongoDB reads as paths.

"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from atom.api import Float, Instance, Int, List, Str
from atomdb.nosql import NoSQLModel, NoSQLModelManager
from bson import SON, Int64
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128

from atomdb_migrate import (
    InvalidVersionError,
    MigrationRegistry,
    VersionedModel,
    register_step,
    step,
)
from atomdb_migrate.core.writes import same_value
from atomdb_migrate.driver.mongo import is_mongomock
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.steps.versions import stored_version


class Person(VersionedModel):
    """Old code at version 2, reading what version-3 code stores."""

    __model__ = "safety.Person"
    __version__ = 2
    __on_newer__ = "downgrade"
    __write_back__ = True

    first = Str()


class Item(VersionedModel):
    __model__ = "safety.Item"
    __version__ = 2
    __write_back__ = True

    qty = Int()
    price = Float()
    tags = List(Int())


class Named(VersionedModel):
    __model__ = "safety.Named"
    __version__ = 2
    __write_back__ = True

    first = Str()
    last = Str()
    email = Str()


class Holder(NoSQLModel):
    """An unversioned model holding a reference to a versioned one."""

    __model__ = "safety.Holder"

    named = Instance(Named)


async def stored(model: type[NoSQLModel], _id: Any) -> dict[str, Any]:
    doc = await model.objects.find_one({"_id": _id})
    assert doc is not None
    return dict(doc)


@pytest.fixture
def steps(registry: MigrationRegistry) -> MigrationRegistry:
    @step(Person, 2, 3)
    def add_email(d: dict[str, Any]) -> None:
        d["email"] = d["first"].lower() + "@example.com"

    @add_email.downgrade
    def drop_email(d: dict[str, Any]) -> None:
        d.pop("email", None)

    register_step(
        Item,
        1,
        2,
        lambda d: d.update(
            qty=int(d["qty"]), price=float(d["price"]), tags=[int(t) for t in d["tags"]]
        ),
    )

    @step(Named, 1, 2)
    def split(doc: dict[str, Any]) -> None:
        doc["first"], _, doc["last"] = doc.pop("name", "").partition(" ")

    return registry


# ---------------------------------------------------------------------------
# 1. Old code reading a newer document never writes it back
# ---------------------------------------------------------------------------
async def test_old_code_downgrading_a_newer_document_writes_nothing(
    db: Any, steps: MigrationRegistry
) -> None:
    newer = {"__model__": Person.__model__, "__version__": "3", "first": "Ada"}
    newer["email"] = "ada@real.org"
    _id = (await Person.objects.insert_one(newer)).inserted_id
    before = await stored(Person, _id)
    person = await Person.restore(before)
    assert person.first == "Ada"
    assert await stored(Person, _id) == before, "the downgrade happened in memory only"


# ---------------------------------------------------------------------------
# 2. A change of type alone is a change
# ---------------------------------------------------------------------------
LEGACY_ITEM = {"qty": 3.0, "price": 2, "tags": [1.0, Int64(2)], "__version__": "1"}


async def test_write_back_stores_a_change_of_type_alone(db: Any, steps: MigrationRegistry) -> None:
    _id = (await Item.objects.insert_one(dict(LEGACY_ITEM))).inserted_id
    item = await Item.restore(await stored(Item, _id))
    assert (item.qty, item.price, item.tags) == (3, 2.0, [1, 2])
    after = await stored(Item, _id)
    assert after["__version__"] == "2"
    assert same_value(after["qty"], 3) and same_value(after["price"], 2.0)
    assert same_value(after["tags"], [1, 2])


async def test_upgrade_stores_a_change_of_type_alone(db: Any, steps: MigrationRegistry) -> None:
    await Item.objects.insert_many([dict(LEGACY_ITEM) for _ in range(5)])
    report = await Runner(db).upgrade(Item)
    assert report.migrated == 5
    async for doc in Item.objects.find({}):
        assert same_value(doc["qty"], 3) and type(doc["qty"]) is int
        assert same_value(doc["price"], 2.0) and same_value(doc["tags"], [1, 2])
        restored = await Item.restore(doc)
        assert (restored.qty, restored.price) == (3, 2.0)


# ---------------------------------------------------------------------------
# 3. Write-back from a projection
# ---------------------------------------------------------------------------
async def test_a_projection_the_step_reaches_past_is_not_written_back(
    db: Any, steps: MigrationRegistry
) -> None:
    legacy = {"name": "Ada Lovelace", "email": "ada@x.org", "__version__": "1"}
    _id = (await Named.objects.insert_one(legacy)).inserted_id
    before = await stored(Named, _id)
    partial = await Named.objects.find_one({"_id": _id}, {"name": 0})
    await Named.restore(partial)
    assert await stored(Named, _id) == before, "nothing written from a partial read"


async def test_a_projection_holding_what_the_step_reads_is_written_back(
    db: Any, steps: MigrationRegistry
) -> None:
    legacy = {"name": "Ada Lovelace", "email": "ada@x.org", "__version__": "1"}
    _id = (await Named.objects.insert_one(legacy)).inserted_id
    partial = await Named.objects.find_one({"_id": _id}, {"name": 1, "__version__": 1})
    named = await Named.restore(partial)
    assert (named.first, named.last) == ("Ada", "Lovelace")
    after = await stored(Named, _id)
    assert after == {
        "_id": _id,
        "email": "ada@x.org",
        "__version__": "2",
        "first": "Ada",
        "last": "Lovelace",
    }


async def test_a_step_looking_at_everything_is_not_written_back_from_a_projection(
    db: Any, registry: MigrationRegistry
) -> None:
    class Wide(VersionedModel):
        __model__ = "safety.Wide"
        __version__ = 1
        __write_back__ = True

    def lower_everything(doc: dict[str, Any]) -> None:
        for key, value in list(doc.items()):
            if isinstance(value, str) and not key.startswith("_"):
                doc[key] = value.lower()

    register_step(Wide, 0, 1, lower_everything)
    _id = (await Wide.objects.insert_one({"a": "X", "b": "Y"})).inserted_id
    await Wide.restore(await Wide.objects.find_one({"_id": _id}, {"a": 1}))
    assert await stored(Wide, _id) == {"_id": _id, "a": "X", "b": "Y"}
    await Wide.restore(await stored(Wide, _id))
    assert await stored(Wide, _id) == {"_id": _id, "a": "x", "b": "y", "__version__": "1"}


# ---------------------------------------------------------------------------
# 5. A failed write-back never fails the read
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grow", [False, True])
async def test_a_large_write_back_is_written_or_skipped_and_the_read_works(
    db: Any, registry: MigrationRegistry, caplog: pytest.LogCaptureFixture, grow: bool
) -> None:
    """9 MB read, 9 MB written: the filter matches the large value by type and size.
    Grown past 16 MB: the read works, and nothing is written."""

    class Blob(VersionedModel):
        __model__ = "safety.Blob"
        __version__ = 1
        __write_back__ = True

        data = Str()

    size = 9 * 1024 * 1024
    register_step(Blob, 0, 1, lambda d: d.update(data=d.pop("raw") * (2 if grow else 1)))
    _id = (await Blob.objects.insert_one({"raw": "x" * size})).inserted_id
    before = await stored(Blob, _id)
    with caplog.at_level(logging.WARNING, logger="atomdb_migrate"):
        blob = await Blob.restore(before)
    assert len(blob.data) == size * (2 if grow else 1)
    after = await stored(Blob, _id)
    if grow:
        assert "not written back" in caplog.text and "16 MB" in caplog.text
        assert after == before
    elif is_mongomock(db):
        assert "not written back" in caplog.text, "mongomock has no $bsonSize"
        assert after == before
    else:
        assert after == {"_id": _id, "data": "x" * size, "__version__": "1"}


async def test_a_write_back_the_server_refuses_is_logged(
    db: Any, steps: MigrationRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    _id = (await Named.objects.insert_one({"name": "Ada L", "__version__": "1"})).inserted_id
    before = await stored(Named, _id)
    proxy = Named.objects

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        from pymongo.errors import OperationFailure

        raise OperationFailure("not authorized on app to execute command", 13)

    monkeypatch.setattr(proxy.table, "update_one", refuse, raising=False)
    with caplog.at_level(logging.WARNING, logger="atomdb_migrate"):
        named = await Named.restore(before)
    assert named.first == "Ada"
    assert "not authorized" in caplog.text


async def test_a_read_only_user_reads_legacy_documents_with_write_back_on(
    secantus_auth_url: str, registry: MigrationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    from pymongo import AsyncMongoClient

    from atomdb_migrate.driver.mongo import ManagerState, wire_manager

    from .conftest import AUTH_USER

    host = secantus_auth_url.split("//", 1)[1]
    admin = AsyncMongoClient(f"mongodb://{AUTH_USER[0]}:{AUTH_USER[1]}@{host}/?authSource=admin")
    name = "safety_readonly"
    await admin[name].command("createUser", "reader", pwd="reader-pw", roles=["read"])
    await admin[name]["safety.Named"].insert_one({"name": "Ada Lovelace", "__version__": "1"})
    reader = AsyncMongoClient(f"mongodb://reader:reader-pw@{host}/{name}?authSource={name}")
    saved = ManagerState()
    wire_manager(reader[name])
    try:
        register_step(Named, 1, 2, lambda d: d.update(first=d.pop("name", "")))
        with caplog.at_level(logging.WARNING, logger="atomdb_migrate"):
            named = await Named.restore(await Named.objects.find_one({}))
        assert named.first == "Ada Lovelace"
        assert "not written back" in caplog.text and "not authorized" in caplog.text
        assert (await admin[name]["safety.Named"].find_one({}))["__version__"] == "1"
    finally:
        saved.restore()
        await admin.drop_database(name)
        await reader.close()
        await admin.close()


# ---------------------------------------------------------------------------
# 6. The Python API leaves the app's manager as it found it
# ---------------------------------------------------------------------------
async def test_a_workspace_leaves_the_apps_client_usable(
    backend: str, request: pytest.FixtureRequest
) -> None:
    from atomdb_migrate.commands.command import Workspace, status
    from atomdb_migrate.commands.config import load_config

    from .conftest import make_client, server_url

    if backend != "secantus-pymongo":
        pytest.skip("one server backend is enough: the workspace opens its own PyMongo client")
    url = server_url(backend, request)
    app_client = make_client(backend, request)
    app_db = app_client["safety_app"]
    manager = NoSQLModelManager.instance()
    manager.database = app_db
    manager.proxies = {}
    proxies = manager.proxies
    await Named.objects.insert_one({"first": "kept", "__version__": "2"})
    cached = Named.objects
    async with Workspace(load_config(url=f"{url}/safety_tool", models=[])) as ws:
        await status(ws)
        assert manager.database is not app_db
    assert manager.database is app_db and manager.proxies is proxies
    assert Named.objects is cached
    assert await Named.objects.find_one({"first": "kept"}) is not None
    await app_client.drop_database("safety_app")
    await app_client.close()


# ---------------------------------------------------------------------------
# 9. Numeric versions: one version, whatever its BSON form
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("stored_as", ["1", 1, Int64(1), 1.0, "1.0"])
async def test_every_bson_form_of_a_version_is_that_version(
    db: Any, steps: MigrationRegistry, stored_as: Any
) -> None:
    doc = {**LEGACY_ITEM, "__version__": stored_as}
    _id = (await Item.objects.insert_one(doc)).inserted_id
    item = await Item.restore(await stored(Item, _id))
    assert item.qty == 3
    assert (await stored(Item, _id))["__version__"] == "2"


async def test_true_is_not_version_one(steps: MigrationRegistry) -> None:
    assert (await Item.upgrade_state({**LEGACY_ITEM, "__version__": 1}))["qty"] == 3
    with pytest.raises(InvalidVersionError):
        await Item.upgrade_state({**LEGACY_ITEM, "__version__": True})
    assert (await Item.upgrade_state({**LEGACY_ITEM, "__version__": 1.0}))["qty"] == 3
    with pytest.raises(InvalidVersionError):
        await Item.upgrade_state({**LEGACY_ITEM, "__version__": True})


async def test_the_runner_counts_each_form_of_a_version_once(
    db: Any, steps: MigrationRegistry
) -> None:
    forms = ["1", 1, Int64(1), 1.0, "1.0", 2, 2.0, Int64(2)]
    await Item.objects.insert_many([{**LEGACY_ITEM, "__version__": v} for v in forms])
    dry = await Runner(db, RunOptions(dry_run=True, sample=0)).upgrade(Item)
    assert dry.by_version == {"1": 5}, "1.0 is 1, and 2 in any form is current"
    report = await Runner(db).upgrade(Item)
    assert report.migrated == 5
    left = [stored_version(d["__version__"]) async for d in Item.objects.find({})]
    assert left == [stored_version("2")] * 8


async def test_a_version_of_5000_digits_is_an_invalid_version(
    db: Any, steps: MigrationRegistry
) -> None:
    with pytest.raises(InvalidVersionError):
        await Named.upgrade_state({"name": "x", "__version__": "1" * 5000})
    named_id = (
        await Named.objects.insert_one({"name": "Ada L", "__version__": "9" * 5000})
    ).inserted_id
    holder_id = (
        await Holder.objects.insert_one(
            {"named": {"_id": named_id, "__ref__": 1, "__model__": Named.__model__}}
        )
    ).inserted_id
    holder = await Holder.restore(await stored(Holder, holder_id))
    # atom-db's own policy for an unversioned parent is to log and skip; the
    # versioned child raises a MigrateError (not a bare ValueError).
    assert holder.named is None
    with pytest.raises(InvalidVersionError):
        await Named.restore(await stored(Named, named_id))


# ---------------------------------------------------------------------------
# 14. null versions, SON documents, keys MongoDB reads as paths
# ---------------------------------------------------------------------------
async def test_an_explicit_null_version_is_version_zero_everywhere(
    db: Any, registry: MigrationRegistry
) -> None:
    class Nul(VersionedModel):
        __model__ = "safety.Nul"
        __version__ = 1

        n = Int()

    register_step(Nul, 0, 1, lambda d: d.update(n=d.get("n", 0) + 1))
    assert (await Nul.upgrade_state({"n": 1, "__version__": None}))["n"] == 2
    await Nul.objects.insert_many([{"n": 1, "__version__": None}, {"n": 1}])
    report = await Runner(db).upgrade(Nul)
    assert report.by_version == {"0": 2} and report.migrated == 2
    assert [d["n"] async for d in Nul.objects.find({})] == [2, 2]


async def test_son_documents_are_not_changed_by_steps(registry: MigrationRegistry) -> None:
    class Poked(VersionedModel):
        __model__ = "safety.Poked"
        __version__ = 1

    def poke(doc: dict[str, Any]) -> None:
        doc["meta"]["inner"]["x"] = 99
        doc["meta"]["items"].append(3)

    register_step(Poked, 0, 1, poke)
    nested = SON([("inner", SON([("x", 1)])), ("items", [1, 2])])
    legacy = SON([("_id", 1), ("meta", nested)])
    upgraded = await Poked.upgrade_state(legacy)
    assert upgraded["meta"]["inner"]["x"] == 99 and upgraded["meta"]["items"] == [1, 2, 3]
    assert nested == SON([("inner", SON([("x", 1)])), ("items", [1, 2])])


async def test_a_top_level_key_with_a_dot_is_upgraded(db: Any, registry: MigrationRegistry) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock has no $getField: fields named with '.' need a real server")

    class Dotted(VersionedModel):
        __model__ = "safety.Dotted"
        __version__ = 1

        n = Int()

    register_step(Dotted, 0, 1, lambda d: d.update(n=len(d.pop("a.b", ""))))
    await Dotted.objects.insert_one({"a.b": "xyz", "$odd": 1})
    first = await Runner(db).upgrade(Dotted)
    assert (first.migrated, first.skipped) == (1, 0)
    doc = await Dotted.objects.find_one({})
    assert doc["n"] == 3 and "a.b" not in doc and doc["$odd"] == 1
    again = await Runner(db).upgrade(Dotted)
    assert again.pending == 0


async def test_a_step_writing_new_names_with_dots_and_dollars(
    db: Any, registry: MigrationRegistry
) -> None:
    """A name the step adds is matched as missing, and seen if it arrives meanwhile."""
    if is_mongomock(db):
        pytest.skip("mongomock has no $getField: fields named with '.' need a real server")
    from atomdb_migrate.core.writes import conditional_update

    class Odd(VersionedModel):
        __model__ = "safety.Odd"
        __version__ = 1

    def step(doc: dict[str, Any]) -> None:
        doc["a.b"], doc["$c"] = doc.pop("n"), "new"

    register_step(Odd, 0, 1, step)
    await Odd.objects.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    stored = await Odd.objects.find_one({"_id": 1})
    query, update = conditional_update(stored, {"_id": 1, "a.b": 9, "__version__": "1"}, ["n"])
    await Odd.objects.update_one(
        {"_id": 1},
        [
            {
                "$replaceWith": {
                    "$setField": {
                        "field": {"$literal": "a.b"},
                        "input": "$$ROOT",
                        "value": "meanwhile",
                    }
                }
            }
        ],
    )
    assert (await Odd.objects.update_one(query, update)).matched_count == 0
    result = await Runner(db).upgrade(Odd)
    assert (result.migrated, result.skipped, result.failed) == (2, 0, 0)
    docs = [d async for d in Odd.objects.find({}, sort=[("_id", 1)])]
    assert [(d["a.b"], d["$c"], "n" in d) for d in docs] == [(1, "new", False), (2, "new", False)]


async def test_documents_read_as_son_upgrade_without_changing_the_read(
    backend: str, request: pytest.FixtureRequest, steps: MigrationRegistry
) -> None:
    from .conftest import make_client

    if backend == "mongomock":
        pytest.skip("mongomock ignores codec options")
    client = make_client(backend, request)
    database = client.get_database("safety_son", codec_options=CodecOptions(document_class=SON))
    try:
        await database["safety.Item"].insert_one(
            {**LEGACY_ITEM, "meta": {"inner": {"x": 1}}, "tags": [1, 2]}
        )
        doc = await database["safety.Item"].find_one({})
        assert type(doc) is SON and type(doc["meta"]) is SON
        before = str(doc)
        upgraded = await Item.upgrade_state(doc)
        upgraded["meta"]["inner"]["x"] = 2
        assert str(doc) == before, "the document read is not changed"
    finally:
        await client.drop_database("safety_son")
        result = client.close()
        if hasattr(result, "__await__"):
            await result


# ---------------------------------------------------------------------------
# Found by a hostile pass: loose equality, odd versions and keys, large values
# ---------------------------------------------------------------------------
class Watched(VersionedModel):
    __model__ = "safety.Watched"
    __version__ = 2
    __write_back__ = True


@pytest.mark.parametrize(
    "read, concurrent",
    [
        (5, [5, 6]),  # {x: 5} also matches an array holding 5
        (5, 5.0),  # and a double of the same value
        (None, "$unset"),  # {x: None} also matches a missing field
        ([1, 2], [[1, 2], 3]),  # {x: [1, 2]} also matches an array holding it
        ({"a": 1}, [{"a": 1}]),
    ],
)
async def test_a_concurrent_change_loose_equality_would_miss_is_kept(
    db: Any, registry: MigrationRegistry, read: Any, concurrent: Any
) -> None:
    if is_mongomock(db) and concurrent == 5.0:
        pytest.skip("mongomock has no $type for every BSON type: types are pinned on servers")
    register_step(Watched, 1, 2, lambda d: d.update(y=d.get("x")))
    _id = (await Watched.objects.insert_one({"x": read, "__version__": "1"})).inserted_id
    as_read = await stored(Watched, _id)
    change = {"$unset": {"x": ""}} if concurrent == "$unset" else {"$set": {"x": concurrent}}
    await Watched.objects.update_one({"_id": _id}, change)
    after_change = await stored(Watched, _id)
    await Watched.restore(as_read)
    assert await stored(Watched, _id) == after_change, "the concurrent change is kept"


async def test_the_runner_keeps_a_concurrent_change_loose_equality_would_miss(
    db: Any, registry: MigrationRegistry
) -> None:
    async def meddle_then_scale(doc: dict[str, Any]) -> None:
        if doc["x"] == 5:  # the first time only: another process changes it now
            await Watched.objects.update_one({"_id": doc["_id"]}, {"$set": {"x": [5, 99]}})
        doc["x"] = doc["x"] * 2

    register_step(Watched, 1, 2, meddle_then_scale)
    _id = (await Watched.objects.insert_one({"x": 5, "__version__": "1"})).inserted_id
    report = await Runner(db).upgrade(Watched)
    assert (report.migrated, report.skipped) == (1, 0), "read again and upgraded"
    assert (await stored(Watched, _id))["x"] == [5, 99, 5, 99]


@pytest.mark.parametrize("raw", [Decimal128("2"), Decimal128("NaN"), {"a": 1}, ["3"], ["1", "2"]])
async def test_versions_that_are_no_hashable_value_are_counted_or_refused(
    db: Any, steps: MigrationRegistry, raw: Any
) -> None:
    from atomdb_migrate.driver.mongo import count_versions

    await Item.objects.insert_one({**LEGACY_ITEM, "__version__": raw})
    ((counted, n),) = await count_versions(Item.objects)
    assert n == 1 and repr(counted) == repr(raw)
    if isinstance(raw, Decimal128) and raw.to_decimal().is_finite():
        report = await Runner(db).upgrade(Item)
        assert report.by_version == {} and report.migrated == 0, "Decimal128 2 is version 2"
        return
    with pytest.raises(InvalidVersionError) as info:
        await Runner(db).upgrade(Item)
    assert len(str(info.value)) < 300
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Item)
    assert (report.failed, report.migrated) == (1, 0), "recorded, even an array holding 2"


async def test_a_result_with_a_key_that_is_not_a_string_fails_its_document(
    db: Any, registry: MigrationRegistry
) -> None:
    def odd_key(doc: dict[str, Any]) -> None:
        if doc["n"] == 0:
            doc[1] = "one"

    register_step(Watched, 1, 2, odd_key)
    await Watched.objects.insert_many([{"n": i, "__version__": "1"} for i in range(3)])
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Watched)
    assert (report.migrated, report.failed) == (2, 1)
    assert "has a field named 1, which is not a string" in report.failures[0]["error"]


@pytest.mark.parametrize(
    "step",
    [
        lambda d: d.update(a=d.get(1, d.get("a"))),  # looks a key up that no document has
        lambda d: d.update(a=d.get(0, d.get("a"))),
        lambda d: d.__setitem__(1, "x"),  # and a result that cannot be stored
    ],
)
async def test_odd_keys_never_fail_a_read(
    db: Any, registry: MigrationRegistry, step: Any, caplog: pytest.LogCaptureFixture
) -> None:
    register_step(Watched, 1, 2, step)
    _id = (await Watched.objects.insert_one({"a": 7, "__version__": "1"})).inserted_id
    with caplog.at_level(logging.WARNING, logger="atomdb_migrate"):
        await Watched.restore(await stored(Watched, _id))
    after = await stored(Watched, _id)
    if "not a string" in caplog.text:
        assert after["__version__"] == "1", "nothing stored that cannot be"
    else:
        assert after["__version__"] == "2", "written back: the odd key is no stored field"


async def test_a_write_around_the_documents_methods_is_still_guarded(
    db: Any, registry: MigrationRegistry
) -> None:
    def around(doc: dict[str, Any]) -> None:
        dict.setdefault(doc, "b", 0)

    register_step(Watched, 1, 2, around)
    _id = (await Watched.objects.insert_one({"a": 1, "b": 5, "__version__": "1"})).inserted_id
    await Watched.restore(await Watched.objects.find_one({"_id": _id}, {"b": 0}))
    assert (await stored(Watched, _id))["b"] == 5, "b, written without being looked at, is kept"


async def test_a_large_document_whose_step_changes_its_large_field_is_upgraded(
    db: Any, registry: MigrationRegistry
) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock has no $bsonSize: large values are matched whole there")
    big = "x" * (9 * 1024 * 1024)
    register_step(Watched, 1, 2, lambda d: d.update(body=d.pop("raw").upper()))
    _id = (await Watched.objects.insert_one({"raw": big, "__version__": "1"})).inserted_id
    report = await Runner(db).upgrade(Watched)
    assert (report.migrated, report.failed) == (1, 0)
    doc = await stored(Watched, _id)
    assert doc["body"] == big.upper() and "raw" not in doc


def test_workspaces_closed_in_any_order_leave_the_manager_as_found() -> None:
    from atomdb_migrate.driver.mongo import ManagerState, wire_manager

    manager = NoSQLModelManager.instance()
    before = manager.get_member("database").get_slot(manager)
    first = ManagerState()
    wire_manager("db-one")
    second = ManagerState()
    wire_manager("db-two")
    first.restore()
    assert manager.database == "db-two", "the later one is still open"
    second.restore()
    assert manager.get_member("database").get_slot(manager) is before


# ---------------------------------------------------------------------------
# Issue 22, item 5: a large document whose list a step reads
# ---------------------------------------------------------------------------
#: 5,700 tags of about 1 KB: a 5.5 MB list, as the issue found it.
TAGS = [f"tag-{i:05d}-" + "t" * 990 for i in range(5700)]


def rename_tags(doc: dict[str, Any]) -> None:
    doc["labels"] = doc.pop("tags")


async def test_a_large_list_a_step_moves_is_upgraded(db: Any, registry: MigrationRegistry) -> None:
    register_step(Watched, 1, 2, rename_tags)
    _id = (await Watched.objects.insert_one({"tags": TAGS, "__version__": "1"})).inserted_id
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Watched)
    assert (report.migrated, report.failed) == (1, 0), report.failures
    doc = await stored(Watched, _id)
    assert doc["labels"] == TAGS and "tags" not in doc and doc["__version__"] == "2"


async def test_a_large_list_a_step_moves_is_written_back(
    db: Any, registry: MigrationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    register_step(Watched, 1, 2, rename_tags)
    _id = (await Watched.objects.insert_one({"tags": TAGS, "__version__": "1"})).inserted_id
    with caplog.at_level(logging.INFO, logger="atomdb_migrate"):
        await Watched.restore(await stored(Watched, _id))
    assert "not written back" not in caplog.text
    doc = await stored(Watched, _id)
    assert doc["labels"] == TAGS and "tags" not in doc and doc["__version__"] == "2"
