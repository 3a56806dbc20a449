"""Eager upgrade throughput: the runner against a hand-written PyMongo loop.

Both take the same N legacy documents through the same one-line step on the
same server in one run, alternating, with the collection reseeded before
each. The loop is what a user would write by hand: find in ``_id`` order,
and per batch of 1000 one unordered ``bulk_write`` of ``ReplaceOne`` by
``_id``, waiting for each write before reading on. The runner writes
conditional updates (matching each document as read) and reads the next
batch while writing the current one.

    python benchmarks/bench_upgrade.py              # N = 10000 and 100000
    python benchmarks/bench_upgrade.py --quick      # N = 2000, for CI
    MONGO_URL=mongodb://... python benchmarks/bench_upgrade.py   # another server

Starts its own SecantusDB server unless MONGO_URL is set.

"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from atom.api import Int, Str
from pymongo import AsyncMongoClient, ReplaceOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atomdb_migrate  # noqa: E402
from atomdb_migrate import VersionedModel, register_step  # noqa: E402
from atomdb_migrate.runner import Runner  # noqa: E402


class Item(VersionedModel):
    __model__ = "bench.Item"
    __version__ = 2

    name = Str()
    qty = Int()
    label = Str()


def label(doc: dict[str, Any]) -> None:
    doc["label"] = doc["name"].upper()


register_step(Item, 1, 2, label)

BATCH = 1000


def legacy(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"item {i}",
            "qty": i % 97,
            "tags": ["a", "b"],
            "__model__": Item.__model__,
            "__version__": "1",
        }
        for i in range(n)
    ]


async def seed(coll: Any, n: int) -> None:
    await coll.drop()
    for start in range(0, n, 20000):
        await coll.insert_many(legacy(min(20000, n - start)))


async def hand_loop(coll: Any) -> int:
    """The loop a user writes with PyMongo."""
    written = 0
    batch: list[ReplaceOne[Any]] = []
    async for doc in coll.find({"__version__": "1"}).sort("_id", 1).batch_size(BATCH):
        label(doc)
        doc["__version__"] = "2"
        batch.append(ReplaceOne({"_id": doc["_id"]}, doc))
        if len(batch) == BATCH:
            written += (await coll.bulk_write(batch, ordered=False)).matched_count
            batch = []
    if batch:
        written += (await coll.bulk_write(batch, ordered=False)).matched_count
    return written


async def measure(url: str, sizes: list[int], rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    db = client["atomdb_migrate_bench"]
    coll = db[Item.__model__]
    rows = []
    try:
        for n in sizes:
            times: dict[str, list[float]] = {"loop": [], "runner": []}
            for _ in range(rounds):
                for case in ("loop", "runner"):
                    await seed(coll, n)
                    start = time.perf_counter()
                    if case == "loop":
                        done = await hand_loop(coll)
                    else:
                        done = (await Runner(db, batch_size=BATCH).upgrade(Item)).migrated
                    times[case].append(time.perf_counter() - start)
                    assert done == n, (case, done, n)
                    assert await coll.count_documents({"__version__": "2"}) == n
            best = {k: min(v) for k, v in times.items()}
            rows.append(
                {
                    "n": n,
                    "loop_docs_per_s": round(n / best["loop"]),
                    "runner_docs_per_s": round(n / best["runner"]),
                    "ratio": round(best["loop"] / best["runner"], 3),
                    "loop_s": round(best["loop"], 2),
                    "runner_s": round(best["runner"], 2),
                }
            )
        await client.drop_database("atomdb_migrate_bench")
        info = await client.server_info()
    finally:
        await client.close()
    return {"benchmark": "upgrade", **environment(info), "rounds": rounds, "rows": rows}


def environment(info: dict[str, Any]) -> dict[str, Any]:
    """The machine, the server (from its ``server_info``) and the versions, for a result."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "server": f"{'MONGO_URL' if os.environ.get('MONGO_URL') else 'SecantusDB'} "
        f"{info.get('version', '?')}",
        "versions": {"atomdb_migrate": atomdb_migrate.__version__},
    }


@contextlib.contextmanager
def server() -> Iterator[str]:
    url = os.environ.get("MONGO_URL")
    if url:
        yield url
        return
    from tests.servers import secantus_server

    with secantus_server() as started:
        yield started


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Eager upgrade, one step, batches of {BATCH}, best of {result['rounds']}; "
        f"{result['server']}; {result['machine']}",
        "",
        "| N | hand-written PyMongo loop (docs/s) | atomdb-migrate runner (docs/s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']} | {r['loop_docs_per_s']} | {r['runner_docs_per_s']} | {r['ratio']} |"
        )
    return "\n".join(lines)


Measure = Callable[[str, list[int], int], Awaitable[dict[str, Any]]]


def command_line(
    argv: list[str] | None,
    doc: str,
    measure: Measure,
    markdown: Callable[[dict[str, Any]], str],
    sizes: list[int],
) -> int:
    """Parse a benchmark's command line, measure, and print the result.

    ``--quick`` runs N = 2000 once; `sizes` are the N of a full run.

    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000, one round (CI)")
    parser.add_argument("-n", type=int, action="append", help="N (repeatable)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    chosen = args.n or ([2000] if args.quick else sizes)
    rounds = args.rounds or (1 if args.quick else 3)
    with server() as url:
        result = asyncio.run(measure(url, chosen, rounds))
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, __doc__, measure, markdown, [10000, 100000])


if __name__ == "__main__":
    sys.exit(main())
