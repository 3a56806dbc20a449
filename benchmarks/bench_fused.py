"""A model five steps behind, all of them operations: one pass, or one per step.

N documents stored at version 1 of a model at version 6; each step is made of
operations, so each runs on the server. The same run, timed in process
(`Runner.upgrade`, defaults otherwise), both ways:

- **fused** (the default): the five steps in one pass, one ``update_many``
  whose pipeline holds each step's stages in order;
- **step by step** (``RunOptions(fuse_steps=False)``): one ``update_many``
  per step, five passes over the collection.

Each round seeds the collection again and runs both, the order alternating;
every round is printed, then the best and the spread. Both must leave the same
documents.

    python benchmarks/bench_fused.py                    # N = 30,000, 3 rounds
    python benchmarks/bench_fused.py --chain disjoint   # the pass's fast form
    python benchmarks/bench_fused.py --n 5000 --rounds 1

Starts its own SecantusDB server unless MONGO_URL is set.

"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upgrade import server  # noqa: E402

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step  # noqa: E402
from atomdb_migrate.engine.runner import Runner, RunOptions  # noqa: E402

#: The command that reproduces the figures.
COMMAND = "python benchmarks/bench_fused.py"


class Item(VersionedModel):
    __model__ = "bench_fused.Item"
    __version__ = 6


#: The five steps, each a list of operations, by workload. In "reads-back" the
#: last step reads what the third wrote (``stock``), so the pass runs the
#: general pipeline; in "disjoint" each step has fields of its own, so the pass
#: has a fast form (each step's plain stages, in order).
CHAINS = {
    "reads-back": [
        [ops.rename_field("name", "title")],
        [ops.add_field("status", "new")],
        [ops.copy_field("qty", "stock.count")],
        [ops.remove_field("label")],
        [ops.add_field("stock.seen", False), ops.rename_field("qty", "quantity")],
    ],
    "disjoint": [
        [ops.rename_field("name", "title")],
        [ops.add_field("status", "new")],
        [ops.copy_field("qty", "stock.count")],
        [ops.remove_field("label")],
        [ops.add_field("flags.seen", False)],
    ],
}


def seed_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"_id": i, "name": f"item {i}", "qty": i % 97, "label": f"ITEM {i}", "__version__": "1"}
        for i in range(n)
    ]


async def one_run(url: str, n: int, fuse: bool) -> tuple[float, list[dict[str, Any]]]:
    """Seconds the upgrade took, and a few documents it left."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client["atomdb_migrate_bench_fused"]
    coll = db[Item.__model__]
    try:
        await coll.drop()
        rows = seed_rows(n)
        for start in range(0, n, 50000):
            await coll.insert_many(rows[start : start + 50000], ordered=False)
        runner = Runner(db, RunOptions(fuse_steps=fuse))
        began = time.perf_counter()
        report = await runner.upgrade(Item)
        elapsed = time.perf_counter() - began
        assert report.migrated == n, report
        assert bool(report.server_passes) == fuse, report.server_passes
        sample = [d async for d in coll.find({"_id": {"$in": [0, 1, n - 1]}}).sort("_id")]
        assert await coll.count_documents({"__version__": "6"}) == n
        return elapsed, sample
    finally:
        await coll.drop()
        await client.close()


def spread(figures: Sequence[float]) -> str:
    return f"best {max(figures):,.0f}, worst {min(figures):,.0f} docs/s"


def one_chain(url: str, n: int, rounds: int, chain: str) -> dict[str, Any]:
    """Both ways, `rounds` times, for one workload: each round's docs/s and ratio."""
    with MigrationRegistry.instance().isolated():
        for i, operations in enumerate(CHAINS[chain]):
            register_step(Item, i + 1, i + 2, operations=operations)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for r in range(rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            samples = {}
            for fuse in order:
                seconds, samples[fuse] = asyncio.run(one_run(url, n, fuse))
                rates[fuse].append(n / seconds)
                name = "fused" if fuse else "step by step"
                print(
                    f"  fused, {chain}, round {r + 1}: {name:12} {seconds:6.2f} s "
                    f"{n / seconds:8,.0f} docs/s",
                    file=sys.stderr,
                )
            assert samples[True] == samples[False], samples
    ratios = [f / s for f, s in zip(rates[True], rates[False], strict=True)]
    return {
        "chain": chain,
        "fused_docs_per_s": [round(x) for x in rates[True]],
        "step_docs_per_s": [round(x) for x in rates[False]],
        "ratios": [round(x, 2) for x in ratios],
        "ratio": round(statistics.median(ratios), 2),
    }


def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    """Every workload, fused against step by step (`benchmarks/run.py` section 10)."""
    rows = [one_chain(url, n, rounds, chain) for chain in CHAINS]
    return {"benchmark": "fused", "command": COMMAND, "n": n, "rounds": rounds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", choices=sorted(CHAINS), default="reads-back")
    args = parser.parse_args()
    with server() as url:
        row = one_chain(url, args.n, args.rounds, args.chain)
    fused, steps = row["fused_docs_per_s"], row["step_docs_per_s"]
    print(f"N = {args.n:,}, 5 steps of operations ({args.chain}), {args.rounds} rounds")
    print(f"fused:        {spread(fused)}")
    print(f"step by step: {spread(steps)}")
    print(f"fused / step by step, per round: {', '.join(f'{x:.2f}x' for x in row['ratios'])}")


if __name__ == "__main__":
    main()
