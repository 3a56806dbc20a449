"""A read that fails is opened again after the last ``_id`` it handed out: none twice,
none missed, whatever the types of the ``_id`` values (BSON sorts by type first)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.max_key import MaxKey
from bson.min_key import MinKey

from atomdb_migrate.driver.mongo import after, to_list

IDS: list[Any] = [
    MinKey(),
    None,
    -3,
    Int64(2),
    2.5,
    Decimal128("7"),
    "",
    "a",
    "b",
    {"k": 1},
    Binary(b"\x00"),
    ObjectId("000000000000000000000001"),
    ObjectId("000000000000000000000002"),
    False,
    True,
    datetime.datetime(2026, 1, 1),
    MaxKey(),
]


async def test_after_every_id_the_rest_comes_in_order(db: Any, backend: str) -> None:
    if backend == "mongomock":
        pytest.skip("mongomock does not sort _id values of mixed types as BSON does")
    coll = db["resume"]
    await coll.insert_many([{"_id": i, "n": n, "v": "1"} for n, i in enumerate(IDS)])
    query = {"v": "1"}
    ordered = [d["n"] for d in await to_list(coll.find(query, sort=[("_id", 1)]))]
    assert ordered == list(range(len(IDS))), "BSON's order of types, as listed here"
    for n, last in enumerate(IDS):
        rest: list[int] = []
        for q in after(query, last):
            rest += [d["n"] for d in await to_list(coll.find(q, sort=[("_id", 1)]))]
        assert rest == list(range(n + 1, len(IDS))), (n, last)


def test_an_id_of_an_unknown_type_reads_all_again() -> None:
    """The query alone: the documents done are at the target and not found again."""

    class Odd:
        pass

    assert after({"v": "1"}, Odd()) == [{"v": "1"}]
    last = uuid.uuid4()
    assert after({"v": "1"}, last) == [
        {"v": "1", "_id": {"$gt": last}},
        {"v": "1", "_id": {"$type": ["objectId", "bool", "date", "timestamp", "regex", "maxKey"]}},
    ]
    scoped = {"_id": {"$in": [1, 2]}}
    assert after(scoped, 1)[0] == {"$and": [scoped, {"_id": {"$gt": 1}}]}
