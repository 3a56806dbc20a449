"""One upgrade, many workers: throughput with 1, 2 and 4 workers, and the client's CPU.

N legacy documents of the benchmark model (one Python step), upgraded by
``atomdb-migrate upgrade --no-progress`` as a subprocess, in these shapes:

- ``--workers 1``: one runner, as before (no ranges);
- ``--workers 2`` and ``--workers 4``: asyncio tasks on one client in one
  process, each taking ranges of ``_id``;
- ``2 processes x 2``: ``--workers 2`` and one ``upgrade --join --workers 2``
  started beside it (the ranges shared by two processes: what threads or
  processes would add).

Each figure is the wall time of the whole run (the joined one: until both
processes ended), documents per second, and the client's CPU (user + system,
every process of the run) per document. Best of ``--rounds``.

    python benchmarks/bench_workers.py             # N = 20000, 3 rounds
    python benchmarks/bench_workers.py --quick     # N = 3000, 1 round

Starts its own SecantusDB server unless MONGO_URL is set. Prints a Markdown
table (docs/scale.md quotes it).

"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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

from bench_upgrade import Item, legacy, project, server  # noqa: E402

DATABASE = "bench_workers"

#: (label, the commands started together: each a list of upgrade's arguments).
SHAPES: list[tuple[str, list[list[str]]]] = [
    ("1 worker", [["--workers", "1"]]),
    ("2 workers, 1 process", [["--workers", "2"]]),
    ("4 workers, 1 process", [["--workers", "4"]]),
    ("2 processes x 2 workers", [["--workers", "2"], ["--join", "--workers", "2"]]),
]


def spawn(where: Path, url: str, args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
    command = [exe, "--url", f"{url}/{DATABASE}", "upgrade", "--no-progress", *args]
    return subprocess.Popen(command, cwd=where, env=env, stdout=subprocess.DEVNULL)


def one_run(where: Path, url: str, shape: list[list[str]], n: int) -> tuple[float, float]:
    """Seconds and client CPU seconds of one run of `shape` over `n` fresh documents."""
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    client.drop_database(DATABASE)
    client[DATABASE][Item.__model__].insert_many(legacy(n))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    procs = [spawn(where, url, shape[0])]
    if len(shape) > 1:
        time.sleep(0.2)
        procs += [spawn(where, url, args) for args in shape[1:]]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = client[DATABASE][Item.__model__].count_documents({"__version__": "2"})
    client.drop_database(DATABASE)
    client.close()
    if any(codes) or done != n:
        raise RuntimeError(f"exit codes {codes}, {done} of {n} upgraded")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return elapsed, cpu


def measure(url: str, n: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
        where = project(Path(tmp))
        for label, shape in SHAPES:
            best = min((one_run(where, url, shape, n) for _ in range(rounds)), key=lambda r: r[0])
            seconds, cpu = best
            rows.append(
                {
                    "shape": label,
                    "seconds": round(seconds, 2),
                    "docs_per_s": round(n / seconds),
                    "client_cpu_us_per_doc": round(cpu / n * 1e6, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], n: int, rounds: int) -> str:
    lines = [
        f"{n} documents, one Python step, best of {rounds}; {platform.machine()}, "
        f"{os.cpu_count()} cores, server and client on the same machine",
        "",
        "| shape | seconds | docs/s | client CPU (µs/doc, whole process) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['shape']} | {r['seconds']} | {r['docs_per_s']} | {r['client_cpu_us_per_doc']} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3000 documents, one round")
    parser.add_argument("-n", type=int, default=20000, help="documents")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n, rounds = (3000, 1) if args.quick else (args.n, args.rounds)
    with server() as url:
        rows = measure(url, n, rounds)
    print(markdown(rows, n, rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
