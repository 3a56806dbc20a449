"""A run with nothing to do, and the deploy gate: with and without the version index.

N documents of the benchmark model, every one at the code's version. The
command as a deploy runs it, as a subprocess, best of the rounds:

- ``atomdb-migrate upgrade --no-progress`` (nothing to do);
- ``atomdb-migrate check --pending`` (the gate).

Each without the toolkit's index (``version-index = false``), then with it
(which the first ``upgrade`` creates). Then 1% of the documents put back at
the older version, and ``upgrade`` timed taking them.

    python benchmarks/bench_version_index.py            # N = 10k, 200k, 1M
    python benchmarks/bench_version_index.py --quick    # N = 2000, printed only
    python benchmarks/bench_version_index.py --sizes 200000 --rounds 3   # printed only

The crossover (printed only): N documents, a share of them pending, an
``upgrade`` that keeps the index (``--version-index-rebuild-at 1``) against
one that drops it and builds it after the writes (``--version-index-rebuild-at
0``), each round timed (min and max printed):

    python benchmarks/bench_version_index.py --crossover [--n 20000] [--rounds 3]

The survey (printed only): the stored versions counted by the one
aggregation against one count per known form on the index (forced, whatever
the count's plan: SecantusDB's fetches every document):

    python benchmarks/bench_version_index.py --survey [--n 100000] [--rounds 3]

Starts its own SecantusDB server unless MONGO_URL is set. The full run
writes its figures into docs/benchmarks.json and renders docs/benchmarks.md
again.

"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upgrade import Item, project, server  # noqa: E402

#: The command that reproduces the published figures.
COMMAND = "python benchmarks/bench_version_index.py"

SIZES = [10000, 200000, 1000000]
ROUNDS = 2


def command(where: Path, url: str, *args: str) -> float:
    """Seconds the command took (it must exit 0)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
    began = time.perf_counter()
    out = subprocess.run(
        [exe, "--url", url, *args], cwd=where, env=env, text=True, capture_output=True
    )
    elapsed = time.perf_counter() - began
    if out.returncode != 0:
        raise RuntimeError(f"atomdb-migrate {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return elapsed


def seed(coll: Any, n: int) -> None:
    coll.drop()
    for start in range(0, n, 50000):
        coll.insert_many(
            [
                {"name": f"item {i}", "qty": i % 97, "label": f"ITEM {i}", "__version__": "2"}
                for i in range(start, min(n, start + 50000))
            ],
            ordered=False,
        )


def measure(url: str, sizes: list[int], rounds: int) -> dict[str, Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    db = client["atomdb_migrate_bench_index"]
    coll = db[Item.__model__]
    target = f"{url}/{db.name}"
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            pyproject = where / "pyproject.toml"
            base = pyproject.read_text()
            for n in sizes:
                seed(coll, n)
                row: dict[str, Any] = {"n": n}
                for indexed in (False, True):
                    pyproject.write_text(base + f"version-index = {str(indexed).lower()}\n")
                    if indexed:
                        command(where, target, "upgrade", "--no-progress")  # creates it
                    key = "with" if indexed else "without"
                    row[f"noop_upgrade_{key}"] = round(
                        min(
                            command(where, target, "upgrade", "--no-progress")
                            for _ in range(rounds)
                        ),
                        2,
                    )
                    row[f"check_pending_{key}"] = round(
                        min(command(where, target, "check", "--pending") for _ in range(rounds)), 2
                    )
                    # 1% behind: what the run takes then.
                    # The last 1% by _id (a range: $in of many _ids scans on SecantusDB).
                    edge = coll.find({}, {"_id": 1}).sort("_id", -1).skip(n // 100).limit(1)
                    first = next(iter(edge))["_id"]
                    times = []
                    for _ in range(rounds):  # the same 1% put back each round
                        coll.update_many({"_id": {"$gt": first}}, {"$set": {"__version__": "1"}})
                        times.append(command(where, target, "upgrade", "--no-progress"))
                    row[f"upgrade_1pct_{key}"] = round(min(times), 2)
                    row[f"upgrade_1pct_{key}_max"] = round(max(times), 2)
                    if not indexed:
                        coll.drop_indexes()
                rows.append(row)
                print(f"  version index: {row}", file=sys.stderr)
        version = client.server_info().get("version", "?")
    finally:
        client.drop_database(db.name)
        client.close()
    return {"rounds": rounds, "server": version, "rows": rows}


#: The shares of the collection pending the crossover measures.
SHARES = [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]


def put_back(coll: Any, n: int, share: float) -> None:
    """Every document current, then the first `share` of them (by ``_id``) put back
    at version 1 (a range of ``_id``, so that the setting up reads little)."""
    coll.update_many({"__version__": {"$ne": "2"}}, {"$set": {"__version__": "2"}})
    count = int(n * share)
    if not count:
        return
    edge = coll.find({}, {"_id": 1}).sort("_id", 1).skip(count - 1).limit(1)
    last = next(iter(edge))["_id"]
    coll.update_many({"_id": {"$lte": last}}, {"$set": {"__version__": "1"}})


def crossover(url: str, n: int, rounds: int) -> dict[str, Any]:
    """Per share pending: the upgrade's seconds keeping the index, and dropping it."""
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    db = client["atomdb_migrate_bench_crossover"]
    coll = db[Item.__model__]
    target = f"{url}/{db.name}"
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            seed(coll, n)
            command(where, target, "upgrade", "--no-progress")  # creates the index
            for share in SHARES:
                row: dict[str, Any] = {"n": n, "share": share}
                for mode, at in (("keep", "1"), ("rebuild", "0")):
                    times = []
                    for _ in range(rounds):
                        put_back(coll, n, share)
                        times.append(
                            command(
                                where,
                                target,
                                "upgrade",
                                "--no-progress",
                                "--version-index-rebuild-at",
                                at,
                            )
                        )
                        assert "atomdb_migrate_version" in coll.index_information()
                    row[mode] = [round(min(times), 2), round(max(times), 2)]
                rows.append(row)
                print(f"  crossover: {row}", file=sys.stderr)
    finally:
        client.drop_database(db.name)
        client.close()
    return {"rounds": rounds, "rows": rows}


def survey_times(url: str, n: int, rounds: int) -> dict[str, Any]:
    """Seconds of the survey's aggregation, and of the counts per form on the index
    (forced), with 1% of the documents behind."""
    import asyncio

    from pymongo import AsyncMongoClient

    from atomdb_migrate.driver import index_counts
    from atomdb_migrate.driver.mongo import count_versions

    sync: MongoClient[dict[str, Any]] = MongoClient(url)
    db = sync["atomdb_migrate_bench_survey"]
    seed(db[Item.__model__], n)
    put_back(db[Item.__model__], n, 0.01)
    db[Item.__model__].create_index([("__version__", 1), ("_id", 1)], name="atomdb_migrate_version")
    forms = ["1", 1, "2", 2]

    async def timed() -> dict[str, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        coll = client[db.name][Item.__model__]
        plan = await index_counts._explain_count(coll, "2")
        out: dict[str, Any] = {"count_plan_is_count_scan": index_counts.counts_on_index(plan)}
        index_counts.counts_on_index = lambda plan: True  # forced
        scan, counts = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            a = await count_versions(coll)
            scan.append(time.perf_counter() - began)
            began = time.perf_counter()
            b = await index_counts.indexed_version_counts(coll, forms)
            counts.append(time.perf_counter() - began)
            assert sorted(map(repr, a)) == sorted(map(repr, b or [])), (a, b)
        await client.close()
        out["scan"] = [round(min(scan), 2), round(max(scan), 2)]
        out["index_counts"] = [round(min(counts), 2), round(max(counts), 2)]
        return out

    try:
        return {"n": n, "rounds": rounds, **asyncio.run(timed())}
    finally:
        sync.drop_database(db.name)
        sync.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000, printed only")
    parser.add_argument("--crossover", action="store_true", help="keep or drop, per share")
    parser.add_argument("--survey", action="store_true", help="the survey's two forms")
    parser.add_argument("--sizes", type=int, nargs="*", help="N of the main table, printed only")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    with server() as url:
        if args.crossover:
            print(json.dumps(crossover(url, args.n or 20000, args.rounds or 3), indent=2))
            return 0
        if args.survey:
            print(json.dumps(survey_times(url, args.n or 100000, args.rounds or 3), indent=2))
            return 0
        sizes = args.sizes or ([2000] if args.quick else SIZES)
        result = measure(url, sizes, rounds)
    result["command"] = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    if not (args.quick or args.sizes):
        import run

        run.publish("version_index", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
