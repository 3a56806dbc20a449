"""The survey's count of stored versions, against the count by value and type.

`count_versions` groups the documents by the stored value alone, and only the
values such a group may merge across BSON types (numbers, arrays, documents,
anything but a string or null) again by value and type. The reference here
is the one stage that groups every document by value and type: the counts
must be the same, form by form, over generated collections mixing the forms
a version is stored in (strings, null, missing, int, Int64, double,
Decimal128, booleans, arrays and documents holding them).
``SURVEY_EXAMPLES`` sets the number of generated collections (default 40).

"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from bson import Decimal128, Int64
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from atomdb_migrate.core.storage import VERSION_KEY
from atomdb_migrate.core.versions import version_key
from atomdb_migrate.driver.mongo import count_each, count_versions

EXAMPLES = int(os.environ.get("SURVEY_EXAMPLES", "40"))

#: The reference: every document grouped by its stored value and its type.
BY_VALUE_AND_TYPE = [
    {
        "$group": {
            "_id": {"v": f"${VERSION_KEY}", "t": {"$type": f"${VERSION_KEY}"}},
            "n": {"$sum": 1},
        }
    }
]

MISSING = object()

#: The forms of a stored version: several of them equal as numbers.
scalars = st.sampled_from(
    [
        "1",
        "2",
        "2.0",
        "02",
        "",
        None,
        MISSING,
        1,
        2,
        Int64(2),
        2.0,
        -0.0,
        0,
        Decimal128("2"),
        Decimal128("2.0"),
        True,
        False,
    ]
)
forms = st.one_of(
    scalars,
    st.lists(scalars.filter(lambda v: v is not MISSING), max_size=2),
    st.builds(lambda v: {"v": v}, scalars.filter(lambda v: v is not MISSING)),
)


def counted(rows: list[tuple[Any, int]]) -> dict[Any, int]:
    """Counts by the key the survey plans by, each with the forms' type names."""
    out: dict[Any, int] = {}
    for raw, n in rows:
        key = version_key(raw)
        out[key] = out.get(key, 0) + n
    return out


async def stored(client: Any, versions: list[Any]) -> Any:
    """A collection of documents ``{i, __version__}``, one per version (none: missing)."""
    collection = client["survey_counts"]["docs"]
    await collection.drop()
    await collection.insert_many(
        [{"i": i} if v is MISSING else {"i": i, VERSION_KEY: v} for i, v in enumerate(versions)]
    )
    return collection


async def both(url: str, versions: list[Any], query: dict[str, Any] | None) -> tuple[Any, Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    try:
        collection = await stored(client, versions)
        got = await count_versions(collection, query)
        stages = ([{"$match": query}] if query else []) + BY_VALUE_AND_TYPE
        cursor = await collection.aggregate(stages)
        reference = [(row["_id"].get("v"), row["n"]) for row in await cursor.to_list()]
    finally:
        await client.close()
    return got, reference


def test_the_survey_counts_each_form_as_grouping_by_type_does(secantus_url: str) -> None:
    seen = {"numbers merged by value": 0, "examples": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(forms, min_size=1, max_size=12), st.booleans())
    # Equal numbers of several types, in every run.
    @example([2, 2.0, Int64(2), "2"], False)
    def check(versions: list[Any], narrowed: bool) -> None:
        query = {"i": {"$gte": 2}} if narrowed else None
        got, reference = asyncio.run(both(secantus_url, versions, query))
        assert counted(got) == counted(reference), f"{versions!r}\n{got!r}\n{reference!r}"
        # every form is one row: none of the forms the reference keeps apart is merged
        assert len(got) == len(counted(reference)), f"{versions!r}\n{got!r}\n{reference!r}"
        seen["examples"] += 1
        numbers = {type(v) for v in versions if isinstance(v, int | float | Int64 | Decimal128)}
        seen["numbers merged by value"] += len(numbers) > 1

    check()
    print(f"survey counts: {seen}")
    assert seen["numbers merged by value"], "no example mixed numeric types"


@pytest.mark.parametrize(
    "versions",
    [
        [2, 2.0, Int64(2), Decimal128("2"), "2", None, MISSING],
        [[2], [2.0], {"v": 2}, {"v": 2.0}, True, 1],
    ],
)
def test_equal_numbers_of_several_types_are_counted_apart(
    secantus_url: str, versions: list[Any]
) -> None:
    got, reference = asyncio.run(both(secantus_url, versions, None))
    assert counted(got) == counted(reference)
    assert sorted(n for _, n in got) == sorted(counted(reference).values())


async def counted_both_ways(
    url: str, versions: list[Any], queries: list[dict[str, Any]]
) -> tuple[list[int], list[int]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    try:
        collection = await stored(client, versions)
        together = await count_each(collection, queries)
        apart = [await collection.count_documents(q) for q in queries]
    finally:
        await client.close()
    return together, apart


def test_queries_counted_in_one_read_as_each_alone(secantus_url: str) -> None:
    """`count_each` (one ``$facet`` a query, over the documents any finds) gives
    what ``count_documents`` gives for each query, whatever the stored forms."""
    seen = {"examples": 0, "a query found some": 0, "a document found twice": 0}
    plain = scalars.filter(lambda v: v is not MISSING)
    version_conditions = st.one_of(plain, st.builds(lambda vs: {"$in": vs}, st.lists(plain)))
    queries = st.lists(
        st.builds(
            lambda v, lower: {VERSION_KEY: v, **({"i": {"$gte": lower}} if lower else {})},
            version_conditions,
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=6,
    )

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(forms, min_size=1, max_size=12), queries, st.booleans())
    # A query that finds documents, asked twice: found twice, in every run.
    @example(["1", "1"], [{VERSION_KEY: "1"}], True)
    def check(versions: list[Any], asked: list[dict[str, Any]], twice: bool) -> None:
        if twice:  # the first query again, narrowed: what it finds is found twice
            asked = [*asked, {**asked[0], "i": {"$lt": 6}}]
        together, apart = asyncio.run(counted_both_ways(secantus_url, versions, asked))
        assert together == apart, f"{versions!r}\n{asked!r}"
        seen["examples"] += 1
        seen["a query found some"] += any(apart)
        seen["a document found twice"] += twice and apart[-1] > 0

    check()
    print(f"counted in one read: {seen}")
    assert seen["a query found some"] and seen["a document found twice"], seen
