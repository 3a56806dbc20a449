"""A run with nothing to do, and the deploy gate: with and without the version index.

N documents of the benchmark model, every one at the code's version. The
command as a deploy runs it, as a subprocess, best of the rounds:

- ``atomdb-migrate upgrade --no-progress`` (nothing to do);
- ``atomdb-migrate check --pending`` (the gate).

Each without the toolkit's index (``version-index = false``), then with it
(which the first ``upgrade`` creates). Then 1% of the documents put back at
the older version, and ``upgrade`` timed taking them.

    python benchmarks/bench_version_index.py            # N = 10k, 100k, 1M
    python benchmarks/bench_version_index.py --quick    # N = 2000, printed only

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

SIZES = [10000, 100000, 1000000]
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
                    coll.update_many({"_id": {"$gt": first}}, {"$set": {"__version__": "1"}})
                    row[f"upgrade_1pct_{key}"] = round(
                        command(where, target, "upgrade", "--no-progress"), 2
                    )
                    if not indexed:
                        coll.drop_indexes()
                rows.append(row)
                print(f"  version index: {row}", file=sys.stderr)
        version = client.server_info().get("version", "?")
    finally:
        client.drop_database(db.name)
        client.close()
    return {"rounds": rounds, "server": version, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000, printed only")
    args = parser.parse_args(argv)
    with server() as url:
        result = measure(url, [2000] if args.quick else SIZES, 1 if args.quick else ROUNDS)
    result["command"] = COMMAND + (" --quick" if args.quick else "")
    if not args.quick:
        import run

        run.publish("version_index", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
