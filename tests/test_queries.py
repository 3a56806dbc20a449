"""Version-aware queries: `version_filter`, the conveniences and the query guard.

The property test (test_queries_property.py) proves the translation equal
to an upgrade on random chains; these tests pin what users see: the shape
of the filters (index-friendly, the original where nothing is stored at an
older version), the errors, and the conveniences and guard on real servers.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import time
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from atom.api import Int, Str
from atomdb.base import RestoreError
from bson import Binary, Decimal128, Int64, ObjectId

from atomdb_migrate import (
    InvalidQueryError,
    InvalidVersionError,
    LegacyQueryError,
    LegacyQueryWarning,
    MigrateError,
    MigrationRegistry,
    QueryError,
    RestoreFailedError,
    StepFailedError,
    StepModuleError,
    UntranslatableQueryError,
    VersionedModel,
    count,
    find,
    guard_queries,
    load_migrations,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.driver.mongo import is_mongomock, to_list
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.model.finders import forget_surveys, survey


class Page(VersionedModel):
    __model__ = "queries.Page"
    __version__ = 3

    title = Str()
    views = Int()
    status = Str()
    slug = Str()


def page_steps() -> None:
    """The issue's page: heading -> title (1 -> 2); views added, status lifted (2 -> 3)."""
    register_step(Page, 1, 2, operations=[ops.rename_field("heading", "title")])
    register_step(
        Page,
        2,
        3,
        operations=[ops.add_field("views", 0), ops.move_field("meta.status", "status")],
    )


def clauses(query: dict[str, Any]) -> list[dict[str, Any]]:
    assert list(query) == ["$or"], query
    return list(query["$or"])


# ----------------------------------------------------------------------
# The shape of the filter
# ----------------------------------------------------------------------
def test_a_renamed_field_is_asked_under_its_old_name(registry: MigrationRegistry) -> None:
    page_steps()
    current, legacy = clauses(version_filter(Page, {"title": "Intro"}))
    assert current == {"__version__": {"$nin": ["1", 1]}, "title": "Intro"}
    # A plain path: an index on heading serves it. The second branch is for a
    # legacy document that also had a stray title (the rename overwrites it).
    assert legacy == {
        "__version__": {"$in": ["1", 1]},
        "$or": [{"heading": "Intro"}, {"heading": {"$exists": False}, "title": "Intro"}],
    }


def test_an_added_field_is_decided_for_the_documents_stored_before_it(
    registry: MigrationRegistry,
) -> None:
    page_steps()
    # Every page stored before views existed has views 0 once upgraded.
    assert version_filter(Page, {"views": 0}) == {
        "$or": [
            {"__version__": {"$nin": ["1", 1, "2", 2]}, "views": 0},
            {"__version__": {"$in": ["1", 1, "2", 2]}},
        ]
    }
    # ... and none of them has views above 0, nor views True (a bool is no number).
    for query in ({"views": {"$gt": 0}}, {"views": True}, {"views": {"$exists": False}}):
        assert version_filter(Page, query) == {
            "__version__": {"$nin": ["1", 1, "2", 2]},
            **query,
        }, query
    # 0.0 and Int64(0) are the same number to the server.
    for zero in (0.0, Int64(0)):
        assert clauses(version_filter(Page, {"views": zero}))[1] == {
            "__version__": {"$in": ["1", 1, "2", 2]}
        }


def test_a_moved_field_is_asked_at_its_old_path(registry: MigrationRegistry) -> None:
    page_steps()
    _, legacy = clauses(version_filter(Page, {"status": {"$in": ["draft", "live"]}}))
    assert legacy["__version__"] == {"$in": ["1", 1, "2", 2]}
    first, second = legacy["$or"]
    assert first == {
        "meta": {"$not": {"$type": "array"}},
        "meta.status": {"$in": ["draft", "live"]},
    }
    assert "$nor" in second and second["status"] == {"$in": ["draft", "live"]}


def test_a_filter_no_step_touches_is_returned_as_it_is(registry: MigrationRegistry) -> None:
    page_steps()
    for query in ({"slug": "a"}, {"_id": 3}, {}, {"$or": [{"slug": "a"}, {"_id": {"$gt": 2}}]}):
        assert version_filter(Page, query) == query


def test_only_the_versions_still_stored_get_a_clause(registry: MigrationRegistry) -> None:
    page_steps()
    # Nothing stored below the head: the filter costs nothing extra.
    assert version_filter(Page, {"title": "Intro"}, versions=[]) == {"title": "Intro"}
    assert version_filter(Page, {"title": "Intro"}, versions=["3", 3.0]) == {"title": "Intro"}
    # Only version 2 stored: title is not asked under its old name.
    assert version_filter(Page, {"title": "Intro"}, versions=["2", None]) == {"title": "Intro"}
    # A version stored as a double is matched in that form too.
    # (No page stored at 2 has views 5 once upgraded: it has 0.)
    assert version_filter(Page, {"views": 5}, versions=[2.0]) == {
        "__version__": {"$nin": ["2", 2, 2.0]},
        "views": 5,
    }


def test_conversions_alone_use_expr(registry: MigrationRegistry) -> None:
    register_step(Page, 1, 2, operations=[ops.convert("views", "int")])
    register_step(Page, 2, 3, operations=[ops.rename_field("heading", "title")])
    query = version_filter(Page, {"views": {"$gte": 10}, "title": "x"})
    text = repr(query)
    current = clauses(query)[0]
    assert "$expr" not in repr(current)
    assert text.count("'$expr'") == 1, text  # in version 1's clause only


def test_versions_whose_clauses_are_the_same_share_one(registry: MigrationRegistry) -> None:
    register_step(Page, 0, 1, operations=[ops.rename_field("heading", "title")])
    register_step(Page, 1, 2, operations=[ops.add_field("slug", "")])
    register_step(Page, 2, 3, operations=[ops.add_field("views", 0)])
    query = version_filter(Page, {"title": "Intro"})
    current, legacy = clauses(query)
    assert legacy["__version__"] == {"$in": ["0", 0, None]}  # 1 and 2 share the current clause
    assert current["__version__"] == {"$nin": ["0", 0, None]}


def test_references_to_a_renamed_model_are_asked_under_both_names(
    registry: MigrationRegistry,
) -> None:
    # Pages were stored as old.Page, with references to their parent page.
    register_step(Page, 2, 3, operations=[ops.rename_model("old.Page", "queries.Page")])
    # upgrade rewrites the references of every document, at any version.
    assert version_filter(Page, {"parent.__model__": "queries.Page"}) == {
        "parent.__model__": {"$in": ["queries.Page", "old.Page"]},
    }
    # After the rename no reference holds the old name.
    assert version_filter(Page, {"parent.__model__": "old.Page"}) == {"_id": {"$in": []}}
    # The document's own name changes with its version only.
    _, legacy = clauses(version_filter(Page, {"__model__": "queries.Page"}))
    assert legacy == {
        "__version__": {"$in": ["2", 2]},
        "__model__": {"$in": ["queries.Page", "old.Page"]},
    }
    # A condition the rename does not decide (both names alike) passes as it is.
    assert version_filter(Page, {"parent.__model__": {"$regex": "Page$"}}) == {
        "parent.__model__": {"$regex": "Page$"}
    }
    with pytest.raises(UntranslatableQueryError, match="model names inside the references"):
        version_filter(Page, {"parent": {"_id": 1, "__ref__": 1, "__model__": "queries.Page"}})


# ----------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------
def test_a_python_step_refuses_every_field_unless_it_says_what_it_changes(
    registry: MigrationRegistry,
) -> None:
    def make_slug(doc: dict[str, Any]) -> None:
        doc["slug"] = doc["title"].lower()

    register_step(Page, 2, 3, make_slug)
    with pytest.raises(UntranslatableQueryError) as caught:
        version_filter(Page, {"title": "Intro"})
    error = caught.value
    assert isinstance(error, QueryError) and isinstance(error, MigrateError)
    assert (error.field, error.version) == ("title", "2")
    assert "make_slug" in error.step and "changes = [...]" in str(error)
    # The _id passes: a step may not change it.
    assert version_filter(Page, {"_id": 7}) == {"_id": 7}


def test_declared_changes_let_other_fields_through(registry: MigrationRegistry) -> None:
    def make_slug(doc: dict[str, Any]) -> None:
        doc["slug"] = doc["title"].lower()

    register_step(Page, 1, 2, operations=[ops.rename_field("heading", "title")])
    register_step(Page, 2, 3, make_slug, changes=["slug"])
    _, legacy = clauses(version_filter(Page, {"title": "Intro"}))
    assert legacy["$or"][0] == {"heading": "Intro"}
    with pytest.raises(UntranslatableQueryError, match="declares it changes 'slug'"):
        version_filter(Page, {"slug": "intro"})
    # Not for versions no longer stored: after the upgrade of version 2, slug is fine.
    assert version_filter(Page, {"slug": "intro"}, versions=["3"]) == {"slug": "intro"}


def test_a_step_module_declares_its_changes(registry: MigrationRegistry, tmp_path: Path) -> None:
    (tmp_path / "0001_slug.py").write_text(
        textwrap.dedent(
            '''
            """Slugs from titles."""
            model = "queries.Page"
            from_version = "2"
            to_version = "3"
            changes = ["slug"]

            def upgrade(doc):
                doc["slug"] = doc.get("title", "").lower()
            '''
        )
    )
    load_migrations(tmp_path)
    assert version_filter(Page, {"title": "x"}) == {"title": "x"}
    with pytest.raises(UntranslatableQueryError) as caught:
        version_filter(Page, {"slug": {"$regex": "^a"}})
    assert caught.value.step.endswith("0001_slug.py") and caught.value.field == "slug"


@pytest.mark.parametrize("changes", ['"slug"', '[""]', '["_id"]', "[1]", '["$set"]'])
def test_a_step_module_with_bad_changes_names_its_line(
    registry: MigrationRegistry, tmp_path: Path, changes: str
) -> None:
    (tmp_path / "0001_bad.py").write_text(
        f'model = "queries.Page"\nfrom_version = "2"\nto_version = "3"\nchanges = {changes}\n'
        "def upgrade(doc):\n    pass\n"
    )
    with pytest.raises(StepModuleError, match=r"0001_bad.py:4: changes"):
        load_migrations(tmp_path)


def test_a_condition_on_a_whole_document_a_step_changes_inside_is_refused(
    registry: MigrationRegistry,
) -> None:
    page_steps()
    with pytest.raises(UntranslatableQueryError, match="changes what 'meta' holds") as caught:
        version_filter(Page, {"meta": {"pinned": True}})
    assert caught.value.field == "meta"
    # What the document is (there, a document) is known, whatever it holds.
    assert version_filter(Page, {"meta": {"$exists": True}})


BAD_FILTERS = [
    ([], "the filter", "a filter must be a dict"),
    ({"$where": "1"}, "the filter", "operator '$where' is not supported"),
    ({"$expr": {"$eq": [1, 1]}}, "the filter", "'$expr' is not supported"),
    ({"title": {"$size": 2}}, "'title'", "'$size' is not supported"),
    ({"title": {"$in": "abc"}}, "'title'", "$in needs a list"),
    ({"title": {"$regex": 5}}, "'title'", "$regex needs a string"),
    ({"title": {"$regex": "a", "$options": "q"}}, "'title'", "only i, m, s and x"),
    ({"title": {"$options": "i"}}, "'title'", "$options without $regex"),
    ({"title": {"$eq": 1, "x": 2}}, "'title'", "mixes operators and field names"),
    ({"title": {"$not": 5}}, "'title'", "$not needs operators"),
    ({"title": {"$elemMatch": 5}}, "'title'", "$elemMatch needs a document"),
    ({"title": {"$type": "nonsense"}}, "'title'", "not a BSON type"),
    ({"title": {"$gt": [1]}}, "'title'", "compares with a list"),
    ({"title": {"$eq": re.compile("a")}}, "'title'", "use $regex"),
    ({"$and": []}, "the filter", "non-empty list"),
    ({"$or": {"a": 1}}, "the filter", "non-empty list"),
    ({"": 1}, "''", "empty name"),
    ({"a..b": 1}, "'a..b'", "empty name"),
    ({"a.$b": 1}, "'a.$b'", "may not start with '$'"),
    ({"__version__": "3"}, "'__version__'", "the versions are its to add"),
    ({3: 1}, "the filter", "must be a string"),
]


@pytest.mark.parametrize(("query", "where", "problem"), BAD_FILTERS)
def test_a_bad_filter_gets_a_clear_error(
    registry: MigrationRegistry, query: Any, where: str, problem: str
) -> None:
    page_steps()
    with pytest.raises(InvalidQueryError) as caught:
        version_filter(Page, query)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith(where if where == "the filter" else f"the condition on {where}")
    assert problem in message, message


def test_hostile_values_are_compared_not_obeyed(registry: MigrationRegistry) -> None:
    page_steps()
    hostile = {"$where": "sleep(1000)", "a.b": 1, "'); drop": "\u202e\x00"}
    # A value is a value: a document with $ keys in an equality, a 1 MB string.
    current, legacy = clauses(version_filter(Page, {"title": {"$eq": hostile}}))
    assert current["title"] == {"$eq": hostile}
    assert legacy["$or"][0] == {"heading": {"$eq": hostile}}
    big = "x" * 1_000_000
    assert clauses(version_filter(Page, {"title": big}))[1]["$or"][0] == {"heading": big}


# ----------------------------------------------------------------------
# On a server: the conveniences and the guard
# ----------------------------------------------------------------------
#: The pages' _ids, by number (atom-db's _id is an ObjectId).
IDS = {i: ObjectId(f"{i:024x}") for i in range(1, 6)}


async def legacy_pages(db: Any) -> Any:
    """Pages stored at versions 1, 2 and 3, the way each version of the code stored them."""
    collection = db[Page.__model__]
    await collection.insert_many(
        [
            {"_id": IDS[1], "heading": "Intro", "meta": {"status": "live"}, "__version__": "1"},
            {"_id": IDS[2], "title": "Intro", "meta": {"status": "draft"}, "__version__": 2},
            {"_id": IDS[3], "title": "Intro", "status": "live", "views": 4, "__version__": "3"},
            {"_id": IDS[4], "title": "Other", "status": "live", "views": 0, "__version__": "3"},
            {"_id": IDS[5], "heading": "Other", "__version__": 1.0},
        ]
    )
    return collection


async def test_find_count_and_find_one_see_every_version(
    db: Any, registry: MigrationRegistry
) -> None:
    page_steps()
    collection = await legacy_pages(db)
    assert await collection.count_documents({"title": "Intro"}) == 2  # the trap
    pages = await Page.find({"title": "Intro"})
    assert sorted(p._id for p in pages) == [IDS[1], IDS[2], IDS[3]]
    assert {p.title for p in pages} == {"Intro"}  # restored, upgraded lazily
    assert await Page.count({"status": "live"}) == 3
    assert await count(Page, {"views": 0}) == 4  # stored before views existed, or 0
    assert await Page.count({"views": {"$gt": 0}}) == 1
    page = await Page.find_one({"title": "Other", "views": 0, "status": {"$exists": False}})
    assert page is not None and page._id == IDS[5] and page.views == 0
    assert await Page.find_one({"title": "Nowhere"}) is None
    assert len(await find(Page, {}, limit=2)) == 2


async def test_find_can_skip_and_report_documents_a_step_fails_on(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(Page, 1, 2, operations=[ops.rename_field("heading", "title")])

    def lift(doc: dict[str, Any]) -> None:
        if doc.get("meta", {}).get("status") == "draft":
            raise ValueError("drafts are not lifted")
        doc["status"] = doc.pop("meta", {}).get("status", "")
        doc.setdefault("views", 0)

    register_step(Page, 2, 3, lift, changes=["meta", "status", "views"])
    await legacy_pages(db)
    await db[Page.__model__].insert_one(
        {"_id": ObjectId(f"{9:024x}"), "title": "Intro", "__version__": "not a version"}
    )
    # count counts every match (the malformed version is asked as stored);
    # find, by default, raises naming the document.
    assert await Page.count({"title": "Intro"}) == 4
    with pytest.raises(StepFailedError) as raised:
        await Page.find({"title": "Intro"})
    assert raised.value.doc_id == IDS[2] and f"_id={IDS[2]!r}" in str(raised.value)
    # on_error="skip": the others, and the errors of those left out.
    found = await Page.find({"title": "Intro"}, on_error="skip")
    assert sorted(p._id for p in found) == [IDS[1], IDS[3]]
    assert {e.doc_id for e in found.skipped} == {IDS[2], ObjectId(f"{9:024x}")}
    assert {type(e) for e in found.skipped} == {StepFailedError, InvalidVersionError}
    # A failed restore leaves no empty object in atom-db's cache for the next read.
    with pytest.raises(StepFailedError):
        await Page.find({"title": "Intro"})
    assert IDS[2] not in Page.objects.cache
    everything = await find(Page, {}, on_error="skip")
    assert len(everything) + len(everything.skipped) == await Page.objects.count_documents({})
    assert {e.doc_id for e in everything.skipped} == {IDS[2], ObjectId(f"{9:024x}")}
    with pytest.raises(ValueError, match="on_error"):
        await find(Page, {}, on_error="ignore")  # type: ignore[arg-type]


class StrictPage(VersionedModel):
    """A page whose fields raise on restore (atom-db's ``__on_error__ = "raise"``)."""

    __model__ = "queries.StrictPage"
    __version__ = 2
    __on_error__ = "raise"

    title = Str()
    views = Int()


async def test_a_document_that_does_not_restore_is_named_and_can_be_skipped(
    db: Any, registry: MigrationRegistry
) -> None:
    # The step runs, but what it leaves does not fit the model: atom-db's
    # RestoreError named neither the document nor the model, skip did not
    # take it, and the half-restored object answered the next read.
    register_step(
        StrictPage, 1, 2, lambda doc: doc.update(views=doc.pop("hits", "many")), changes=["views"]
    )
    await db[StrictPage.__model__].insert_many(
        [
            {"_id": IDS[1], "title": "Intro", "hits": 3, "__version__": "1"},
            {"_id": IDS[2], "title": "Intro", "__version__": "1"},
            {"_id": IDS[3], "title": "Intro", "views": "x", "__version__": "2"},
            {"_id": IDS[4], "title": "Intro", "views": 1, "__version__": "2"},
        ]
    )
    with pytest.raises(RestoreError) as raised:  # still atom-db's error
        await StrictPage.find({"title": "Intro"})
    assert isinstance(raised.value, RestoreFailedError)
    assert raised.value.doc_id == IDS[2] and raised.value.field == "views"
    assert f"_id={IDS[2]!r}" in str(raised.value) and "'views'" in str(raised.value)
    found = await StrictPage.find({"title": "Intro"}, on_error="skip")
    assert sorted(p._id for p in found) == [IDS[1], IDS[4]]
    assert [e.doc_id for e in found.skipped] == [IDS[2], IDS[3]]
    # The errors kept (and their tracebacks) hold no object the next read returns.
    again = await StrictPage.find({"title": "Intro"}, on_error="skip")
    assert sorted(p._id for p in again) == [IDS[1], IDS[4]]
    assert [e.doc_id for e in again.skipped] == [IDS[2], IDS[3]]
    with pytest.raises(RestoreFailedError):
        await StrictPage.find_one({"_id": IDS[3]})


async def test_stored_asks_only_the_versions_a_survey_finds(
    db: Any, registry: MigrationRegistry
) -> None:
    page_steps()
    collection = await legacy_pages(db)
    forget_surveys(Page)
    assert await Page.count({"title": "Intro"}, stored=True) == 3
    counted = await survey(Page)
    assert sorted(str(raw) for raw in counted.values) == ["1", "1.0", "2", "3"]
    # The survey is cached: documents written since are not surveyed again...
    await collection.delete_many({"__version__": {"$in": ["1", 1, "2", 2]}})
    assert await survey(Page) is counted
    # ... until it is forgotten (or older than its max age): then the filter is the original.
    forget_surveys()
    assert [raw for raw in (await survey(Page)).values] == ["3"]
    assert await Page.count({"title": "Intro"}, stored=True) == 1


async def test_the_guard_reports_a_query_that_misses_legacy_documents(
    db: Any, registry: MigrationRegistry
) -> None:
    page_steps()
    await legacy_pages(db)
    forget_surveys()
    guard_queries("warn")
    try:
        with pytest.warns(LegacyQueryWarning, match=r"misses 1 document\(s\) stored at versions"):
            assert await Page.objects.count_documents({"status": "live"}) == 2
        with pytest.warns(LegacyQueryWarning, match="misses 1 document"):
            assert len(await Page.objects.find({"title": "Intro"}).to_list(None)) == 2
        # The page stored at 1.0 with no views has views 0 once upgraded.
        with pytest.warns(LegacyQueryWarning, match="misses 3 document"):
            assert await Page.objects.count_documents({"views": 0}) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # _id alone, a field no step changed, and the toolkit's own filters pass.
            assert await Page.objects.find_one({"_id": IDS[3]}) is not None
            assert await Page.objects.count_documents({"slug": "x"}) == 0
            assert await Page.objects.count_documents({"_id": IDS[1], "__version__": "1"}) == 1
            # A query the legacy documents would not match anyway is not reported.
            assert await Page.objects.count_documents({"views": {"$gt": 0}}) == 1
        guard_queries("error")
        with pytest.raises(LegacyQueryError) as caught:
            async for _ in Page.objects.find({"status": "live"}).sort("_id"):
                pass  # pragma: no cover - raised before the first document
        assert caught.value.missed == 1 and caught.value.versions == ["1", "2"]
        with pytest.raises(LegacyQueryError):
            await Page.objects.update_many({"title": "Intro"}, {"$set": {"slug": "intro"}})
        assert await db[Page.__model__].count_documents({"slug": "intro"}) == 0  # not run
    finally:
        guard_queries("off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await Page.objects.count_documents({"status": "live"}) == 2


async def test_the_guard_says_when_a_python_step_hides_what_a_query_would_match(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(Page, 2, 3, lambda doc: doc.update(slug=doc["title"].lower()))
    await db[Page.__model__].insert_one({"_id": IDS[1], "title": "A", "__version__": "2"})
    forget_surveys()
    guard_queries("error")
    try:
        with pytest.raises(LegacyQueryError, match="may miss or mismatch the 1 document"):
            await Page.objects.find_one({"slug": "a"})
    finally:
        guard_queries("off")


def test_guard_queries_refuses_an_unknown_action() -> None:
    with pytest.raises(MigrateError, match="'warn', 'error' or 'off'"):
        guard_queries("loud")  # type: ignore[arg-type]


async def test_a_query_through_the_translation_keeps_to_the_index(
    db: Any, backend: str, registry: MigrationRegistry
) -> None:
    if not backend.startswith("mongo-"):
        pytest.skip(
            "MongoDB's planner runs an $or of indexed clauses on the indexes; mongomock has no "
            "planner and SecantusDB scans for any $or (set MONGO_URL to run it)"
        )
    page_steps()
    collection = await legacy_pages(db)
    await collection.create_index("title")
    await collection.create_index("heading")
    plan = await db.command(
        "explain",
        {"find": Page.__model__, "filter": version_filter(Page, {"title": "Intro"})},
        verbosity="queryPlanner",
    )
    text = repr(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in text, text
    assert sorted(
        d["_id"] for d in await to_list(collection.find(version_filter(Page, {"title": "Intro"})))
    ) == [IDS[1], IDS[2], IDS[3]]


# ----------------------------------------------------------------------
# What a hostile pass found: each case against the server's own answer
# ----------------------------------------------------------------------
class Item(VersionedModel):
    __model__ = "queries.Item"
    __version__ = 2


class Renamed(VersionedModel):
    __model__ = "queries.Renamed"
    __version__ = 2


async def same_answer(
    db: Any, model: Any, operations: list[Any], doc: dict[str, Any], query: dict[str, Any]
) -> tuple[int, int]:
    """Documents the query selects once upgraded, and that its translation selects as stored.

    A document a step fails on stays as it is, as ``upgrade`` leaves it.
    """
    with MigrationRegistry.instance().isolated():
        register_step(model, 1, 2, operations=operations)
        mixed, upgraded = db["hostile.mixed"], db["hostile.upgraded"]
        await mixed.delete_many({})
        await upgraded.delete_many({})
        stored = {"_id": 1, "__version__": "1", **doc}
        try:
            after = await model.upgrade_state(dict(stored))
        except MigrateError:
            after = stored
        await mixed.insert_one(stored)
        await upgraded.insert_one(after)
        want = await upgraded.count_documents(query)
        got = await mixed.count_documents(version_filter(model, query))
        return want, got


AWARE = datetime(2020, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
HOSTILE_CASES = [
    # (operations, stored document, query, runs on mongomock)
    ([ops.convert("a", "float")], {"a": float("nan")}, {"a": {"$lt": 10}}, False),
    ([ops.convert("a", "float")], {"a": 5.0}, {"a": {"$gt": float("nan")}}, False),
    ([ops.convert("a", "float")], {"a": float("nan")}, {"a": {"$gte": float("nan")}}, False),
    ([ops.add_field("d", AWARE)], {}, {"d": datetime(2020, 1, 1, 10)}, True),
    ([ops.add_field("d", AWARE)], {}, {"d": {"$gt": datetime(2020, 1, 1, 11)}}, True),
    ([ops.add_field("i", float("inf"))], {}, {"i": Decimal128("Infinity")}, False),
    ([ops.add_field("i", float("inf"))], {}, {"i": Decimal128("1E+400")}, False),
    ([ops.add_field("b", 5)], {}, {"b": {"$lt": Decimal128("Infinity")}}, False),
    ([ops.add_field("b", float("nan"))], {}, {"b": {"$in": [Decimal128("NaN")]}}, False),
    ([ops.add_field("t", [5])], {}, {"t": {"$elemMatch": {"k": None}}}, True),
    ([ops.add_field("t", [5, {"j": 1}])], {}, {"t": {"$elemMatch": {"k": None}}}, True),
    # (mongomock looks into a list inside the list; the servers do not)
    ([ops.add_field("s", [[1, 2]])], {}, {"s": {"$elemMatch": {"$gt": 1}}}, False),
    ([ops.add_field("s", [[1, 2], 3])], {}, {"s": {"$elemMatch": {"$gt": 1}}}, False),
    (
        [ops.convert("code", "str")],
        {"code": 5},
        {"code": Binary.from_uuid(uuid.UUID(int=5))},
        False,
    ),
    ([ops.convert("a", "int")], {"a": "abc"}, {"a": "abc"}, False),
    ([ops.convert("a", "int")], {"a": "abc"}, {"a": {"$type": "object"}}, False),
    ([ops.convert("a", "int")], {"a": "abc"}, {"a": {"$ne": 5}}, False),
]


@pytest.mark.parametrize(
    ("operations", "doc", "query", "on_mongomock"),
    HOSTILE_CASES,
    ids=[f"{c[0][0]!r}-{c[2]!r}" for c in HOSTILE_CASES],
)
async def test_what_a_hostile_pass_found_answers_as_the_upgrade_does(
    db: Any, operations: list[Any], doc: dict[str, Any], query: dict[str, Any], on_mongomock: bool
) -> None:
    if is_mongomock(db) and not on_mongomock:
        pytest.skip("NaN, Decimal128 and $expr conversions are compared on the real servers")
    want, got = await same_answer(db, Item, operations, doc, query)
    assert got == want, f"{query!r}: the upgraded copy gives {want}, the translation {got}"


async def test_a_regex_pcre_reads_otherwise_is_not_decided_in_python(
    registry: MigrationRegistry,
) -> None:
    register_step(Item, 1, 2, operations=[ops.add_field("b", "x\n")])
    for pattern in (r"x\Z", r"^\d$", "(?<n>x)", "a++"):
        with pytest.raises(UntranslatableQueryError, match="decided by the server's PCRE only"):
            version_filter(Item, {"b": {"$regex": pattern}})
    # A pattern only PCRE reads is no bad filter: on a field no step sets it passes.
    assert version_filter(Item, {"c": {"$regex": "(?<n>x)"}}) == {"c": {"$regex": "(?<n>x)"}}
    assert clauses(version_filter(Item, {"b": {"$regex": "^x$"}}))[1] == {
        "__version__": {"$in": ["1", 1]}
    }


async def test_a_regex_asking_for_the_new_model_name_finds_the_old_one(
    db: Any, registry: MigrationRegistry
) -> None:
    renamed = [ops.rename_model("old.Renamed", "queries.Renamed")]
    for query in (
        {"__model__": {"$in": [re.compile("^queries")]}},
        {"__model__": {"$regex": "^queries"}},
        {"ref.__model__": {"$in": ["x", re.compile("Renamed$")]}},
    ):
        doc = {"__model__": "old.Renamed", "ref": {"_id": 1, "__model__": "old.Renamed"}}
        want, got = await same_answer(db, Renamed, renamed, doc, query)
        assert (want, got) == (1, 1), query
    # Asking for the old name with a regex: the regex, but not the old name itself.
    for query in (
        {"__model__": {"$regex": "^old"}},
        {"ref.__model__": {"$not": {"$regex": "^old"}}},
        {"ref.__model__": {"$in": ["x", re.compile("^old")]}},
        {"ref.__model__": {"$lt": "p"}},
        {"__model__": {"$lte": "old.Renamed"}},
    ):
        doc = {"__model__": "old.Renamed", "ref": {"_id": 1, "__model__": "old.Renamed"}}
        want, got = await same_answer(db, Renamed, renamed, doc, query)
        assert got == want, query


async def test_every_form_of_a_stored_version_is_found(
    db: Any, registry: MigrationRegistry
) -> None:
    page_steps()
    collection = db[Page.__model__]
    forms: list[Any] = ["1", 1, 1.0, Int64(1)]
    if not is_mongomock(db):
        forms.append(Decimal128("1"))
    await collection.insert_many(
        [{"_id": ObjectId(), "heading": "Intro", "__version__": v} for v in forms]
    )
    assert await Page.count({"title": "Intro"}) == len(forms)
    # Spellings a hand wrote are found by the survey's values.
    await collection.insert_many(
        [{"_id": ObjectId(), "heading": "Intro", "__version__": v} for v in ("1.0", "v1", "01")]
    )
    forget_surveys()
    assert await Page.count({"title": "Intro"}, stored=True) == len(forms) + 3
    with pytest.raises(TypeError, match="a list of stored versions"):
        version_filter(Page, {"title": "Intro"}, versions="12")


async def test_a_decimal_version_runs_on_the_server(db: Any, registry: MigrationRegistry) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock stores no Decimal128 it can compare")
    page_steps()
    await db[Page.__model__].insert_one(
        {"_id": ObjectId(), "heading": "Intro", "__version__": Decimal128("1")}
    )
    report = await Runner(db, RunOptions()).upgrade(Page)
    assert report.failed == 0
    assert await db[Page.__model__].count_documents({"title": "Intro", "__version__": "3"}) == 1


def test_changes_given_as_an_iterator_are_kept(registry: MigrationRegistry) -> None:
    step_ = register_step(Page, 2, 3, lambda doc: None, changes=(f for f in ["slug"]))
    assert step_.changes == ("slug",)
    with pytest.raises(UntranslatableQueryError):
        version_filter(Page, {"slug": "intro"})
    with pytest.raises(TypeError):
        register_step(Page, 1, 2, lambda doc: None, changes="slug")


def test_other_valid_filters_are_accepted(registry: MigrationRegistry) -> None:
    page_steps()
    for query in (
        {"slug": {"$type": ["javascript", "symbol", "undefined", 13]}},
        {"slug": {"$ref": "pages", "$id": 3}},
        {"slug": {"$regex": r"x\z"}},
        {"slug": uuid.UUID(int=1)},
    ):
        assert version_filter(Page, query) == query


async def test_the_guard_reports_what_a_query_selects_too(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(
        Page, 2, 3, operations=[ops.rename_field("heading", "title"), ops.add_field("views", 0)]
    )
    await db[Page.__model__].insert_many(
        [
            {"_id": IDS[1], "heading": "A", "views": 7, "__version__": "2"},  # a stray views
            {"_id": IDS[2], "title": "A", "views": 7, "__version__": "3"},
        ]
    )
    forget_surveys()
    guard_queries("error")
    try:
        with pytest.raises(LegacyQueryError, match=r"selects 1 document\(s\) it") as caught:
            await Page.objects.delete_many({"views": 7})
        assert (caught.value.missed, caught.value.extra) == (0, 1)
        with pytest.raises(LegacyQueryError):
            await Page.objects.replace_one({"title": "A"}, {"title": "B"})
        cursor = Page.objects.find({"title": "A"})
        with pytest.raises(LegacyQueryError):
            await cursor.clone().to_list(None)
        guard_queries("warn")
        with pytest.warns(LegacyQueryWarning) as caught_warnings:
            await Page.objects.count_documents({"title": "A"})
            await Page.objects.find({"title": "A"}).to_list(None)
        # Each warning points at the line that made the query.
        assert {Path(w.filename).name for w in caught_warnings} == {"test_queries.py"}
    finally:
        guard_queries("off")
    assert await Page.count({"views": 7}) == 1


# ----------------------------------------------------------------------
# What a second hostile pass found
# ----------------------------------------------------------------------
def test_a_filter_that_would_grow_without_end_is_refused_quickly(
    registry: MigrationRegistry,
) -> None:
    # Each step moves the field back: every step multiplies the cases.
    for i in range(1, 11):
        there, back = ("a", "x.a") if i % 2 else ("x.a", "a")
        register_step(Item, f"0.{i}", f"0.{i + 1}", operations=[ops.move_field(there, back)])
    register_step(Item, "0.11", 1, operations=[])
    register_step(Item, 1, 2, operations=[])
    began = time.perf_counter()
    with pytest.raises(UntranslatableQueryError, match="would grow past 400 conditions"):
        version_filter(Item, {"a": 5})
    assert time.perf_counter() - began < 10
    # The versions near the head are still translated.
    assert version_filter(Item, {"a": 5}, versions=["0.10"])


@pytest.mark.parametrize(
    ("doc", "query"),
    [
        ({"a": [5]}, {"a": 5}),
        ({"a": [5]}, {"a": {"$gt": 1}}),
        ({"a": [5]}, {"a": {"$elemMatch": {"$eq": 5}}}),
        ({"a": [5]}, {"a.0": 5}),
        ({"a": {"k": 1}}, {"a.k": 1}),
        ({"a": {"k": 1}}, {"a": {"k": 1}}),
        ({"a": [5]}, {"a": {"$ne": 5}}),
        ({"a": {"k": 1}}, {"$nor": [{"a.k": 1}]}),
    ],
)
async def test_a_list_or_a_document_a_conversion_fails_on_is_asked_as_stored(
    db: Any, doc: dict[str, Any], query: dict[str, Any]
) -> None:
    if is_mongomock(db):
        pytest.skip("conversions in $expr run on the real servers")
    want, got = await same_answer(db, Item, [ops.convert("a", "int")], doc, query)
    assert got == want, query


def test_inside_a_datetime_conversion_is_refused(registry: MigrationRegistry) -> None:
    register_step(Item, 1, 2, operations=[ops.convert("d", "datetime")])
    for query in ({"d.year": 2020}, {"d": {"year": 2020}}, {"d": {"$in": [{"year": 1}]}}):
        with pytest.raises(UntranslatableQueryError, match="leaves a document it fails on"):
            version_filter(Item, query)
    assert version_filter(Item, {"d": {"$gte": datetime(2020, 1, 1)}})


async def test_the_guard_refuses_every_read_of_a_refused_cursor(
    db: Any, registry: MigrationRegistry
) -> None:
    page_steps()
    await legacy_pages(db)
    forget_surveys()
    guard_queries("error")
    try:
        cursor = Page.objects.find({"title": "Intro"})
        for _ in range(2):
            with pytest.raises(LegacyQueryError):
                await cursor.to_list(None)
        together = await asyncio.gather(
            cursor.to_list(None), cursor.to_list(None), return_exceptions=True
        )
        assert all(isinstance(r, LegacyQueryError) for r in together), together
        with pytest.raises(LegacyQueryError):
            await Page.objects.find({"title": "Intro"}).distinct("_id")
        async with Page.objects.find({"slug": "x"}) as fine:  # an async context manager
            assert await fine.to_list(None) == []
    finally:
        guard_queries("off")
