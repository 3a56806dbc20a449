"""Validators: the ``$jsonSchema`` of what atom-db stores, and ``ops.set_validator``.

The schema is checked against documents atom-db itself writes: real models
are saved through atom-db into a collection whose validator is strict with
action error, so a schema that refused anything atom-db writes fails here.
Documents with one wrong value are refused, so the schema is not vacuous.
mongomock keeps no validators: the server tests skip there.

"""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from atom.api import (
    Bool,
    Bytes,
    Coerced,
    ContainerList,
    DefaultDict,
    Dict,
    Enum,
    FixedTuple,
    Float,
    FloatRange,
    ForwardInstance,
    Instance,
    Int,
    List,
    Property,
    Range,
    Set,
    Str,
    Tuple,
    Typed,
    Value,
)
from atomdb.base import JSONModel
from atomdb.nosql import NoSQLModel
from bson import Decimal128, Int64, ObjectId
from bson.errors import InvalidDocument
from pymongo.errors import WriteError

from atomdb_migrate import (
    MigrationRegistry,
    VersionedModel,
    json_schema,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.driver.mongo import is_mongomock, read_validator, write_validator
from atomdb_migrate.engine.runner import DOWNGRADE, Runner, RunOptions
from atomdb_migrate.exceptions import ConfigError
from atomdb_migrate.schema.validators import (
    NO_VALIDATOR,
    Validator,
    validator_of,
)

from .project import CUSTOMER, ROOT, Project


# ---------------------------------------------------------------------------
# Models with every member kind atom-db serializes
# ---------------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(JSONModel):
    """Embedded: atom-db's JSON serializer writes dates, bytes, tuples as documents."""

    __model__ = "validators.Address"

    street = Str()
    since = Typed(date)
    checked = Typed(datetime)
    opens = Typed(time)
    amount = Instance(Decimal)
    key = Instance(UUID)
    raw = Bytes()
    point = Tuple(float)
    pair = FixedTuple(int, str, default=(0, ""))
    tags = Set(str)
    rows = List(Tuple(int))  # a primitive member: handed to PyMongo as it is
    stamps = Dict(str, Typed(datetime))


class Author(NoSQLModel):
    __model__ = "validators.Author"

    name = Str()


class Tag(VersionedModel):
    __model__ = "validators.Tag"

    label = Str()


class Everything(VersionedModel):
    __model__ = "validators.Everything"
    __version__ = 2

    title = Str()
    loose_title = Str(strict=False)
    count = Int()
    loose_count = Int(strict=False)
    ratio = Float()
    exact_ratio = Float(strict=True)
    flag = Bool()
    stars = Range(0, 5)
    share = FloatRange(0.0, 1.0)
    raw = Bytes()
    numbers = List(int)
    words = ContainerList(str)
    unique = Set(int)
    scores = Dict(str, float)
    anything = Dict()
    tally = DefaultDict(str, int)
    point = Tuple(int)
    fixed = FixedTuple(int, str, default=(0, "a"))
    author = Typed(Author)
    maybe_author = Instance(Author)
    co_author = Typed(Author)
    draft_author = Typed(Author)
    authors = List(Author)
    tags = Dict(str, Tag)
    address = Typed(Address)
    addresses = List(Address)
    color = Typed(Color)
    level = Instance(Level)
    state = Enum("draft", "live", None)
    mixed = Enum("a", 1)
    when = Typed(datetime)
    total = Coerced(int)
    label = Coerced(str)
    data = Value()
    obj = Instance(object)
    maybe = Instance(int)
    either = Instance((int, str))
    ref_id = Instance(ObjectId)
    big = Instance(Int64)
    dec128 = Instance(Decimal128)
    amount = Instance(Decimal)  # PyMongo stores no Decimal: only None is saved
    parent = ForwardInstance(lambda: Everything)

    # Not stored by atom-db: private, store=False, a Property.
    _secret = Str()
    hidden = Str().tag(store=False)
    computed = Property(lambda self: 1)


class Named(NoSQLModel):
    """A plain NoSQL model (no version) whose stored fields are given."""

    __model__ = "validators.Named"
    __fields__ = ["name"]  # noqa: RUF012 (atom takes no ClassVar annotation here)

    name = Str()
    not_saved = Int()


class Empty(VersionedModel):
    __model__ = "validators.Empty"


class Keys(NoSQLModel):
    __model__ = "validators.Keys"

    by_name = Dict(str, int)
    by_number = Dict(int, str)


# ---------------------------------------------------------------------------
# Without a server: the schema itself
# ---------------------------------------------------------------------------
def test_what_each_member_kind_gives() -> None:
    props = json_schema(Everything)["properties"]
    ints = {"bsonType": ["int", "long", "bool"]}  # atom's Int takes a bool
    assert props["title"] == props["loose_title"] == {"bsonType": "string"}
    assert props["count"] == props["loose_count"] == props["stars"] == ints
    assert props["ratio"] == props["exact_ratio"] == props["share"] == {"bsonType": "double"}
    assert props["flag"] == {"bsonType": "bool"}
    assert props["raw"] == {"bsonType": "binData"}
    assert props["numbers"] == {"bsonType": "array", "items": ints}
    assert props["unique"] == props["point"] == props["numbers"]  # lists, in a NoSQL model
    assert props["scores"] == {"bsonType": "object", "additionalProperties": {"bsonType": "double"}}
    assert props["anything"] == {"bsonType": "object"}
    assert props["fixed"] == {
        "bsonType": "array",
        "minItems": 2,
        "maxItems": 2,
        "items": [ints, {"bsonType": "string"}],
    }
    assert props["color"] == {"enum": ["red", "blue", None]}
    assert props["level"] == {"enum": [1, True, 2, None]}  # 1 in Python is True
    assert props["state"] == {"enum": ["draft", "live", None]}
    assert props["mixed"] == {"enum": ["a", 1, True]}
    assert props["when"] == {"bsonType": ["date", "null"]}
    assert props["total"] == ints and props["label"] == {"bsonType": "string"}
    assert props["maybe"] == {"bsonType": ["int", "long", "bool", "null"]}
    assert props["either"] == {"bsonType": ["int", "long", "bool", "string", "null"]}
    assert props["ref_id"] == {"bsonType": ["objectId", "null"]}
    assert props["big"] == {"bsonType": ["long", "null"]}
    assert props["dec128"] == {"bsonType": ["decimal", "null"]}
    for unknown in ("data", "obj", "amount"):
        assert unknown not in props  # no constraint rather than a wrong one


def test_a_reference_is_a_stub_or_the_whole_document() -> None:
    author = json_schema(Everything)["properties"]["author"]
    stub, document, null = author["anyOf"]
    assert stub == {
        "bsonType": "object",
        "required": ["__model__"],
        "properties": {
            "_id": {"bsonType": "objectId"},
            "__ref__": {"bsonType": ["int", "long"]},
            "__model__": {"bsonType": "string"},
        },
        "additionalProperties": False,
    }
    assert document["required"] == ["__model__", "name"]
    assert null == {"bsonType": "null"}
    # A model holding itself: cut where $jsonSchema cannot recurse.
    parent = json_schema(Everything)["properties"]["parent"]["anyOf"][1]
    assert parent == {"bsonType": "object", "required": ["__model__"]}
    tags = json_schema(Everything)["properties"]["tags"]["additionalProperties"]
    assert "__version__" in tags["anyOf"][1]["required"]  # a VersionedModel writes it


def test_an_embedded_model_writes_atom_db_json_forms() -> None:
    address = json_schema(Everything)["properties"]["address"]["anyOf"][1]["properties"]
    assert address["checked"]["anyOf"][0] == {
        "bsonType": "object",
        "required": [
            "__py__",
            "year",
            "month",
            "day",
            "hour",
            "minute",
            "second",
            "microsecond",
        ],
        "properties": {
            "__py__": {"bsonType": "string"},
            **{
                p: {"bsonType": "int"}
                for p in ("year", "month", "day", "hour", "minute", "second", "microsecond")
            },
        },
    }
    assert address["since"]["anyOf"][0]["required"] == ["__py__", "year", "month", "day"]
    assert address["opens"]["anyOf"][0]["required"][1:] == [
        "hour",
        "minute",
        "second",
        "microsecond",
    ]
    assert address["amount"]["anyOf"][0]["properties"]["__py__"] == {"enum": ["decimal"]}
    assert address["key"]["anyOf"][0]["properties"]["id"] == {"bsonType": "string"}
    assert address["raw"]["properties"]["__py__"] == {"enum": ["bytes"]}
    assert address["point"]["properties"]["values"] == {
        "bsonType": "array",
        "items": {"bsonType": "double"},
    }
    assert address["tags"]["required"] == ["__py__", "values"]  # {"__py__": "atomset", ...}
    # List(Tuple(int)) counts as primitive: atom-db hands it to PyMongo, a list of lists.
    assert address["rows"] == {
        "bsonType": "array",
        "items": {"bsonType": "array", "items": {"bsonType": ["int", "long", "bool"]}},
    }


def test_what_atom_db_does_not_store_is_not_required() -> None:
    schema = json_schema(Everything)
    for name in ("_secret", "hidden", "computed"):
        assert name not in schema["required"] and name not in schema["properties"]
    assert schema["required"][:3] == ["_id", "__model__", "__version__"]
    assert schema["properties"]["__model__"] == {"enum": ["validators.Everything"]}
    assert schema["properties"]["__version__"] == {"bsonType": "string"}
    assert schema["properties"]["_id"] == {"bsonType": "objectId"}
    assert "additionalProperties" not in schema  # older fields may stay during a rollout
    assert "data" in schema["required"]  # stored, of any type

    named = json_schema(Named)
    assert named["required"] == ["_id", "__model__", "name"]  # no version, __fields__ kept
    assert json_schema(Empty)["required"] == ["_id", "__model__", "__version__"]
    with pytest.raises(TypeError, match="NoSQLModel subclass"):
        json_schema(Address)  # type: ignore[arg-type]


class Hooked(NoSQLModel):
    __model__ = "validators.Hooked"

    checked = Int()
    flattened = Int().tag(flatten=lambda value, scope: str(value))
    plain = Int()

    def _post_validate_checked(self, old: Any, new: Any) -> Any:
        return new


class OwnState(NoSQLModel):
    __model__ = "validators.OwnState"

    name = Str()

    def __getstate__(self, scope: Any = None) -> dict[str, Any]:
        return {"renamed": self.name}


def test_what_cannot_be_told_gets_no_constraint() -> None:
    schema = json_schema(Hooked)
    assert schema["required"] == ["_id", "__model__", "checked", "flattened", "plain"]
    assert set(schema["properties"]) == {"_id", "__model__", "__ref__", "plain"}
    assert json_schema(OwnState) == {
        "bsonType": "object",
        "required": ["_id"],
        "properties": {"_id": {"bsonType": "objectId"}},
    }


def test_atom_db_refuses_member_names_a_document_could_not_hold() -> None:
    # Names with "$" or "." never reach a schema: atom-db refuses the class.
    for name in ("a.b", "$where"):
        with pytest.raises(ValueError, match="cannot be used for code generation"):
            type("Hostile", (NoSQLModel,), {"__module__": __name__, name: Str()})


def test_set_validator_is_checked_where_it_is_written() -> None:
    assert repr(ops.set_validator()) == "ops.set_validator('moderate', 'error')"
    assert repr(ops.set_validator("strict", "warn")) == "ops.set_validator('strict', 'warn')"
    assert repr(ops.set_validator(None)) == "ops.set_validator(None)"
    for bad, problem in (
        ({"level": "off"}, "level 'off'; one of moderate, strict"),
        ({"level": "STRICT"}, "level 'STRICT'"),
        ({"level": 1}, "level 1"),
        ({"action": "log"}, "action 'log'; one of error, warn"),
        ({"level": None, "action": "warn"}, r"set_validator\(None\) removes the validator"),
    ):
        with pytest.raises(ValueError, match=problem):
            ops.set_validator(**bad)
    op = ops.set_validator("strict")
    doc = {"title": "x"}
    op.apply(doc)
    assert doc == {"title": "x"}  # nothing happens on read
    assert op.inverse() == ops.set_validator(None) == ops.set_validator(None).inverse()
    step = ops.Operations([ops.add_field("views", 0), op])
    assert step.validators() == [op] and step.indexes() == []


class Post(VersionedModel):
    __model__ = "validators.Post"
    __version__ = 3

    title = Str()
    views = Int()


def post_steps() -> None:
    """1 -> 2 renames heading and asks for a strict validator; 2 -> 3 adds views."""
    register_step(
        Post,
        1,
        2,
        operations=[ops.rename_field("heading", "title"), ops.set_validator("strict")],
    )
    register_step(Post, 2, 3, operations=[ops.add_field("views", 0)])


def test_a_filter_passes_set_validator(registry: MigrationRegistry) -> None:
    post_steps()
    _, legacy = version_filter(Post, {"title": "x"})["$or"]
    assert legacy["__version__"] == {"$in": ["1", 1]}  # mapped through the rename alone
    assert {"heading": "x"} in legacy["$or"]


# ---------------------------------------------------------------------------
# On the server: what atom-db writes passes a strict validator
# ---------------------------------------------------------------------------
def needs_validators(db: Any) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock keeps no validators (create_collection refuses the option)")


async def strictly_validated(db: Any, model: type[NoSQLModel]) -> Any:
    collection = db[model.__model__]
    await write_validator(collection, validator_of(model, "strict", "error"))
    found = await read_validator(collection)
    assert found == Validator({"$jsonSchema": json_schema(model)}, "strict", "error")
    return collection


async def test_what_atom_db_writes_is_accepted(db: Any) -> None:
    needs_validators(db)
    collection = await strictly_validated(db, Everything)
    await strictly_validated(db, Tag)
    ada = Author(name="Ada")
    await ada.save()
    tag = Tag(label="news")
    await tag.save()
    address = Address(
        street="1 Main St",
        since=date(2020, 2, 29),
        checked=datetime(2024, 1, 2, 3, 4, 5, 678901),
        opens=time(9, 30),
        amount=Decimal("12.50"),
        key=UUID(int=7),
        raw=b"\x00\xff",
        point=(1.5, -2.0),
        pair=(7, "seven"),
        tags={"a", "b"},
        rows=[(1, 2), (3,)],
        stamps={"seen": datetime(2024, 5, 6), "never": None},
    )
    full = Everything(
        title="All",
        loose_title=b"bytes promoted",
        count=Int64(2**40),
        loose_count=2.9,
        ratio=3,  # atom makes a float of it
        exact_ratio=0.5,
        flag=True,
        stars=True,  # a bool is an int to atom
        share=1,
        raw=b"raw",
        numbers=[1, 2**40, True],
        words=["a"],
        unique={1, 2},
        scores={"a": 1.0, "a.b": 2.5, "$x": 0.0},
        anything={"nested": [1, {"x": None}]},
        tally={"a": 1},
        point=(1, 2, 3),
        fixed=(1, "one"),
        author=ada,
        maybe_author=ada,  # met twice: {"__ref__", "__model__"} the second time
        co_author=ada,
        draft_author=Author(name="never saved"),  # stored whole
        authors=[ada, Author(name="another draft")],
        tags={"news": tag},
        address=address,
        addresses=[address, Address(street="2nd")],
        color=Color.BLUE,
        level=Level.HIGH,
        state=None,
        mixed=True,  # atom's Enum takes True for 1
        when=datetime(2024, 1, 2, 3, 4, 5),
        total="42",
        label=7,
        data={"any": ["thing"]},
        obj=[1, "two"],
        maybe=5,
        either="text",
        ref_id=ObjectId(),
        big=Int64(3),
        dec128=Decimal128("1.25"),
    )
    full.parent = full  # a model holding itself
    defaults = Everything()
    optional_none = Everything(mixed=1.0, level=Level.LOW, parent=defaults)
    for obj in (full, defaults, optional_none):
        await obj.save()  # inserted
        obj.title = "saved again"
        await obj.save()  # replaced
    stored = await collection.find_one({"_id": full._id})
    assert stored["maybe_author"] == {
        "__ref__": stored["author"]["__ref__"],
        "__model__": Author.__model__,
    }
    assert stored["address"]["checked"]["__py__"] == "datetime.datetime"
    assert stored["ratio"] == 3.0 and isinstance(stored["ratio"], float)
    assert await collection.count_documents({}) == 3

    # What PyMongo cannot store is not stored at all: no validator is asked.
    with pytest.raises(InvalidDocument):
        await Everything(amount=Decimal("1.5")).save()
    assert await collection.count_documents({}) == 3

    await strictly_validated(db, Named)
    await Named(name="n", not_saved=3).save()
    await strictly_validated(db, Empty)
    await Empty().save()


#: One wrong value each: (what, path, value). Every one must be refused.
WRONG = [
    ("text in an Int", "count", "3"),
    ("an int in a Float", "ratio", 1),
    ("null in a Str", "title", None),
    ("an int in a Bool", "flag", 1),
    ("text in a List(int)", "numbers", ["x"]),
    ("a value not in the Enum", "color", "green"),
    ("a stub with another key", "author", {"_id": ObjectId(), "__model__": "m", "x": 1}),
    ("a date in an embedded model's JSON form", "address.checked", datetime(2024, 1, 1)),
    ("an embedded model without a field", "address.street", ...),
    ("text in a Dict(str, float)", "scores", {"a": "x"}),
    ("a string in a datetime", "when", "2024-01-01"),
    ("a version stored as a number", "__version__", 2),
    ("another model's name", "__model__", "other.Model"),
    ("a field missing", "title", ...),
    ("an int where an ObjectId", "ref_id", 12),
]


async def test_one_wrong_value_is_refused(db: Any) -> None:
    needs_validators(db)
    collection = await strictly_validated(db, Everything)
    await Everything(address=Address(street="x", checked=datetime(2024, 1, 1))).save()
    good = await collection.find_one()
    del good["_id"]
    await collection.insert_one(dict(good))  # the control: accepted as it is
    for what, path, value in WRONG:
        doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        *outer, last = path.split(".")
        holder = doc
        for name in outer:
            holder = holder[name]
        if value is ...:
            del holder[last]
        else:
            holder[last] = value
        with pytest.raises(WriteError) as refused:
            await collection.insert_one(doc)
        assert refused.value.code == 121, what


async def test_dict_keys_as_stored(db: Any) -> None:
    needs_validators(db)
    collection = await strictly_validated(db, Keys)
    await Keys(by_name={"a.b": 1, "$x": 2}).save()  # kept as they are in nested documents
    await Keys().save()
    with pytest.raises(InvalidDocument):  # PyMongo takes only string keys
        await Keys(by_number={1: "one"}).save()
    assert await collection.count_documents({}) == 2


# ---------------------------------------------------------------------------
# ops.set_validator through upgrade and downgrade
# ---------------------------------------------------------------------------
async def seed_posts(db: Any, n: int = 3) -> Any:
    collection = db[Post.__model__]
    await collection.insert_many(
        [
            {"heading": f"post {i}", "__model__": Post.__model__, "__version__": "1"}
            for i in range(n)
        ]
    )
    return collection


SET = "the validator (strict, action error): the $jsonSchema of validators.Post at version 3"


async def test_upgrade_sets_it_after_the_documents_change(
    db: Any, registry: MigrationRegistry
) -> None:
    needs_validators(db)
    post_steps()
    collection = await seed_posts(db)
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Post)
    assert report.indexes == [f"would set {SET}"]
    assert not await read_validator(collection)
    report = await Runner(db, RunOptions()).upgrade(Post)
    assert report.migrated == 3 and report.indexes == [f"set {SET}"]
    assert await read_validator(collection) == validator_of(Post, "strict", "error")
    assert await collection.count_documents({"__version__": "3", "views": 0}) == 3
    with pytest.raises(WriteError):
        await collection.insert_one({"__model__": Post.__model__, "__version__": "3"})
    await Post(title="saved", views=1).save()
    # A rerun finds the validator as asked: nothing to do.
    assert (await Runner(db, RunOptions()).upgrade(Post)).indexes == []


async def test_a_validator_the_documents_no_longer_match_is_removed_first(
    db: Any, registry: MigrationRegistry
) -> None:
    needs_validators(db)
    post_steps()
    collection = await seed_posts(db)
    # As an older model's validator would: heading required, which the rename removes.
    older = Validator({"$jsonSchema": {"required": ["heading"]}}, "strict", "error")
    await write_validator(collection, older)
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Post)
    assert report.indexes == [
        "would remove the validator (strict, action error) before the documents change; "
        "the new one is set once every document passed",
        f"would set {SET}",
    ]
    assert await read_validator(collection) == older
    report = await Runner(db, RunOptions()).upgrade(Post)
    assert report.migrated == 3 and report.failed == 0, report.failures
    assert report.indexes[0].startswith("removed the validator (strict, action error)")
    assert report.indexes[1] == f"set {SET}"
    assert await read_validator(collection) == validator_of(Post, "strict", "error")


async def test_a_missing_collection_is_created_with_it(
    db: Any, registry: MigrationRegistry
) -> None:
    needs_validators(db)
    post_steps()
    report = await Runner(db, RunOptions()).upgrade(Post)
    assert report.indexes == [f"set {SET}"]
    assert Post.__model__ in await db.list_collection_names()
    assert await read_validator(db[Post.__model__]) == validator_of(Post, "strict", "error")


async def test_downgrade_removes_it_before_the_documents_go_back(
    db: Any, registry: MigrationRegistry
) -> None:
    needs_validators(db)
    post_steps()
    collection = await seed_posts(db)
    await Runner(db, RunOptions()).upgrade(Post)
    report = await Runner(db, RunOptions(dry_run=True)).run(Post, "1", DOWNGRADE)
    assert report.indexes == [
        "would remove the validator (strict, action error) before the documents change"
    ]
    report = await Runner(db, RunOptions()).run(Post, "1", DOWNGRADE)
    assert report.migrated == 3 and report.failed == 0
    assert report.indexes == [
        "removed the validator (strict, action error) before the documents change"
    ]
    assert await read_validator(collection) == NO_VALIDATOR
    assert await collection.count_documents({"__version__": "1", "heading": {"$exists": True}}) == 3
    assert (await Runner(db, RunOptions()).run(Post, "1", DOWNGRADE)).indexes == []
    # Upgraded again (or upgrade run from the older code): set again.
    assert (await Runner(db, RunOptions()).upgrade(Post)).indexes == [f"set {SET}"]


async def test_it_waits_for_every_document(db: Any, registry: MigrationRegistry) -> None:
    needs_validators(db)

    def fail_on_boom(doc: dict[str, Any]) -> None:
        if doc.get("title") == "boom":
            raise ValueError("boom")

    register_step(Post, 1, 2, fail_on_boom, operations=[ops.rename_field("heading", "title")])
    register_step(Post, 2, 3, operations=[ops.add_field("views", 0), ops.set_validator()])
    collection = await seed_posts(db)
    await collection.insert_one(
        {"heading": "boom", "__model__": Post.__model__, "__version__": "1"}
    )
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Post)
    assert report.failed == 1 and report.indexes == []
    assert not await read_validator(collection)  # a document still needs the older shape


async def test_upgrade_to_an_older_version_leaves_it(db: Any, registry: MigrationRegistry) -> None:
    needs_validators(db)
    register_step(Post, 1, 2, operations=[ops.set_validator()])
    register_step(Post, 2, 3, operations=[ops.add_field("views", 0)])
    collection = await seed_posts(db)
    report = await Runner(db, RunOptions()).upgrade(Post, "2")
    assert report.indexes == ["validator left alone: it describes the model at version 3, not 2"]
    assert not await read_validator(collection)


async def test_set_validator_none_removes_it(db: Any, registry: MigrationRegistry) -> None:
    needs_validators(db)
    register_step(Post, 1, 2, operations=[ops.set_validator("moderate", "warn")])
    register_step(Post, 2, 3, operations=[ops.set_validator(None)])
    collection = await seed_posts(db)
    await write_validator(collection, validator_of(Post, "moderate", "warn"))
    report = await Runner(db, RunOptions()).upgrade(Post)
    assert report.indexes == [
        "removed the validator (moderate, action warn) before the documents change"
    ]
    assert not await read_validator(collection)


async def test_mongomock_says_it_keeps_none(db: Any, registry: MigrationRegistry) -> None:
    if not is_mongomock(db):
        pytest.skip("only the in-memory backend leaves validators alone")
    post_steps()
    await seed_posts(db)
    report = await Runner(db, RunOptions()).upgrade(Post)
    assert report.indexes == ["validator left alone: the in-memory backend keeps none"]
    assert report.migrated == 3


# ---------------------------------------------------------------------------
# Through the command line
# ---------------------------------------------------------------------------
def test_the_command_line_lists_sets_and_removes_it(project: Project) -> None:
    step = project.path / "migrations" / "0002_add_tier.py"
    step.write_text(
        step.read_text()
        + "\nfrom atomdb_migrate import ops\n\noperations = [ops.set_validator()]\n"
    )
    project.seed(4)
    collection = project.db[CUSTOMER]
    line = (
        "the validator (moderate, action error): the $jsonSchema of clidemo.Customer at version 3"
    )
    result = project.invoke("upgrade", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"clidemo.Customer: would set {line}" in result.output
    assert "validator" not in collection.options()

    result = project.invoke("upgrade")
    assert result.exit_code == 0, result.output
    assert f"clidemo.Customer: set {line}" in result.output
    options = collection.options()
    assert options["validationLevel"] == "moderate" and options["validationAction"] == "error"
    # Moderate: the upgraded documents lack "seq" (the steps never wrote it), and
    # stay updatable; new documents must match.
    assert collection.update_one({}, {"$set": {"tier": "gold"}}).modified_count == 1
    with pytest.raises(WriteError):
        collection.insert_one({"__model__": CUSTOMER, "__version__": "3", "first": 1})

    result = project.invoke("upgrade")
    assert "validator" not in result.output  # a rerun: already set
    result = project.invoke("downgrade", "Customer", "--to", "2")
    assert result.exit_code == 0, result.output
    assert "removed the validator (moderate, action error)" in result.output
    assert not collection.options().get("validator")
    assert project.versions() == {"2": 4}


class Ratio(VersionedModel):
    __model__ = "validators.Ratio"
    __version__ = 2

    title = Str()
    ratio = Float()


@pytest.mark.parametrize("level", ["strict", "moderate"])
async def test_a_validator_the_steps_own_writes_do_not_pass(
    db: Any, registry: MigrationRegistry, level: str
) -> None:
    # add_field writes the int 0 where the model declares a Float: the server
    # stores an int, which the model's schema (doubles only) refuses.
    needs_validators(db)
    register_step(Ratio, 1, 2, operations=[ops.add_field("ratio", 0), ops.set_validator(level)])
    collection = db[Ratio.__model__]
    await collection.insert_many(
        [{"title": f"t{i}", "__model__": Ratio.__model__, "__version__": "1"} for i in range(3)]
    )
    if level == "strict":
        # Set, it would refuse every later write to them, the next run's too.
        with pytest.raises(ConfigError, match="3 stored documents do not pass") as info:
            await Runner(db, RunOptions()).upgrade(Ratio)
        assert "the strict validator was not set" in str(info.value)
        assert not await read_validator(collection)
        assert await collection.count_documents({"__version__": "2"}) == 3
    else:
        report = await Runner(db, RunOptions()).upgrade(Ratio)
        assert report.indexes[0].startswith("3 stored documents do not pass")
        assert await read_validator(collection) == validator_of(Ratio, "moderate", "error")
        # Moderate: the documents that do not pass stay writable.
        await collection.update_one({"title": "t0"}, {"$set": {"title": "changed"}})
        assert await collection.count_documents({"title": "changed"}) == 1
    # Once the documents are fixed, the validator is set.
    await collection.update_many({}, {"$set": {"ratio": 0.0}})
    await Runner(db, RunOptions()).upgrade(Ratio)
    assert await read_validator(collection) == validator_of(Ratio, level, "error")


def test_the_gate_fails_while_the_validator_the_steps_ask_for_is_not_set(
    project: Project,
) -> None:
    # The customers the demo steps write have no seq: the strict schema of the
    # model requires it, so upgrade refuses to set the validator, and the gate
    # says so until it is set.
    models = (ROOT / "tests" / "clidemo.py").read_text()
    assert "__version__ = 3" in models
    (project.path / "clidemo4.py").write_text(models.replace("__version__ = 3", "__version__ = 4"))
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"tests.clidemo"', '"clidemo4"'))
    (project.path / "migrations" / "0004_validate.py").write_text(
        '"""Validate customers."""\n\nfrom atomdb_migrate import ops\n\n'
        'model = "clidemo.Customer"\nfrom_version = "3"\nto_version = "4"\n\n'
        'operations = [ops.set_validator("strict")]\n'
    )
    project.seed(2)
    code, out = project.run("upgrade")
    assert code == 3, out
    assert "2 stored documents do not pass the model's $jsonSchema" in out
    assert "a field it requires missing" in out
    code, out = project.run("check", "--pending")
    assert code == 1, out
    assert "collection clidemo.Customer has no validator, but its steps ask for" in out
    project.db[CUSTOMER].update_many({}, {"$set": {"seq": 0}})
    code, out = project.run("upgrade")
    assert code == 0, out
    code, out = project.run("check", "--pending")
    assert code == 0, out


def test_a_run_that_fails_says_and_records_what_it_did_to_the_collection(
    project: Project,
) -> None:
    step = project.path / "migrations" / "0002_add_tier.py"
    step.write_text(
        step.read_text() + "\nfrom atomdb_migrate import ops\n\n"
        "operations = [ops.create_index('tier'), ops.set_validator()]\n"
    )
    collection = project.db[CUSTOMER]
    project.seed(3)
    collection.insert_one({"name": "BOOM", "__model__": CUSTOMER, "__version__": "1"})
    # An older model's validator, which the documents about to be written do not pass.
    project.db.command("collMod", CUSTOMER, validator={"$jsonSchema": {"required": ["name"]}})
    result = project.invoke("upgrade")
    assert result.exit_code == 6, result.output
    created = "clidemo.Customer: created index tier_1 {tier: 1}"
    removed = (
        "clidemo.Customer: removed the validator (strict, action error) before the "
        "documents change; the new one is set once every document passed"
    )
    assert created in result.output and removed in result.output
    assert "clidemo.Customer: created the index atomdb_migrate_version" in result.output
    assert "tier_1" in collection.index_information()
    assert not collection.options().get("validator")
    (run,) = project.db["atomdb_migrate_history"].find({})
    assert run["outcome"] == "failed"
    # Every document pending: the index is made after the writes, failed or not.
    assert run["models"][CUSTOMER]["version_index"] == "created after"
    assert run["models"][CUSTOMER]["collection"] == [
        created.split(": ", 1)[1],
        removed.split(": ", 1)[1],
    ]
    shown = project.invoke("history")
    assert "failed" in shown.output and f"{created.split(': ', 1)[1]}, " in shown.output, shown


class Note(VersionedModel):
    __model__ = "validators.Note"
    __version__ = 1

    title = Str()


async def test_a_version_stored_in_another_form_at_the_head_is_rewritten(
    db: Any, registry: MigrationRegistry
) -> None:
    """1.0, Int64(1), 1 and "1.0" are version 1: no step touches them, so upgrade
    rewrites them as "1", the form the strict validator (and every query) takes."""
    register_step(Note, 0, 1, operations=[ops.set_validator("strict")])
    collection = db[Note.__model__]
    forms: list[Any] = ["1", 1.0, Int64(1), 1, "1.0", Decimal128("1")]
    await collection.insert_many(
        [
            {"title": f"t{i}", "__model__": Note.__model__, "__version__": v}
            for i, v in enumerate(forms)
        ]
    )
    # An array holding 1 is no version: left as it is.
    invalid = {"title": "a", "__model__": Note.__model__, "__version__": [1]}
    await collection.insert_one(invalid)
    dry = await Runner(db, RunOptions(dry_run=True, continue_on_error=True)).upgrade(Note)
    assert dry.respelled == 5 and dry.pending == 1, dry
    assert await collection.count_documents({"__version__": "1"}) == 1
    report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Note)
    assert (report.respelled, report.migrated, report.failed) == (5, 0, 1)
    assert (await collection.find_one({"_id": invalid["_id"]}))["__version__"] == [1]
    await collection.delete_one({"_id": invalid["_id"]})
    report = await Runner(db, RunOptions()).upgrade(Note)
    assert (report.respelled, report.migrated, report.failed) == (0, 0, 0)
    stored = [d["__version__"] async for d in collection.find({})]
    assert stored == ["1"] * len(forms) and all(type(v) is str for v in stored)
    if not is_mongomock(db):
        assert await read_validator(collection) == validator_of(Note, "strict", "error")
    # A rerun has nothing to rewrite.
    assert (await Runner(db, RunOptions()).upgrade(Note)).respelled == 0


def test_a_number_stored_as_the_head_version_no_longer_blocks_a_strict_validator(
    project: Project,
) -> None:
    """status, upgrade, the validator and check --pending agree on ``3.0``."""
    models = (ROOT / "tests" / "clidemo.py").read_text()
    (project.path / "clidemo4.py").write_text(models.replace("__version__ = 3", "__version__ = 4"))
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"tests.clidemo"', '"clidemo4"'))
    (project.path / "migrations" / "0004_validate.py").write_text(
        '"""Validate customers."""\n\nfrom atomdb_migrate import ops\n\n'
        'model = "clidemo.Customer"\nfrom_version = "3"\nto_version = "4"\n\n'
        'operations = [ops.set_validator("strict")]\n'
    )
    fields = {"first": "Ada", "last": "L", "tier": "basic", "applied": 1, "seq": 0}
    project.seed(2, version="4", **fields)
    project.seed(1, version=None, **fields)
    project.db[CUSTOMER].update_one({"__version__": None}, {"$set": {"__version__": 4.0}})
    result = project.invoke("status")
    assert "stored 4: 3; 0 pending" in result.output, result.output
    result = project.invoke("upgrade", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "1 documents at version 4 stored it in another form" in result.output
    result = project.invoke("upgrade")
    assert result.exit_code == 0, result.output
    assert "rewritten as '4'" in result.output
    assert project.versions() == {"4": 3}
    assert project.db[CUSTOMER].options()["validationLevel"] == "strict"
    assert project.invoke("check", "--pending").exit_code == 0
    (run,) = project.db["atomdb_migrate_history"].find({})
    assert run["models"][CUSTOMER]["respelled"] == 1


def test_the_docs_never_advise_a_rollout_validator_that_refuses() -> None:
    """``set_validator("moderate")`` refuses (action error) an old pod's write of a
    new object during a rollout: the docs give the action wherever they advise one."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        f"{page.name}:{n}"
        for page in pages
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if 'set_validator("moderate")' in line or "set_validator('moderate')" in line
    ]
    assert found == []
