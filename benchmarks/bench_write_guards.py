"""What each kind of conditional write costs the server, alone.

The same N documents are written once per variant, in unordered bulk writes
of 1000, with no reading or transforming timed: a replace or an update
matched by ``_id`` alone (what a hand-written loop does), by ``_id`` and
version, and by the whole document as read (what atomdb-migrate does, so a
document changed meanwhile is never overwritten).

    python benchmarks/bench_write_guards.py [-n N]

Starts its own SecantusDB server unless MONGO_URL is set.

"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upgrade import server


def op(variant: str, doc: dict[str, Any]) -> Any:
    new = {**doc, "label": doc["name"].upper(), "__version__": "2"}
    change = {"$set": {"label": new["label"], "__version__": "2"}}
    if variant == "replace by _id":
        return ReplaceOne({"_id": doc["_id"]}, new)
    if variant == "update by _id":
        return UpdateOne({"_id": doc["_id"]}, change)
    if variant == "update by _id and version":
        return UpdateOne({"_id": doc["_id"], "__version__": doc["__version__"]}, change)
    return UpdateOne(dict(doc), change)  # the whole document as read


async def measure(url: str, n: int) -> list[tuple[str, int]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    coll = client["atomdb_migrate_bench"]["guards"]
    rows = []
    for variant in (
        "replace by _id",
        "update by _id",
        "update by _id and version",
        "update by the whole document",
    ):
        await coll.drop()
        await coll.insert_many(
            [
                {"name": f"item {i}", "qty": i % 97, "tags": ["a", "b"], "__version__": "1"}
                for i in range(n)
            ]
        )
        docs = await coll.find().sort("_id", 1).to_list()
        ops = [op(variant, d) for d in docs]
        start = time.perf_counter()
        for i in range(0, n, 1000):
            await coll.bulk_write(ops[i : i + 1000], ordered=False)
        rows.append((variant, round(n / (time.perf_counter() - start))))
    await client.drop_database("atomdb_migrate_bench")
    await client.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000)
    args = parser.parse_args()
    with server() as url:
        rows = asyncio.run(measure(url, args.n))
    print(f"| write (N = {args.n}) | docs/s |\n|---|---:|")
    for variant, rate in rows:
        print(f"| {variant} | {rate} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
