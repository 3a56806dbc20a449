"""Properties over generated documents, on the SecantusDB server.

- upgrade then downgrade gives back the original (the steps are exact);
- lazy restore (with write-back) and the eager upgrade store the same thing;
- a second upgrade changes nothing.

"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from atom.api import Int, Str
from atomdb.nosql import NoSQLModelManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from atomdb_migrate import VersionedModel, register_step
from atomdb_migrate.engine.runner import Runner, RunOptions

from .conftest import record


class Item(VersionedModel):
    __model__ = "props.Item"
    __version__ = 3
    __write_back__ = True

    title = Str()
    first = Str()
    last = Str()
    stock = Int()


def rename(doc: dict[str, Any]) -> None:
    doc["title"] = doc.pop("name")


def unrename(doc: dict[str, Any]) -> None:
    doc["name"] = doc.pop("title")


def split(doc: dict[str, Any]) -> None:
    doc["first"], _, doc["last"] = doc.pop("maker").partition(" ")


def join(doc: dict[str, Any]) -> None:
    first, last = doc.pop("first"), doc.pop("last")
    doc["maker"] = f"{first} {last}" if last else first


register_step(Item, 0, 1, rename, unrename)
register_step(Item, 1, 2, split, join)


def add_stock(doc: dict[str, Any]) -> None:
    doc.setdefault("stock", 0)


def drop_stock(doc: dict[str, Any]) -> None:
    del doc["stock"]


register_step(Item, 2, 3, add_stock, drop_stock)

word = st.text(st.characters(codec="utf-8", exclude_characters=" \x00"), min_size=1, max_size=8)
legacy = st.fixed_dictionaries(
    {
        "name": st.text(st.characters(codec="utf-8"), max_size=12),
        "maker": st.one_of(word, st.builds("{} {}".format, word, word)),
    },
    optional={"note": st.one_of(st.integers(-(2**60), 2**60), word, st.none())},
)
documents = st.lists(legacy, min_size=1, max_size=12)
EXAMPLES = {"n": 0}


async def scenario(url: str, docs: list[dict[str, Any]]) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    eager_db, lazy_db = (client[f"props_{uuid.uuid4().hex[:10]}"] for _ in range(2))
    try:
        originals = [{**d, "__model__": Item.__model__, "_id": i} for i, d in enumerate(docs)]
        for database in (eager_db, lazy_db):
            await database[Item.__model__].insert_many([dict(d) for d in originals])

        # Eager upgrade, twice: the second changes nothing.
        await Runner(eager_db, RunOptions(batch_size=5)).upgrade(Item)
        upgraded = await eager_db[Item.__model__].find().sort("_id").to_list()
        again = await Runner(eager_db).upgrade(Item)
        assert again.migrated == 0
        assert await eager_db[Item.__model__].find().sort("_id").to_list() == upgraded

        # Lazy restore with write-back stores the same documents.
        manager = NoSQLModelManager.instance()
        manager.database, manager.proxies = lazy_db, {}
        for d in originals:
            state = await lazy_db[Item.__model__].find_one({"_id": d["_id"]})
            await Item._upgrade_for_restore(state)
        assert await lazy_db[Item.__model__].find().sort("_id").to_list() == upgraded

        # Downgrade to 0 gives back the originals (plus the version key).
        await Runner(eager_db, RunOptions(batch_size=3)).downgrade(Item, "0")
        back = await eager_db[Item.__model__].find().sort("_id").to_list()
        assert [{k: v for k, v in d.items() if k != "__version__"} for d in back] == originals
        assert {d["__version__"] for d in back} == {"0"}
        EXAMPLES["n"] += 1
    finally:
        for database in (eager_db, lazy_db):
            await client.drop_database(database.name)
        await client.close()


@pytest.mark.timeout(3600)
def test_properties(secantus_url: str, long: bool) -> None:
    examples = 300 if long else 40

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(documents)
    def check(docs: list[dict[str, Any]]) -> None:
        asyncio.run(scenario(secantus_url, docs))

    check()
    record(
        "properties",
        examples=EXAMPLES["n"],
        properties="upgrade then downgrade = original; lazy = eager; second upgrade = no-op",
    )
