"""Index operations: created before a step's document changes, dropped after them."""

from __future__ import annotations

from typing import Any

import pytest
from atom.api import Str

from atomdb_migrate import (
    ConfigError,
    IrreversibleOperationError,
    MigrationRegistry,
    VersionedModel,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.mongo import is_mongomock
from atomdb_migrate.runner import DOWNGRADE, Runner, RunOptions


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
