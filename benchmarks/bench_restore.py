"""Read cost: VersionedModel.restore against atom-db's NoSQLModel.restore.

Runs in process (no server: ``restore(state)`` of documents already read).
Both models have the same fields; rounds alternate between them and the
median round is reported, so drift in the machine's speed hits both sides.

    python benchmarks/bench_restore.py            # N = 20000, 15 rounds
    python benchmarks/bench_restore.py --quick    # N = 2000, 5 rounds

"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from typing import Any

import atomdb
import bson
from atom.api import Bool, Dict, Float, Instance, Int, List, Str
from atomdb.nosql import NoSQLModel, NoSQLModelManager
from mongomock_motor import AsyncMongoMockClient

import atomdb_migrate
from atomdb_migrate import VersionedModel, register_step


class Tag(NoSQLModel):
    name = Str()


class PlainUser(NoSQLModel):
    name = Str()
    email = Str()
    age = Int()
    score = Float()
    active = Bool()
    settings = Dict()
    tags = List(str)
    owner = Instance(Tag)


class VersionedUser(VersionedModel):
    __version__ = 10

    name = Str()
    email = Str()
    age = Int()
    score = Float()
    active = Bool()
    settings = Dict()
    tags = List(str)
    owner = Instance(Tag)


def trivial(doc: dict[str, Any]) -> None:
    doc["touched"] = True


for v in range(10):
    register_step(VersionedUser, v, v + 1, trivial)


def state(version: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": bson.ObjectId(),
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "age": 36,
        "score": 9.5,
        "active": True,
        "settings": {"theme": "dark", "font-size": 14},
        "tags": ["math", "engines"],
        "owner": None,
        "__ref__": 1,
    }
    if version is not None:
        doc["__version__"] = str(version)
    return doc


#: The clock: wall time, or with ``--cpu`` the process's CPU time, which
#: other processes on a shared machine disturb less.
CLOCK = time.perf_counter


async def restore_all(model: type[NoSQLModel], states: list[dict[str, Any]]) -> float:
    restore = model.restore
    start = CLOCK()
    for s in states:
        await restore(s)
    return CLOCK() - start


async def measure(n: int, rounds: int) -> dict[str, Any]:
    NoSQLModelManager.instance().database = AsyncMongoMockClient().bench
    cases: dict[str, tuple[type[NoSQLModel], int | None]] = {
        "atom-db NoSQLModel": (PlainUser, None),
        "VersionedModel, current": (VersionedUser, 10),
        "VersionedModel, 1 step behind": (VersionedUser, 9),
        "VersionedModel, 2 steps behind": (VersionedUser, 8),
        "VersionedModel, 3 steps behind": (VersionedUser, 7),
        "VersionedModel, 10 steps behind": (VersionedUser, 0),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for label, (model, version) in cases.items():
            # States are made outside the timed part; each has a new _id, so
            # no restore is served from the object cache.
            states = [state(version) for _ in range(n)]
            times[label].append(await restore_all(model, states))
    base = statistics.median(times["atom-db NoSQLModel"])
    rows = []
    for label, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "case": label,
                "n": n,
                "median_s": round(med, 4),
                "us_per_doc": round(med / n * 1e6, 2),
                "ratio": round(med / base, 3),
            }
        )
    return {
        "benchmark": "restore",
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "versions": {
            "atomdb_migrate": atomdb_migrate.__version__,
            "atom-db": getattr(atomdb, "__version__", "0.8.5"),
        },
        "rounds": rounds,
        "clock": "cpu" if CLOCK is time.process_time else "wall",
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Restore, in process, N = {result['rows'][0]['n']}, median of {result['rounds']} "
        f"rounds ({result['clock']} time); {result['machine']}",
        "",
        "| case | µs per document | ratio to atom-db |",
        "|---|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['us_per_doc']} | {r['ratio']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, for CI")
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--cpu", action="store_true", help="time CPU, not wall (a shared machine)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu else time.perf_counter
    n = args.n or (2000 if args.quick else 20000)
    rounds = args.rounds or (5 if args.quick else 15)
    result = asyncio.run(measure(n, rounds))
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
