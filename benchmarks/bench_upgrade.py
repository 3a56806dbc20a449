"""Eager upgrade throughput: ``atomdb-migrate upgrade`` against hand-written PyMongo loops.

Four cases take the same N legacy documents through the same one-line step
on the same server in one run, alternating, with the collection reseeded
before each:

- the naive loop: find in ``_id`` order, and per batch of 1000 one unordered
  ``bulk_write`` of ``ReplaceOne`` by ``_id``, waiting for each write before
  reading on. It overwrites any concurrent change.
- the guarded loop: the same, with ``UpdateOne`` filtered on the whole
  document as read and ``$set``/``$unset`` of what changed, so a document
  changed meanwhile is left alone (what a careful user writes).
- the whole ``atomdb-migrate upgrade --no-progress`` process, as a deployment
  runs it: start-up, lock, survey, history and all.
  The collection holds the toolkit's version index before it, as the
  previous release's upgrade left it (the run drops it and builds it after
  when most of the collection is pending: ``version-index-rebuild-at``).
- the same command in a project with ``version-index = false``: what the
  index costs a full rewrite.

The loops' client CPU is this process's CPU time; the command's is its
children's (user + system), from ``getrusage``.

    python benchmarks/bench_upgrade.py              # N = 50000 and 100000
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
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from atom.api import Int, Str
from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atomdb_migrate  # noqa: E402
from atomdb_migrate import VersionedModel, register_step  # noqa: E402
from atomdb_migrate.core.storage import VERSION_INDEX, VERSION_INDEX_KEYS  # noqa: E402


class Item(VersionedModel):
    __model__ = "bench.Item"
    __version__ = 2
    __base_version__ = 1

    name = Str()
    qty = Int()
    label = Str()


def label(doc: dict[str, Any]) -> None:
    doc["label"] = doc["name"].upper()


register_step(Item, 1, 2, label)

BATCH = 1000

#: The project the command runs in: the same model and step as a module.
MODELS = """
from atom.api import Int, Str
from atomdb_migrate import VersionedModel

class Item(VersionedModel):
    __model__ = "bench.Item"
    __version__ = 2
    __base_version__ = 1
    name = Str()
    qty = Int()
    label = Str()
"""

STEP = '''
"""Label each item with its name in capitals."""

model = "bench.Item"
from_version = "1"
to_version = "2"


def upgrade(doc):
    doc["label"] = doc["name"].upper()
'''

PYPROJECT = """
[tool.atomdb-migrate]
models = ["benchmodels"]
migrations = "migrations"
timeout = 10
"""

#: The same project without the toolkit's version index (``version-index = false``).
NO_INDEX = "version-index = false\n"

#: Runs a command; prints its exit code, the peak RSS of its process tree's
#: largest process (kB), the wall time, and its CPU time (user + system): a
#: fresh parent per measurement, so earlier runs do not count.
WRAPPER = textwrap.dedent(
    """
    import resource, subprocess, sys, time
    start = time.perf_counter()
    code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(code, usage.ru_maxrss, elapsed, usage.ru_utime + usage.ru_stime)
    """
)


def legacy(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "name": f"item {i}",
            "qty": i % 97,
            "tags": ["a", "b"],
            "__model__": Item.__model__,
            "__version__": "1",
        }
        for i in range(offset, offset + n)
    ]


async def seed(coll: Any, n: int) -> None:
    await coll.drop()
    for start in range(0, n, 20000):
        await coll.insert_many(legacy(min(20000, n - start), start), ordered=False)


async def hand_loop(coll: Any) -> int:
    """The naive loop a user writes with PyMongo: ``ReplaceOne`` by ``_id``."""
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


async def guarded_loop(coll: Any) -> int:
    """The careful loop: ``UpdateOne`` filtered on the document as read."""
    written = 0
    batch: list[UpdateOne[Any]] = []
    async for doc in coll.find({"__version__": "1"}).sort("_id", 1).batch_size(BATCH):
        new = dict(doc)
        label(new)
        new["__version__"] = "2"
        changed = {k: v for k, v in new.items() if k not in doc or doc[k] != v}
        gone = {k: "" for k in doc if k not in new}
        update: dict[str, Any] = {"$set": changed}
        if gone:
            update["$unset"] = gone
        batch.append(UpdateOne(dict(doc), update))
        if len(batch) == BATCH:
            written += (await coll.bulk_write(batch, ordered=False)).modified_count
            batch = []
    if batch:
        written += (await coll.bulk_write(batch, ordered=False)).modified_count
    return written


def project(tmp: Path, *, index: bool = True) -> Path:
    """A project directory with the model and the step as modules (without the
    version index when `index` is false)."""
    tmp.mkdir(exist_ok=True)
    (tmp / "benchmodels.py").write_text(MODELS)
    (tmp / "migrations").mkdir(exist_ok=True)
    (tmp / "migrations" / "0001_label.py").write_text(STEP)
    (tmp / "pyproject.toml").write_text(PYPROJECT + ("" if index else NO_INDEX))
    return tmp


def run_command(where: Path, url: str) -> tuple[float, float, int]:
    """``atomdb-migrate upgrade --no-progress`` in `where`: (seconds, CPU seconds, peak RSS kB).

    The package is imported from this checkout, whatever is installed.

    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
    command = [exe, "--url", url, "upgrade", "--no-progress"]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command],
        cwd=where,
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )
    code, rss_kb, elapsed, cpu = out.stdout.split()
    if code != "0":
        raise RuntimeError(f"atomdb-migrate upgrade exited {code}: {out.stderr}")
    return float(elapsed), float(cpu), int(rss_kb)


CASES = ("naive loop", "guarded loop", "atomdb-migrate upgrade")
#: The command again, with ``version-index = false``: what the index costs.
NO_INDEX_CASE = "atomdb-migrate upgrade, no version index"


async def measure(url: str, sizes: list[int], rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    db = client["atomdb_migrate_bench"]
    coll = db[Item.__model__]
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            bare = project(Path(tmp) / "no-index", index=False)
            cases = (*CASES, NO_INDEX_CASE)
            for n in sizes:
                times: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
                for _ in range(rounds):
                    for case in cases:
                        await seed(coll, n)
                        if case == "atomdb-migrate upgrade":
                            # As the previous release's upgrade left it.
                            await coll.create_index(VERSION_INDEX_KEYS, name=VERSION_INDEX)
                        start, cpu = time.perf_counter(), time.process_time()
                        if case == "naive loop":
                            done = await hand_loop(coll)
                        elif case == "guarded loop":
                            done = await guarded_loop(coll)
                        else:
                            done = n
                            elapsed, used, _ = await asyncio.to_thread(
                                run_command,
                                where if case == "atomdb-migrate upgrade" else bare,
                                f"{url}/{db.name}",
                            )
                        if case in CASES[:2]:
                            elapsed = time.perf_counter() - start
                            used = time.process_time() - cpu
                        assert done == n, (case, done, n)
                        assert await coll.count_documents({"__version__": "2"}) == n, case
                        times[case].append((elapsed, used))
                        print(f"  upgrade: N={n} {case}: {elapsed:.2f} s", file=sys.stderr)
                best = {case: min(v) for case, v in times.items()}
                own = best["atomdb-migrate upgrade"][0]
                rows.append(
                    {
                        "n": n,
                        **{
                            case: {
                                "docs_per_s": round(n / seconds),
                                "seconds": round(seconds, 2),
                                "client_cpu_us_per_doc": round(cpu / n * 1e6, 1),
                            }
                            for case, (seconds, cpu) in best.items()
                        },
                        "ratio_to_guarded": round(best["guarded loop"][0] / own, 3),
                        "ratio_to_naive": round(best["naive loop"][0] / own, 3),
                        "no_index_ratio_to_guarded": round(
                            best["guarded loop"][0] / best[NO_INDEX_CASE][0], 3
                        ),
                        "no_index_ratio_to_naive": round(
                            best["naive loop"][0] / best[NO_INDEX_CASE][0], 3
                        ),
                        "with_index_to_without": round(best[NO_INDEX_CASE][0] / own, 3),
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
        "| N | case | docs/s | client CPU (µs/doc) |",
        "|---:|---|---:|---:|",
    ]
    for r in result["rows"]:
        for case in (*CASES, NO_INDEX_CASE):
            c = r[case]
            lines.append(
                f"| {r['n']} | {case} | {c['docs_per_s']} | {c['client_cpu_us_per_doc']} |"
            )
        lines.append(
            f"| {r['n']} | **ratio** | {r['ratio_to_guarded']} to guarded, "
            f"{r['ratio_to_naive']} to naive | |"
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
    return command_line(argv, __doc__, measure, markdown, [50000, 100000])


if __name__ == "__main__":
    sys.exit(main())
