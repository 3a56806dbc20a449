"""Index operations: created before a step's document changes, dropped after them."""

from __future__ import annotations

import inspect
import os
from typing import Any

import pytest
from atom.api import Str
from bson import Int64
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from atomdb_migrate import (
    ConfigError,
    IrreversibleOperationError,
    MigrationRegistry,
    UniqueIndexError,
    VersionedModel,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.driver.mongo import is_mongomock, to_list
from atomdb_migrate.engine.runner import DOWNGRADE, Runner, RunOptions
from atomdb_migrate.schema.indexes import duplicates_pipeline, shared_key


class Article(VersionedModel):
    __model__ = "indexes.Article"
    __version__ = 3

    title = Str()


def steps() -> None:
    """1 -> 2: an index on title, then heading renamed title; 2 -> 3: heading's index dropped."""
    register_step(
        Article,
        1,
        2,
        operations=[
            # Created before the rename: sparse, as the legacy documents have no title yet.
            ops.create_index("title", unique=True, sparse=True, name="title_unique"),
            ops.rename_field("heading", "title"),
        ],
    )
    register_step(Article, 2, 3, operations=[ops.drop_index([("heading", 1)])])


async def names(collection: Any) -> dict[str, Any]:
    return dict(await collection.index_information())


async def seed(db: Any, n: int = 4) -> Any:
    collection = db[Article.__model__]
    await collection.create_index("heading")
    await collection.insert_many([{"heading": f"page {i}", "__version__": "1"} for i in range(n)])
    return collection


def test_keys_are_taken_as_pymongo_takes_them() -> None:
    assert ops.create_index("title").keys == [("title", 1)]
    assert ops.create_index([("a", 1), ("b.c", -1)]).name == "a_1_b.c_-1"
    assert ops.create_index({"t": "text"}).keys == [("t", "text")]
    assert ops.drop_index([("a", 1)]).name == "a_1"
    assert ops.drop_index("custom").name == "custom"
    for bad, problem in (
        ([], "keys must be"),
        ([("a", 2)], "direction 2"),
        ([("a", True)], "direction True"),
        ([("$a", 1)], "may not start with"),
        ("__atomdb_migrate_x", "reserved"),
    ):
        with pytest.raises(ValueError, match=problem):
            ops.create_index(bad)
    with pytest.raises(ValueError, match="unknown option 'background'"):
        ops.create_index("a", background=True)
    with pytest.raises(ValueError, match="cannot be dropped"):
        ops.drop_index("_id_")


def test_index_operations_invert_and_change_no_document() -> None:
    create = ops.create_index("title", unique=True)
    # The drop is described, so that the inverse of the inverse is the create.
    assert create.inverse() == ops.drop_index([("title", 1)], unique=True)
    assert create.inverse().inverse() == create
    named = ops.create_index("title", name="by_title", sparse=True)
    assert named.inverse() == ops.drop_index("by_title", keys="title", sparse=True)
    assert named.inverse().inverse() == named
    assert ops.drop_index([("a", 1)]).inverse() == ops.create_index("a")
    with pytest.raises(IrreversibleOperationError, match="give drop_index its keys"):
        ops.drop_index("a_1").inverse()
    doc = {"title": "x"}
    create.apply(doc)
    assert doc == {"title": "x"}
    assert repr(create) == "ops.create_index([('title', 1)], unique=True)"


def test_a_filter_passes_index_operations(registry: MigrationRegistry) -> None:
    steps()
    _, legacy = version_filter(Article, {"title": "x"})["$or"]
    assert legacy["__version__"] == {"$in": ["1", 1]}


async def test_upgrade_creates_before_and_drops_after(db: Any, registry: MigrationRegistry) -> None:
    steps()
    collection = await seed(db)
    report = await Runner(db, RunOptions(dry_run=True)).upgrade(Article)
    assert report.indexes == [
        "would create index title_unique {title: 1} (unique=True, sparse=True)",
        "would drop index heading_1",
    ]
    assert "title_unique" not in await names(collection)
    report = await Runner(db, RunOptions()).upgrade(Article)
    assert report.failed == 0
    found = await names(collection)
    assert found["title_unique"]["key"] == [("title", 1)] and found["title_unique"]["unique"]
    assert "heading_1" not in found
    assert report.indexes == [
        "created index title_unique {title: 1} (unique=True, sparse=True)",
        "dropped index heading_1",
    ]
    # A rerun: the index as asked is there, the dropped one gone; nothing to do.
    again = await Runner(db, RunOptions()).upgrade(Article)
    assert again.indexes == []


async def test_a_conflicting_index_is_a_clear_error(db: Any, registry: MigrationRegistry) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock keeps no index options to compare")
    steps()
    collection = await seed(db)
    await collection.create_index("title", name="title_unique")  # not unique, not sparse
    with pytest.raises(ConfigError, match="conflicts with the index title_unique"):
        await Runner(db, RunOptions()).upgrade(Article)
    assert await collection.count_documents({"__version__": "1"}) == 4  # nothing written


async def test_drops_wait_for_every_document(db: Any, registry: MigrationRegistry) -> None:
    def fail_on_boom(doc: dict[str, Any]) -> None:
        if doc.get("title") == "boom":
            raise ValueError("boom")

    with MigrationRegistry.instance().isolated():
        register_step(
            Article,
            1,
            2,
            fail_on_boom,
            operations=[ops.rename_field("heading", "title")],
        )
        register_step(Article, 2, 3, operations=[ops.drop_index([("heading", 1)])])
        collection = await seed(db, 2)
        await collection.insert_one({"heading": "boom", "__version__": "1"})
        report = await Runner(db, RunOptions(continue_on_error=True)).upgrade(Article)
        assert report.failed == 1
        assert "heading_1" in await names(collection)  # a document still needs it


async def test_downgrade_inverts_them(db: Any, registry: MigrationRegistry) -> None:
    steps()
    collection = await seed(db)
    await Runner(db, RunOptions()).upgrade(Article)
    report = await Runner(db, RunOptions()).run(Article, "1", DOWNGRADE)
    found = await names(collection)
    assert "title_unique" not in found and "heading_1" in found, found
    assert report.indexes == ["created index heading_1 {heading: 1}", "dropped index title_unique"]
    assert await collection.count_documents({"__version__": "1", "heading": {"$exists": True}}) == 4


# ----------------------------------------------------------------------
# Making an index unique, while documents share a key
# ----------------------------------------------------------------------
class Account(VersionedModel):
    __model__ = "indexes.Account"
    __version__ = 3

    email = Str()


def unique_steps() -> None:
    """1 -> 2: an index on email; 2 -> 3: made unique, as autogenerate writes it."""
    register_step(Account, 1, 2, operations=[ops.create_index("email")])
    register_step(
        Account,
        2,
        3,
        operations=[ops.drop_index([("email", 1)]), ops.create_index("email", unique=True)],
    )


async def accounts(db: Any, emails: list[str]) -> Any:
    collection = db[Account.__model__]
    await collection.insert_many(
        [{"_id": i + 1, "email": e, "__version__": "1"} for i, e in enumerate(emails)]
    )
    return collection


async def test_an_index_made_unique_is_kept_while_documents_share_a_key(
    db: Any, registry: MigrationRegistry
) -> None:
    unique_steps()
    collection = await accounts(db, ["ada@example.org", "bob@example.org", "ada@example.org"])
    await Runner(db, RunOptions()).upgrade(Account, "2")
    assert "email_1" in await names(collection)

    # The dry run finds the duplicates, and says the build would fail.
    dry = await Runner(db, RunOptions(dry_run=True)).upgrade(Account)
    (refused,) = dry.refused
    assert isinstance(refused, UniqueIndexError)
    assert refused.key == {"email": "ada@example.org"} and sorted(refused.ids) == [1, 3]
    assert dry.indexes == [
        "would leave index email_1 as it is: its replacement cannot be built",
        "would create index email_1 {email: 1} (unique=True), but it cannot be built: "
        "documents _id=1 and _id=3 share email='ada@example.org'",
    ]

    # The run refuses before it drops anything: the old index stays.
    with pytest.raises(UniqueIndexError) as info:
        await Runner(db, RunOptions()).upgrade(Account)
    error = info.value
    assert (error.model, error.collection, error.index) == (
        Account.__model__,
        Account.__model__,
        "index email_1 {email: 1} (unique=True)",
    )
    assert error.key == {"email": "ada@example.org"} and sorted(error.ids) == [1, 3]
    assert "_id=1 and _id=3 share email='ada@example.org'" in str(error)
    assert "index email_1 {email: 1} it replaces was left as it is" in str(error)
    found = await names(collection)
    assert "email_1" in found and not found["email_1"].get("unique"), found
    assert await collection.count_documents({"__version__": "2"}) == 3

    # Once the values are unique, the index is replaced.
    await collection.update_one({"_id": 3}, {"$set": {"email": "cy@example.org"}})
    done = await Runner(db, RunOptions()).upgrade(Account)
    assert done.indexes == [
        "dropped index email_1",
        "created index email_1 {email: 1} (unique=True)",
    ]
    found = await names(collection)
    assert found["email_1"].get("unique"), found
    assert await collection.count_documents({"__version__": "3"}) == 3


async def test_a_new_unique_index_names_the_duplicates(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(Account, 1, 3, operations=[ops.create_index("email", unique=True)])
    collection = await accounts(db, ["a@x", "b@x", "b@x"])
    dry = await Runner(db, RunOptions(dry_run=True)).upgrade(Account)
    assert [e.ids for e in dry.refused] == [[2, 3]]
    with pytest.raises(UniqueIndexError, match=r"_id=2 and _id=3 share email='b@x'") as info:
        await Runner(db, RunOptions()).upgrade(Account)
    assert info.value.kept == ""
    assert set(await names(collection)) <= {"_id_", "atomdb_migrate_version"}
    assert await collection.count_documents({"__version__": "1"}) == 3


async def test_duplicates_the_check_cannot_see_bring_the_old_index_back(
    db: Any, registry: MigrationRegistry
) -> None:
    """Under a case-insensitive collation "Ada" and "ada" are one key: the
    server refuses the build after the old index was dropped, and the run
    creates the old one again before it stops."""
    if is_mongomock(db):
        pytest.skip("mongomock builds no index with a collation")
    insensitive = {"locale": "en", "strength": 2}
    register_step(Account, 1, 2, operations=[ops.create_index("email")])
    register_step(
        Account,
        2,
        3,
        operations=[
            ops.drop_index([("email", 1)]),
            ops.create_index("email", unique=True, collation=insensitive),
        ],
    )
    collection = await accounts(db, ["Ada@example.org", "ada@example.org"])
    await Runner(db, RunOptions()).upgrade(Account, "2")
    runner = Runner(db, RunOptions())
    with pytest.raises(UniqueIndexError) as info:
        await runner.upgrade(Account)
    error = info.value
    assert error.key == {"email": "ada@example.org"} and sorted(error.ids) == [1, 2], error
    assert "it replaces was created again as it was" in str(error)
    (report,) = runner.reports
    assert report.indexes == [
        "dropped index email_1",
        "created index email_1 {email: 1} again, as it was: index email_1 {email: 1} "
        "(unique=True, collation={'locale': 'en', 'strength': 2}) failed",
    ]
    found = await names(collection)
    assert found["email_1"]["key"] == [("email", 1)] and not found["email_1"].get("unique")


# ----------------------------------------------------------------------
# The duplicate check against the server's own unique build
# ----------------------------------------------------------------------
#: Values Python thinks equal (1, 1.0, True, Int64(1)), null, arrays, documents.
VALUES = [0, 1, 1.0, Int64(1), True, False, "1", "a", "A", "", None, [], [1], [1, 1.0]]
VALUES += [["a", "b"], [None], {"x": 1}, {"x": 1.0}, [{"x": 1}, {"x": 2}], [{"x": 1}]]
FIELDS = ("a", "b", "m.x")
MISSING = object()


def _document(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for field in ("a", "b", "m"):
        value = draw(st.sampled_from([MISSING, *VALUES]))
        if value is not MISSING:
            doc[field] = value
    return doc


unique_indexes = st.builds(
    lambda keys, sparse, partial: ops.create_index(
        keys,
        unique=True,
        **({"sparse": True} if sparse else {}),
        **({"partialFilterExpression": partial} if partial else {}),
    ),
    st.lists(
        st.tuples(st.sampled_from(FIELDS), st.sampled_from([1, -1])),
        min_size=1,
        max_size=2,
        unique_by=lambda k: k[0],
    ),
    st.booleans(),
    st.sampled_from([None, {"a": {"$exists": True}}, {"b": {"$gt": 0}}, {"a": "a"}]),
)


@settings(
    max_examples=int(os.environ.get("DUPLICATE_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=st.lists(st.composite(_document)(), min_size=1, max_size=6), index=unique_indexes)
async def test_the_duplicate_check_refuses_only_what_the_server_refuses(
    db: Any, docs: list[dict[str, Any]], index: Any
) -> None:
    """Differential: a key the check says two documents share makes the server
    refuse the build of those two alone; what it misses, the build refuses (and
    the run brings the old index back)."""
    if is_mongomock(db):
        pytest.skip("mongomock compares 1 and True as Python does: the servers only")
    collection = db["indexes.duplicates"]
    await collection.drop()
    await collection.insert_many([{"_id": i, **d} for i, d in enumerate(docs)])
    pipeline = duplicates_pipeline(index)
    assert pipeline is not None
    rows = await to_list(await _aggregate(collection, pipeline))
    try:
        await collection.create_index(index.keys, **index.options)
        built = True
    except OperationFailure as exc:
        if exc.code != 11000:
            event(f"refused otherwise ({exc.code})")  # parallel arrays, say
            return
        built = False
    if not rows:
        event("built" if built else "missed: the build refuses it")
        return
    assert not built, f"the check found {rows} in {docs} for {index!r}; the server built it"
    (row,) = rows
    first, last = row["first"], row["last"]
    assert first != last
    pair = db["indexes.pair"]
    await pair.drop()
    await pair.insert_many([{"_id": i, **docs[i]} for i in (first, last)])
    with pytest.raises(OperationFailure) as info:
        await pair.create_index(index.keys, **index.options)
    assert info.value.code == 11000, (docs[first], docs[last], index, shared_key(index, row))
    event("found, and the two alone are refused")


async def _aggregate(collection: Any, pipeline: list[dict[str, Any]]) -> Any:
    cursor = collection.aggregate(pipeline)
    return await cursor if inspect.isawaitable(cursor) else cursor


async def test_a_unique_index_renamed_over_shared_values_keeps_the_old_one(
    db: Any, registry: MigrationRegistry
) -> None:
    """The same keys under another name: dropped ahead of the create, so checked too;
    documents without the field share null, which the message says."""
    register_step(Account, 1, 2, operations=[ops.create_index("email")])
    register_step(
        Account,
        2,
        3,
        operations=[
            ops.drop_index([("email", 1)]),
            ops.create_index("email", name="by_email", unique=True),
        ],
    )
    collection = await accounts(db, ["a@x", "b@x"])
    await collection.insert_many([{"_id": 10, "__version__": "1"}, {"_id": 11, "__version__": "1"}])
    await Runner(db, RunOptions()).upgrade(Account, "2")
    with pytest.raises(UniqueIndexError) as info:
        await Runner(db, RunOptions()).upgrade(Account)
    assert info.value.ids == [10, 11] and info.value.key == {"email": None}
    assert "share email=None (missing or null)" in str(info.value)
    assert "the index email_1 {email: 1} it replaces was left as it is" in str(info.value)
    assert {"email_1"} <= set(await names(collection)) and "by_email" not in await names(collection)
