"""Two checkouts of the package side by side, whole processes, interleaved A/B/A/B.

Runs one workload of ``peers.py`` (the same project, data and change) with
the package of checkout A, then of B, then A again..., seeding the data
afresh before each run, and prints each round and the medians. On a shared
machine the rounds interleave so that a change of load falls on both.

    git archive HEAD atomdb_migrate | tar -x -C /tmp/base   # the package before a change
    python benchmarks/ab_processes.py /tmp/base . rename --rounds 5
    python benchmarks/ab_processes.py /tmp/base . nothing -n 30000

``nothing`` applies the rename once (not timed), then times the same
command again: a run with nothing to do. The compiled modules of each
checkout are kept in a scratch directory, as an installed package has them.
Starts its own SecantusDB server unless ``MONGO_URL`` is set.

"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
from bench_upgrade import server  # noqa: E402


def timed(cmd: list[str], where: Path, root: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(root)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=where, env=env, capture_output=True)
    took = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr.decode()[-2000:])
    return took


def measure(url: str, roots: list[Path], workload: str, n: int, rounds: int) -> dict[str, Any]:
    client: MongoClient[Any] = MongoClient(url)
    base = "rename" if workload == "nothing" else workload
    times: dict[str, list[float]] = {str(r): [] for r in roots}
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-ab-") as tmp:
            where = peers.projects(Path(tmp), base)["atomdb-migrate"]
            cmd = peers.command("atomdb-migrate", Path(tmp), url)
            caches = [Path(tmp) / f"pycache-{i}" for i in range(len(roots))]
            for root, cache in zip(roots, caches, strict=True):  # compile once, untimed
                timed([sys.executable, "-c", "import atomdb_migrate.cli"], where, root, cache)
            for r in range(rounds):
                for root, cache in zip(roots, caches, strict=True):
                    peers.seed(client, n)
                    if workload == "nothing":
                        timed(cmd, where, root, cache)
                    took = timed(cmd, where, root, cache)
                    if peers.applied(client, base) != n:
                        raise RuntimeError(f"{root}: the change is not on every document")
                    times[str(root)].append(took)
                line = "  ".join(f"{v[-1]:.2f}" for v in times.values())
                print(f"  round {r + 1}: {line}", file=sys.stderr, flush=True)
    finally:
        client.close()
    return {
        root: {"median_s": round(statistics.median(v), 3), "all_s": [round(t, 3) for t in v]}
        for root, v in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (holding atomdb_migrate/)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("workload", choices=("split", "rename", "nothing"))
    parser.add_argument("-n", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    roots = [args.a.resolve(), args.b.resolve()]
    with server() as url:
        result = measure(url, roots, args.workload, args.n, args.rounds)
    for root, row in result.items():
        print(f"{root}: median {row['median_s']} s, rounds {row['all_s']}")
    a, b = (result[str(r)]["median_s"] for r in roots)
    print(f"B / A = {b / a:.3f} ({args.workload}, N = {args.n}, {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
