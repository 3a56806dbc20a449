"""A version-aware query against the original, on an upgraded and on a mixed collection.

The model's chain renames ``heading`` to ``title`` (1 -> 2) and adds
``views`` (2 -> 3). The query is ``{"title": "page <k>"}`` (one document
each), for 10 values of k, fetched whole:

- **upgraded**: every document at version 3. The original filter; the
  translation for every version of the chain (``version_filter``); the
  translation for the versions a survey finds stored (``stored=True``,
  which is the original again).
- **mixed**: half the documents at version 1 (with ``heading``), half at 3.
  The original (which misses the version-1 half: not the right answer, the
  baseline of cost only) and the translation.

Each without an index on the queried fields, then with indexes on ``title``
and ``heading``. Median of the rounds, milliseconds per query.

    python benchmarks/bench_queries.py              # N = 20000, merged into docs/
    python benchmarks/bench_queries.py --quick      # N = 2000, printed only
    MONGO_URL=mongodb://... python benchmarks/bench_queries.py

Starts its own SecantusDB server unless MONGO_URL is set. The full run
writes its figures into docs/benchmarks.json and renders docs/benchmarks.md
again (``run.py --render``).

"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from atom.api import Int, Str
from pymongo import AsyncMongoClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upgrade import server  # noqa: E402

from atomdb_migrate import VersionedModel, ops, register_step, version_filter  # noqa: E402

#: The command that reproduces the published figures.
COMMAND = "python benchmarks/bench_queries.py"


class Article(VersionedModel):
    __model__ = "bench.Article"
    __version__ = 3

    title = Str()
    views = Int()


register_step(Article, 1, 2, operations=[ops.rename_field("heading", "title")])
register_step(Article, 2, 3, operations=[ops.add_field("views", 0)])

#: How many different queries a round runs.
QUERIES = 10

#: The documents, and the rounds, of the full run. SecantusDB scans the
#: collection for any filter of more than one field (about 0.4 ms per
#: thousand documents here), and the translation's filters all are.
N = 20000
ROUNDS = 3


def documents(n: int, mixed: bool) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        if mixed and i % 2:
            docs.append({"_id": i, "heading": f"page {i}", "body": "x" * 200, "__version__": "1"})
        else:
            docs.append(
                {"_id": i, "title": f"page {i}", "body": "x" * 200, "views": i, "__version__": "3"}
            )
    return docs


async def time_queries(collection: Any, filters: list[dict[str, Any]]) -> tuple[float, int]:
    """Milliseconds per query for the filters, and the documents they found."""
    found = 0
    began = time.perf_counter()
    for query in filters:
        found += len(await collection.find(query).to_list(None))
    return (time.perf_counter() - began) * 1000 / len(filters), found


async def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client["atomdb_migrate_bench_queries"]
    rows: list[dict[str, Any]] = []
    try:
        for shape in ("upgraded", "mixed"):
            await client.drop_database(db.name)
            coll = db[Article.__model__]
            for start in range(0, n, 50000):
                await coll.insert_many(documents(n, shape == "mixed")[start : start + 50000])
            step = max(2, n // QUERIES)
            # Odd and even k: on the mixed collection, half are stored at version 1.
            wanted = [{"title": f"page {i * step + i % 2}"} for i in range(QUERIES)]
            cases = {
                "original": wanted,
                "version_filter": [version_filter(Article, q) for q in wanted],
            }
            if shape == "upgraded":
                cases["version_filter, stored=True"] = [
                    version_filter(Article, q, versions=["3"]) for q in wanted
                ]
            for indexed in (False, True):
                if indexed:
                    await coll.create_index("title")
                    await coll.create_index("heading")
                times: dict[str, list[float]] = {case: [] for case in cases}
                found: dict[str, int] = {}
                for _ in range(rounds):
                    for case, filters in cases.items():
                        ms, found[case] = await time_queries(coll, filters)
                        times[case].append(ms)
                base = statistics.median(times["original"])
                for case in cases:
                    ms = statistics.median(times[case])
                    rows.append(
                        {
                            "collection": shape,
                            "index": indexed,
                            "case": case,
                            "ms_per_query": round(ms, 2),
                            "ratio": round(ms / base, 2),
                            "found": found[case],
                        }
                    )
                    print(f"  queries: {rows[-1]}", file=sys.stderr)
        info = await client.server_info()
    finally:
        await client.drop_database(db.name)
        await client.close()
    return {
        "n": n,
        "rounds": rounds,
        "queries": QUERIES,
        "server": f"{info.get('version', '?')}",
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000, printed only")
    args = parser.parse_args(argv)
    with server() as url:
        result = asyncio.run(measure(url, 2000 if args.quick else N, 1 if args.quick else ROUNDS))
    result["command"] = COMMAND + (" --quick" if args.quick else "")
    if not args.quick:
        import run

        run.publish("queries", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
