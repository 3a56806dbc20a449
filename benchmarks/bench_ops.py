"""A step of three operations over N documents: on the server against the client path.

The same step (``rename_field``, a nested ``move_field``, ``add_field``) runs
through ``Runner`` twice per round on the same server, alternating, with the
collection reseeded before each: once as one server-side ``update_many``
(the default), once on the client path (``server_side=False``: read, run the
operations in Python, write conditional updates in batches of 1000). Both
must leave the same documents.

    python benchmarks/bench_ops.py              # N = 100000
    python benchmarks/bench_ops.py --quick      # N = 2000, for CI
    MONGO_URL=mongodb://... python benchmarks/bench_ops.py

Starts its own SecantusDB server unless MONGO_URL is set.

"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from atom.api import Int, Str
from pymongo import AsyncMongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upgrade import command_line, environment  # noqa: E402

from atomdb_migrate import VersionedModel, ops, register_step  # noqa: E402
from atomdb_migrate.engine.runner import Runner, RunOptions  # noqa: E402


class Post(VersionedModel):
    __model__ = "bench.Post"
    __version__ = 2

    title = Str()
    status = Str()
    views = Int()
    qty = Int()


OPERATIONS = [
    ops.rename_field("heading", "title"),
    ops.move_field("meta.status", "status"),
    ops.add_field("views", 0),
]
register_step(Post, 1, 2, operations=OPERATIONS)
BATCH = 1000


def legacy(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "heading": f"post {i}",
            "meta": {"status": "draft" if i % 3 else "live", "k": i},
            "qty": i % 97,
            "__model__": Post.__model__,
            "__version__": "1",
        }
        for i in range(start, start + n)
    ]


async def seed(coll: Any, n: int) -> None:
    await coll.drop()
    for start in range(0, n, 20000):
        await coll.insert_many(legacy(start, min(20000, n - start)))


async def measure(url: str, sizes: list[int], rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    db = client["atomdb_migrate_bench_ops"]
    coll = db[Post.__model__]
    rows = []
    try:
        for n in sizes:
            times: dict[str, list[float]] = {"server": [], "client": []}
            results: dict[str, list[Any]] = {}
            for _ in range(rounds):
                for case in ("server", "client"):
                    await seed(coll, n)
                    runner = Runner(db, RunOptions(batch_size=BATCH, server_side=case == "server"))
                    start = time.perf_counter()
                    report = await runner.upgrade(Post)
                    times[case].append(time.perf_counter() - start)
                    assert report.migrated == n, (case, report)
                    assert bool(report.server_steps) == (case == "server"), report
                    results[case] = await coll.find({}, {"_id": 0}).sort("qty").to_list()
            assert results["server"] == results["client"], "the two paths disagree"
            best = {k: min(v) for k, v in times.items()}
            rows.append(
                {
                    "n": n,
                    "client_docs_per_s": round(n / best["client"]),
                    "server_docs_per_s": round(n / best["server"]),
                    "ratio": round(best["client"] / best["server"], 2),
                    "client_s": round(best["client"], 2),
                    "server_s": round(best["server"], 2),
                }
            )
        await client.drop_database(db.name)
        info = await client.server_info()
    finally:
        await client.close()
    return {
        "benchmark": "operations",
        "step": repr(OPERATIONS),
        **environment(info),
        "rounds": rounds,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"A step of three operations, best of {result['rounds']}; {result['server']}; "
        f"{result['machine']}",
        "",
        "| N | client path (docs/s) | server-side update (docs/s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']} | {r['client_docs_per_s']} | {r['server_docs_per_s']} | {r['ratio']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, __doc__, measure, markdown, [100000])


if __name__ == "__main__":
    sys.exit(main())
