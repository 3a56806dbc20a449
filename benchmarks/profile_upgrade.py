"""Where the eager upgrade's time goes: the server's CPU against the client's.

Runs the hand-written PyMongo loop and the runner alternately on N documents
(as ``bench_upgrade.py`` does) and reads the CPU time of the SecantusDB
server process from ``/proc`` around each run.

    python benchmarks/profile_upgrade.py          # N = 20000
    python benchmarks/profile_upgrade.py --tree   # pyinstrument of the runner process

Linux only; starts its own SecantusDB server (``MONGO_URL`` is not used: the
server's process must be on this machine).

"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from pymongo import AsyncMongoClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_upgrade  # noqa: E402

from atomdb_migrate.engine.runner import Runner, RunOptions  # noqa: E402
from tests.servers import secantus_server  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def tree(url: str, n: int) -> str:
    from pyinstrument import Profiler

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    db = client["atomdb_migrate_profile"]
    await bench_upgrade.seed(db[bench_upgrade.Item.__model__], n)
    profiler = Profiler(async_mode="enabled")
    with profiler:
        await Runner(db, RunOptions(batch_size=bench_upgrade.BATCH)).upgrade(bench_upgrade.Item)
    await client.drop_database(db.name)
    await client.close()
    return str(profiler.output_text())


async def one(url: str, pid: int, case: str, n: int) -> str:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    db = client["atomdb_migrate_profile"]
    coll = db[bench_upgrade.Item.__model__]
    await bench_upgrade.seed(coll, n)
    server, mine, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
    if case == "runner":
        await Runner(db, RunOptions(batch_size=bench_upgrade.BATCH)).upgrade(bench_upgrade.Item)
    else:
        await bench_upgrade.hand_loop(coll)
    wall = time.perf_counter() - start
    server = cpu_seconds(pid) - server
    mine = time.process_time() - mine
    await client.drop_database(db.name)
    await client.close()
    return (
        f"| {case} | {wall:.2f} s | {server:.2f} s | {mine:.2f} s | "
        f"{server / n * 1e6:.0f} µs | {n / wall:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--tree", action="store_true", help="pyinstrument's call tree")
    args = parser.parse_args(argv)
    with secantus_server() as url:
        if args.tree:
            print(asyncio.run(tree(url, args.n)))
            return 0
        port = url.rsplit(":", 1)[1]
        pid = int(
            subprocess.check_output(
                ["pgrep", "-f", "--", f"secantusd-py.*--port {port}"], text=True
            ).split()[0]
        )
        print("| case | wall | server CPU | client CPU | server CPU per document | docs/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for case in ("loop", "runner", "loop", "runner"):
            print(asyncio.run(one(url, pid, case, args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
