"""Queries that answered wrong without an error: each case against the upgrade's answer.

Each test here failed before its fix. The property tests over generated
inputs are in test_queries_property.py (translations against an upgraded
copy) and here (arguments mutated after every call; PCRE-only patterns).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    LegacyQueryError,
    MigrationRegistry,
    VersionedModel,
    count,
    find,
    guard_queries,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.model.finders import find_one, forget_surveys
from atomdb_migrate.queries.version_filters import _cache


class Page(VersionedModel):
    __model__ = "wrong.Page"
    __version__ = 2


#: How many filters the argument-mutation property draws.
MUTATION_EXAMPLES = int(os.environ.get("QUERY_MUTATION_EXAMPLES", "60"))


def mutate(value: Any) -> int:
    """Change every list and dict inside `value` in place; how many were changed."""
    changed = 0
    if isinstance(value, dict):
        for item in list(value.values()):
            changed += mutate(item)
        value["zz_mutated"] = 99
        changed += 1
    elif isinstance(value, list):
        for item in list(value):
            changed += mutate(item)
        value.append(99)
        value.insert(0, "mutated")
        changed += 1
    return changed


# ----------------------------------------------------------------------
# Item 7: nothing cached may alias an argument (or a result)
# ----------------------------------------------------------------------
def test_a_list_changed_after_the_call_does_not_change_the_next_answer(
    registry: MigrationRegistry,
) -> None:
    register_step(Page, 1, 2, operations=[ops.rename_field("writer", "author")])
    sel = [1, 2]
    first = version_filter(Page, {"author": {"$in": sel}})
    sel.append(3)
    assert version_filter(Page, {"author": {"$in": [1, 2]}}) == first
    # The result is the caller's too: changing it changes nothing cached.
    mutate(first)
    assert version_filter(Page, {"author": {"$in": [1, 2]}}) != first


FILTER_VALUES = st.recursive(
    st.sampled_from([1, 2, "x", None]),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3), st.dictionaries(st.sampled_from(["k", "j"]), inner)
    ),
    max_leaves=6,
)
CONDITIONS = st.one_of(
    FILTER_VALUES,
    st.builds(lambda v: {"$in": v}, st.lists(FILTER_VALUES, min_size=1, max_size=3)),
    st.builds(lambda v: {"$nin": v}, st.lists(FILTER_VALUES, min_size=1, max_size=3)),
    st.builds(lambda v: {"$ne": v}, FILTER_VALUES),
    st.builds(lambda v: {"$elemMatch": {"k": v}}, FILTER_VALUES),
    st.builds(lambda v: {"$not": {"$in": v}}, st.lists(FILTER_VALUES, min_size=1, max_size=2)),
)
FILTERS = st.one_of(
    st.builds(lambda p, c: {p: c}, st.sampled_from(["author", "tags", "other"]), CONDITIONS),
    st.builds(
        lambda op, c1, c2: {op: [{"author": c1}, {"tags": c2}]},
        st.sampled_from(["$and", "$or", "$nor"]),
        CONDITIONS,
        CONDITIONS,
    ),
)

#: Mutations made by the property below, per entry point (reported by the test).
MUTATIONS: dict[str, int] = {}


@settings(
    max_examples=MUTATION_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(query=FILTERS, versions=st.sampled_from([None, ["1"], [1, "1"]]))
def test_version_filter_keeps_no_argument_nor_result(
    registry: MigrationRegistry, query: dict[str, Any], versions: list[Any] | None
) -> None:
    with MigrationRegistry.instance().isolated():
        register_step(Page, 1, 2, operations=[ops.rename_field("writer", "author")])
        fresh = version_filter(Page, copy.deepcopy(query), versions=copy.deepcopy(versions))
        _cache.clear()
        argument, stored = copy.deepcopy(query), copy.deepcopy(versions)
        answer = version_filter(Page, argument, versions=stored)
        assert answer == fresh
        n = mutate(argument) + (mutate(stored) if stored is not None else 0) + mutate(answer)
        MUTATIONS["version_filter"] = MUTATIONS.get("version_filter", 0) + n
        again = version_filter(Page, copy.deepcopy(query), versions=copy.deepcopy(versions))
        assert again == fresh, (query, again, fresh)


async def pages(db: Any) -> Any:
    collection = db[Page.__model__]
    await collection.insert_many(
        [
            {"_id": ObjectId(), "writer": 1, "__version__": "1"},
            {"_id": ObjectId(), "writer": 2, "__version__": "1"},
            {"_id": ObjectId(), "writer": 3, "__version__": "1"},
            {"_id": ObjectId(), "author": 3, "__version__": "2"},
        ]
    )
    return collection


ENTRY_POINTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "count": lambda q: count(Page, q),
    "Page.count": lambda q: Page.count(q),
    "find": lambda q: find(Page, q),
    "find_one": lambda q: find_one(Page, q),
    "Page.find": lambda q: Page.find(q),
    "stored count": lambda q: count(Page, q, stored=True),
}


async def answer_of(name: str, query: dict[str, Any]) -> Any:
    result = await ENTRY_POINTS[name](query)
    if isinstance(result, list):
        return sorted(str(p._id) for p in result)
    return result if isinstance(result, int) else result is not None


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
async def test_every_entry_point_keeps_no_argument(
    db: Any, registry: MigrationRegistry, name: str
) -> None:
    register_step(Page, 1, 2, operations=[ops.rename_field("writer", "author")])
    await pages(db)
    forget_surveys()
    sel = [1, 2]
    before = await answer_of(name, {"author": {"$in": [1, 2]}})
    query = {"$or": [{"author": {"$in": sel}}]}
    await answer_of(name, query)
    sel.append(3)
    mutate(query)
    assert await answer_of(name, {"$or": [{"author": {"$in": [1, 2]}}]}) == before


async def test_the_guard_keeps_no_argument(db: Any, registry: MigrationRegistry) -> None:
    register_step(Page, 1, 2, operations=[ops.rename_field("writer", "author")])
    await pages(db)
    forget_surveys()
    guard_queries("error")
    try:
        sel = [3]
        # Author 3 is stored once as writer (version 1), once as author: the query misses one.
        for query in ({"author": {"$in": sel}}, {"author": {"$in": [3]}}):
            with pytest.raises(LegacyQueryError) as caught:
                await Page.objects.count_documents(query)
            assert (caught.value.missed, caught.value.extra) == (1, 0), (query, caught.value)
            sel[0] = 1
    finally:
        guard_queries("off")


# ----------------------------------------------------------------------
# Item 13: the guard checks bulk_write's filters
# ----------------------------------------------------------------------
async def test_the_guard_checks_the_filters_of_a_bulk_write(
    db: Any, registry: MigrationRegistry
) -> None:
    from pymongo import DeleteMany, InsertOne, ReplaceOne, UpdateMany, UpdateOne

    register_step(Page, 1, 2, operations=[ops.rename_field("writer", "author")])
    collection = await pages(db)
    forget_surveys()
    guard_queries("error")
    try:
        for request in (
            UpdateOne({"author": 1}, {"$set": {"seen": True}}),
            UpdateMany({"author": 1}, {"$set": {"seen": True}}),
            ReplaceOne({"author": 1}, {"author": 1, "seen": True}),
            DeleteMany({"author": 1}),
        ):
            with pytest.raises(LegacyQueryError, match="misses 1 document"):
                await Page.objects.bulk_write([InsertOne({"author": 9}), request])
        # Nothing ran: not even the insert before the refused request.
        assert await collection.count_documents({"author": 9}) == 0
        assert await collection.count_documents({"seen": True}) == 0
        assert await collection.count_documents({}) == 4
        # A bulk write whose filters miss nothing runs (mongomock takes no UpdateOne's sort).
        result = await Page.objects.bulk_write([UpdateMany({"_id": 0}, {"$set": {"x": 1}})])
        assert result.matched_count == 0
    finally:
        guard_queries("off")


# ----------------------------------------------------------------------
# Item 8: a value a conversion fails on is asked as stored
# ----------------------------------------------------------------------
class Order(VersionedModel):
    __model__ = "wrong.Order"
    __version__ = 2


OWNER = ObjectId("0123456789abcdef01234567")


async def answers(
    db: Any, model: Any, operations: list[Any], docs: list[dict[str, Any]], query: dict[str, Any]
) -> tuple[int, int]:
    """Documents the query selects once upgraded, and that its translation selects as stored
    (a document a step fails on stays as it is, as ``upgrade`` leaves it)."""
    from atomdb_migrate import MigrateError

    with MigrationRegistry.instance().isolated():
        register_step(model, 1, 2, operations=operations)
        mixed, upgraded = db["wrong.mixed"], db["wrong.upgraded"]
        await mixed.delete_many({})
        await upgraded.delete_many({})
        for i, doc in enumerate(docs):
            stored = {"_id": i, "__version__": "1", **doc}
            try:
                after = await model.upgrade_state(dict(stored))
            except MigrateError:
                after = stored
            await mixed.insert_one(stored)
            await upgraded.insert_one(after)
        want = await upgraded.count_documents(query)
        got = await mixed.count_documents(version_filter(model, query))
        return want, got


def _stored_kinds() -> list[tuple[Any, Any]]:
    from datetime import datetime

    from bson import Binary, Timestamp

    return [
        (OWNER, OWNER),
        (b"\x01\x02", b"\x01\x02"),
        (Binary(b"\x01", 5), Binary(b"\x01", 5)),
        (Timestamp(5, 1), Timestamp(5, 1)),
        (datetime(2020, 1, 1), datetime(2020, 1, 1)),
    ]


@pytest.mark.parametrize("to", ["str", "int", "float", "bool"])
@pytest.mark.parametrize(
    "make", [lambda v: v, lambda v: {"$ne": v}, lambda v: {"$in": [v, 5]}, lambda v: {"$nin": [v]}]
)
async def test_a_value_a_conversion_fails_on_is_asked_as_stored(
    db: Any, backend: str, to: str, make: Callable[[Any], Any]
) -> None:
    if backend == "mongomock":
        pytest.skip("conversions in $expr run on the real servers")
    for stored, asked in _stored_kinds():
        docs = [{"owner": stored}, {"owner": "7"}]
        query = {"owner": make(asked)}
        want, got = await answers(db, Order, [ops.convert("owner", to)], docs, query)
        assert got == want, (to, query)


async def test_an_objectid_a_conversion_fails_on_is_ordered_as_stored(
    db: Any, backend: str
) -> None:
    if backend == "mongomock":
        pytest.skip("conversions in $expr run on the real servers")
    docs = [{"owner": OWNER}, {"owner": "7"}, {"owner": 5}]
    for op in ("$gt", "$gte", "$lt", "$lte"):
        for bound in (OWNER, ObjectId("0" * 24), ObjectId("f" * 24)):
            query = {"owner": {op: bound}}
            want, got = await answers(db, Order, [ops.convert("owner", "str")], docs, query)
            assert got == want, query


# ----------------------------------------------------------------------
# Item 9: a regex re reads otherwise than PCRE is refused, never guessed
# ----------------------------------------------------------------------
#: Patterns where re and PCRE may part, and texts to try them on: each is either
#: refused (Unsure) or decided as PCRE decides it.
PCRE_TABLE: list[tuple[str, str, list[str]]] = [
    ("^[[:alpha:]]+$", "", ["draft", "12", ""]),
    ("[[:digit:]]", "", ["a1", "ab"]),
    ("[[:^space:]]", "", [" ", "a"]),
    ("[[=a=]]", "", ["a", "="]),
    ("[[.a.]]", "", ["a", "."]),
    ("[[:<:]]a", "", ["a"]),
    (r"\h", "", [" ", "\t", "a"]),
    (r"\H", "", [" ", "a"]),
    (r"\v", "", ["\n", "a"]),
    (r"\R", "", ["\r\n", "a"]),
    (r"\N", "", ["\n", "a"]),
    (r"\K", "", ["a"]),
    (r"\Qa.b\E", "", ["a.b", "axb"]),
    (r"\x{61}", "", ["a", "x"]),
    (r"\p{L}", "", ["a", "1"]),
    (r"\X", "", ["a"]),
    (r"\A", "", ["a"]),
    (r"a\z", "", ["a", "a\n"]),
    (r"a\Z", "", ["a\n"]),
    (r"\d", "", ["1", "\u0661"]),
    (r"\w", "", ["\u00e9"]),
    (r"\b", "", ["\u00e9"]),
    (r"(a)\1", "", ["aa"]),
    (r"\07", "", ["\x07"]),
    ("a++", "", ["aa"]),
    ("a*+a", "", ["aa"]),
    ("a?+", "", ["a"]),
    ("a{2}+", "", ["aa"]),
    ("(?>a+)b", "", ["aab"]),
    ("(?|(a)|(b))", "", ["b"]),
    ("(?i)A", "", ["a"]),
    ("(?<n>a)", "", ["a"]),
    ("(?P<n>a)(?P=n)", "", ["aa"]),
    ("(?#c)a", "", ["a"]),
    ("(?=a)", "", ["a"]),
    ("(?R)?a", "", ["a"]),
    ("(*UCP)\\w", "", ["\u00e9"]),
    ("(*CR)a$", "", ["a\r"]),
    ("(*ANY)a$", "", ["a\r\n"]),
    ("a(*SKIP)(*FAIL)|b", "", ["ab"]),
    ("(*LIMIT_MATCH=1)a", "", ["a"]),
    ("a{,2}b", "", ["ab", "a{,2}b"]),
    ("a{1,}", "", ["a"]),
    ("a{ 1}", "", ["a", "a{ 1}"]),
    ("a{1, 2}", "", ["a", "a{1, 2}"]),
    ("a b", "x", ["ab", "a b"]),
    ("[ ]a", "x", ["a", " a"]),
    ("a#c\nb", "x", ["ab", "a#c\nb"]),
    ("a", "x", ["a"]),
    ("\u212a", "i", ["k", "K"]),
    ("k", "i", ["\u212a"]),
    ("\u00df", "i", ["SS", "\u1e9e"]),
    ("\u00e9", "", ["\u00e9", "e"]),
    ("a$", "", ["a\r", "a\n", "a"]),
    ("a$", "m", ["a\rb", "a\nb", "a\u2028b"]),
    ("^b", "m", ["a\rb", "a\nb", "a\x85b"]),
    ("a.b", "", ["a\rb", "a\nb", "a\u2028b"]),
    ("a.b", "s", ["a\nb"]),
    ("[]a]", "", ["]", "a"]),
    ("[^]a]", "", ["]", "b"]),
    ("[a-]", "", ["-"]),
    ("[[a]", "", ["[", "a"]),
    ("[a&&b]", "", ["&"]),
    ("[a--b]", "", ["-"]),
    ("[a||b]", "", ["|"]),
    ("[a~~b]", "", ["~"]),
    ("a{2}{3}", "", ["aaaaaa"]),
    ("a**", "", ["a"]),
    ("\\", "", ["a"]),
    ("(", "", ["("]),
    ("x{2,1}", "", ["x"]),
    ("^$", "", ["", "\n"]),
    ("\\.", "", [".", "a"]),
    ("\\/", "", ["/"]),
    ("a|", "", ["b"]),
    ("()", "", [""]),
    ("[\\]]", "", ["]"]),
    ("[\\d]", "", ["1"]),
    ("\\ ", "x", [" "]),
    # Found by a second, independent reading of PCRE2 (each was decided otherwise):
    ("^$", "m", ["a\n", "\n", "a\n\n", "a"]),  # re matches ^ after a final newline
    ("^b", "m", ["a\nb", "a\nb\n"]),
    ("a\u200eb", "x", ["ab", "a\u200eb"]),  # PCRE skips pattern white space beyond ASCII
    ("a\u2009b", "x", ["ab"]),
    ("a{70000}", "", ["draft", "a"]),  # PCRE refuses a repeat count above 65535
    ("a{1,70000}", "", ["a"]),
    ("a{65535}", "", ["a"]),
]


def pcre_or_skip() -> Any:
    from tests import pcre

    missing = pcre.available()
    if missing is not None:
        print(f"skipped: no PCRE to compare with: {missing}")
        pytest.skip(f"no PCRE to compare with: {missing}")
    return pcre


def decided_as_pcre(pcre: Any, pattern: str, options: str, text: str) -> str:
    """'refused' or 'decided'; fails where re decides otherwise than PCRE."""
    from atomdb_migrate.queries.matching import Unsure, regex_search

    try:
        ours = regex_search(pattern, options, text)
    except Unsure:
        return "refused"
    theirs = pcre.search(pattern, options, text)  # PcreError: re accepted what PCRE refuses
    assert ours == theirs, (pattern, options, text, ours, theirs)
    return "decided"


def test_pcre_only_syntax_is_refused_or_decided_as_pcre_decides() -> None:
    pcre = pcre_or_skip()
    seen = {"refused": 0, "decided": 0}
    for pattern, options, texts in PCRE_TABLE:
        for text in texts:
            seen[decided_as_pcre(pcre, pattern, options, text)] += 1
    print(f"PCRE table: {len(PCRE_TABLE)} patterns, {seen}")
    assert seen["refused"] and seen["decided"]


def test_the_issue_s_posix_class_excludes_no_legacy_document(registry: MigrationRegistry) -> None:
    from atomdb_migrate import UntranslatableQueryError

    register_step(Page, 1, 2, operations=[ops.add_field("status", "draft")])
    with pytest.raises(UntranslatableQueryError, match="a POSIX class"):
        version_filter(Page, {"status": {"$regex": "^[[:alpha:]]+$"}})


#: How many patterns the generated-pattern property draws.
PCRE_EXAMPLES = int(os.environ.get("QUERY_PCRE_EXAMPLES", "300"))

PATTERN_TOKENS = [
    "a", "b", "k", "\u00e9", "\u212a", ".", "^", "$", "|", "*", "+", "?", "{2}", "{,2}", "{1,}",
    "(", ")", "[", "]", "[a-c]", "[^a]", "[[:alpha:]]", "[[", "\\", "\\d", "\\.", "\\h", "\\Q",
    "(?", "(*", "-", "&&", " ", "#", "\n", ":", "=", "\u200e", "{70000}",
]  # fmt: skip
TEXT_CHARS = ["a", "b", "k", "K", "\u00e9", "\u00c9", "\u212a", "1", " ", "\n", "\r", "-", "[", "]"]


@settings(max_examples=PCRE_EXAMPLES, deadline=None)
@given(
    pattern=st.lists(st.sampled_from(PATTERN_TOKENS), max_size=6).map("".join),
    options=st.sets(st.sampled_from("imsx")).map(lambda s: "".join(sorted(s))),
    text=st.lists(st.sampled_from(TEXT_CHARS), max_size=5).map("".join),
)
def test_generated_patterns_are_refused_or_decided_as_pcre_decides(
    pattern: str, options: str, text: str
) -> None:
    pcre = pcre_or_skip()
    decided_as_pcre(pcre, pattern, options, text)


# ----------------------------------------------------------------------
# Item 10: $elemMatch's operators ask a list inside the list as one value
# ----------------------------------------------------------------------
ROWS_QUERIES = [
    {"rows": {"$elemMatch": {"$type": "array"}}},
    {"rows": {"$elemMatch": {"$eq": [3]}}},
    {"rows": {"$elemMatch": {"$exists": True}}},
    {"rows": {"$elemMatch": {"$ne": 1}}},
    {"rows": {"$elemMatch": {"$in": [[3], 7]}}},
    {"rows": {"$elemMatch": {"$nin": [[3], [1, 2]]}}},
    {"rows": {"$elemMatch": {"$not": {"$type": "array"}}}},
    {"rows": {"$elemMatch": {"$gt": 1}}},
    {"rows": {"$elemMatch": {"$elemMatch": {"$gt": 2}}}},
    {"rows": {"$elemMatch": {}}},
]


@pytest.mark.parametrize("query", ROWS_QUERIES, ids=[repr(q) for q in ROWS_QUERIES])
async def test_elem_match_asks_a_list_inside_a_default_as_one_value(
    db: Any, backend: str, query: dict[str, Any]
) -> None:
    if backend == "mongomock":
        pytest.skip("mongomock looks into a list inside the list; the servers do not")
    docs = [{}, {"rows": [[5]]}, {"rows": [1]}]
    want, got = await answers(db, Order, [ops.add_field("rows", [[1, 2], [3]])], docs, query)
    assert got == want, query


def test_an_empty_elem_match_is_accepted(registry: MigrationRegistry) -> None:
    register_step(Order, 1, 2, operations=[ops.add_field("rows", [[1, 2], [3]])])
    # Every document stored before the step holds a list of lists: all match.
    assert version_filter(Order, {"rows": {"$elemMatch": {}}}) == {
        "$or": [
            {"__version__": {"$nin": ["1", 1]}, "rows": {"$elemMatch": {}}},
            {"__version__": {"$in": ["1", 1]}},
        ]
    }


# ----------------------------------------------------------------------
# Item 12: references are rewritten in documents at every version
# ----------------------------------------------------------------------
class Tree(VersionedModel):
    __model__ = "wrong.Tree"
    __version__ = 3


async def test_references_at_any_depth_and_version_are_found_under_the_new_name(
    db: Any, backend: str
) -> None:
    from atomdb_migrate.driver.mongo import to_list
    from atomdb_migrate.engine.runner import Runner, RunOptions

    if backend == "mongomock":
        pytest.skip("the upgrade's reference scan is compared on the real servers")
    # The mixed copy is in another database: the scan rewrites every collection of db.
    mixed = db.client[db.name + "_mixed"]["mixed"]
    old = "old.Tree"
    with MigrationRegistry.instance().isolated():
        register_step(Tree, 1, 2, operations=[ops.rename_model(old, Tree.__model__)])
        register_step(Tree, 2, 3, operations=[ops.add_field("z", 1)])
        docs = []
        for version in ("1", "2", "3"):
            for kids in (
                [{"__model__": old}],
                [[{"__model__": old}]],
                {"__model__": old},
                [],
                [{"__model__": old}, {"__model__": "old.Other"}],
                [{"__model__": "old.Other"}],
            ):
                own = old if version == "1" else Tree.__model__
                docs.append(
                    {"_id": len(docs), "__version__": version, "__model__": own, "kids": kids}
                )
        try:
            await mixed.insert_many([dict(d) for d in docs])
            await db[Tree.__model__].insert_many([dict(d) for d in docs])
            assert (await Runner(db, RunOptions()).upgrade(Tree)).failed == 0
            for query in (
                {"kids.0.__model__": Tree.__model__},
                {"kids.__model__": Tree.__model__},
                {"kids.0.0.__model__": Tree.__model__},
                {"kids.__model__": old},
                {"kids.__model__": {"$ne": old}},
                {"kids.__model__": {"$in": [old, "x"]}},
                {"__model__": Tree.__model__},
                # Written exactly: the condition, but not by the old name.
                {"kids.__model__": {"$regex": "^old"}},
                {"kids.__model__": {"$not": {"$regex": "^old"}}},
                {"kids.__model__": {"$in": ["x", re.compile("^old")]}},
                {"kids.0.__model__": {"$nin": [re.compile("Other$"), re.compile("^old")]}},
                {"kids.__model__": {"$lt": "p"}},
                {"kids.__model__": {"$gte": "old.Tree"}},
                {"kids.0.__model__": {"$not": {"$lte": "old.Tree"}}},
            ):
                want = [d["_id"] for d in await to_list(db[Tree.__model__].find(query))]
                translated = version_filter(Tree, query)
                got = [d["_id"] for d in await to_list(mixed.find(translated))]
                assert sorted(got) == sorted(want), (query, translated)
        finally:
            await db.client.drop_database(db.name + "_mixed")


# ----------------------------------------------------------------------
# The refusal at the condition limit: the filter's own field, and less growth
# ----------------------------------------------------------------------
class Grown(VersionedModel):
    __model__ = "wrong.Grown"
    __version__ = 3


def test_three_steps_of_six_operations_translate_a_nested_field(
    registry: MigrationRegistry,
) -> None:
    chain = [
        [ops.copy_field("m.x", "a"), ops.add_field("a", 1)],
        [ops.set_default_where_missing("m.n.y", 1), ops.copy_field("a", "m.n.y")],
        [ops.move_field("m.n.y", "b.y"), ops.remove_field("a")],
    ]
    for start, operations in enumerate(chain):
        register_step(Grown, start, start + 1, operations=operations)
    assert version_filter(Grown, {"m.n.y": 1})


def test_a_refusal_at_the_limit_names_the_filter_s_own_field(registry: MigrationRegistry) -> None:
    from atomdb_migrate import UntranslatableQueryError

    for i in range(1, 11):
        there, back = ("a", "x.a") if i % 2 else ("x.a", "a")
        register_step(Grown, f"0.{i}", f"0.{i + 1}", operations=[ops.move_field(there, back)])
    register_step(Grown, "0.11", 3, operations=[])
    for query, field in (({"a": 5}, "a"), ({"z": 1, "a": {"$gt": 1}}, "a")):
        with pytest.raises(UntranslatableQueryError, match="would grow past") as caught:
            version_filter(Grown, query)
        assert caught.value.field == field, caught.value


# ----------------------------------------------------------------------
# Item 11: during a rollback, newer documents are asked as old code reads them
# ----------------------------------------------------------------------
class RolledBack(VersionedModel):
    """The old code, at version 1, reading documents the new code stored at 2."""

    __model__ = "wrong.RolledBack"
    __version__ = 1
    __on_newer__ = "downgrade"


async def test_newer_documents_are_asked_through_the_downgrade(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(RolledBack, 1, 2, operations=[ops.rename_field("heading", "title")])
    collection = db[RolledBack.__model__]
    await collection.insert_many(
        [
            {"_id": ObjectId(), "heading": "Intro", "__version__": "1"},
            {"_id": ObjectId(), "title": "Intro", "__version__": "2"},
            {"_id": ObjectId(), "title": "Other", "heading": "Intro", "__version__": 2},
        ]
    )
    forget_surveys()
    read = [await RolledBack.upgrade_state(d) for d in await collection.find({}).to_list(None)]
    assert sum(d.get("heading") == "Intro" for d in read) == 2
    assert await RolledBack.count({"heading": "Intro"}) == 2
    assert await RolledBack.count({"heading": "Intro"}, stored=True) == 2
    assert await RolledBack.count({"title": {"$exists": True}}) == 0
    guard_queries("error")
    try:
        with pytest.raises(LegacyQueryError) as caught:
            await RolledBack.objects.count_documents({"heading": "Intro"})
        assert (caught.value.missed, caught.value.extra) == (1, 1)
    finally:
        guard_queries("off")


def test_a_downgrade_function_refuses_conditions_on_newer_documents(
    registry: MigrationRegistry,
) -> None:
    from atomdb_migrate import UntranslatableQueryError

    step = register_step(RolledBack, 1, 2, lambda doc: doc)
    step.downgrade(lambda doc: doc)
    with pytest.raises(UntranslatableQueryError, match="a downgrade function computes"):
        version_filter(RolledBack, {"heading": "Intro"})
    # Nothing stored at 2, as the caller knows: nothing to refuse.
    assert version_filter(RolledBack, {"heading": "Intro"}, versions=[]) == {"heading": "Intro"}


RANGE_CHARS = ["a", "o", "p", "\x00", "\x01", "\n", "\u00e9", "-", "]", "^", "\\", ".", " "]
RANGE_TEXT = st.lists(st.sampled_from(RANGE_CHARS), max_size=4).map("".join)


@settings(max_examples=PCRE_EXAMPLES, deadline=None)
@given(
    op=st.sampled_from(["$lt", "$lte", "$gt", "$gte"]),
    bound=RANGE_TEXT,
    text=RANGE_TEXT,
    old=RANGE_TEXT.filter(bool),
)
def test_a_string_range_without_the_old_name_is_one_regex(
    op: str, bound: str, text: str, old: str
) -> None:
    """The regex a rename writes for {op: bound} but not the old name: PCRE and re alike."""
    import operator
    import re as re_

    from atomdb_migrate.queries.renamed_models import _excluding, string_range

    pcre = pcre_or_skip()
    compare = {"$lt": operator.lt, "$lte": operator.le, "$gt": operator.gt, "$gte": operator.ge}
    pattern = _excluding(string_range(op, bound), old)
    want = compare[op](text, bound) and text != old  # code point order, as the server's
    assert pcre.search(pattern, "", text) == want
    assert (re_.search(pattern, text) is not None) == want
