"""Several databases: one command over T tenants against a shell loop of T commands.

T tenant databases of D legacy documents each (the benchmark model, one
step). Timed, as subprocesses, as a deploy runs them:

- ``atomdb-migrate --databases '^bench_tenant_' upgrade --no-progress``: one
  process, one connection, a lock and a history record per database;
- the same work as a loop of ``atomdb-migrate --database NAME upgrade``, one
  process per tenant (what a team without several databases writes);
- then, nothing left to do: the gate ``check --pending`` both ways.

    python benchmarks/bench_tenants.py            # T = 10 and 100, D = 1000
    python benchmarks/bench_tenants.py --quick    # T = 3, D = 200, printed only

With ``--workers``, databases at once instead: the one command over T = 100
tenants of D = 1000 documents with ``--workers`` 1, 2 and 4, against the
same T x D documents in one database (one command, one runner); wall
seconds and the process's CPU seconds (user + system)::

    python benchmarks/bench_tenants.py --workers          # published (tenants_workers)
    python benchmarks/bench_tenants.py --workers --quick  # T = 4, D = 200, printed only

Starts its own SecantusDB server unless MONGO_URL is set. The full run
writes its figures into docs/benchmarks.json and renders docs/benchmarks.md
again.

"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from bench_version_index import command  # noqa: E402

#: The command that reproduces the published figures.
COMMAND = "python benchmarks/bench_tenants.py"

#: The worker counts of ``--workers``.
WORKERS = [1, 2, 4]

#: The database of the one-database case of ``--workers``.
SINGLE = "bench_tenant_all"

PREFIX = "bench_tenant_"
TENANTS = [10, 100]
DOCUMENTS = 1000


def close_dropping_tenants(client: Any) -> None:
    """Drop the benchmark's tenant databases, and close the client."""
    for name in client.list_database_names():
        if name.startswith(PREFIX):
            client.drop_database(name)
    client.close()


def seed(client: MongoClient[dict[str, Any]], tenants: int, documents: int) -> list[str]:
    names = [f"{PREFIX}{i:03d}" for i in range(tenants)]
    for name in names:
        client.drop_database(name)
        client[name][Item.__model__].insert_many(legacy(documents, 0))
    return names


def measure(url: str, counts: list[int], documents: int) -> dict[str, Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            pattern = ["--databases", f"^{PREFIX}"]
            for tenants in counts:
                row: dict[str, Any] = {"tenants": tenants, "documents": documents}
                names = seed(client, tenants, documents)
                row["upgrade_one_command"] = round(
                    command(where, url, *pattern, "upgrade", "--no-progress"), 2
                )
                row["gate_one_command"] = round(
                    command(where, url, *pattern, "check", "--pending"), 2
                )
                names = seed(client, tenants, documents)
                began = time.perf_counter()
                for name in names:
                    command(where, url, "--database", name, "upgrade", "--no-progress")
                row["upgrade_loop"] = round(time.perf_counter() - began, 2)
                began = time.perf_counter()
                for name in names:
                    command(where, url, "--database", name, "check", "--pending")
                row["gate_loop"] = round(time.perf_counter() - began, 2)
                for name in names:
                    done = client[name][Item.__model__].count_documents({"__version__": "2"})
                    assert done == documents, (name, done)
                rows.append(row)
                print(f"  tenants: {row}", file=sys.stderr)
        version = client.server_info().get("version", "?")
    finally:
        close_dropping_tenants(client)
    return {"server": version, "rows": rows}


def timed(where: Path, url: str, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = command(where, url, *args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(wall, 2), round(cpu, 2)


def measure_workers(url: str, tenants: int, documents: int) -> dict[str, Any]:
    """The one command over `tenants` databases with each of `WORKERS`, and the
    same documents in one database."""
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            for workers in WORKERS:
                names = seed(client, tenants, documents)
                wall, cpu = timed(
                    where,
                    url,
                    *("--databases", f"^{PREFIX}\\d"),
                    *("upgrade", "--no-progress", "--workers", str(workers)),
                )
                for name in names:
                    done = client[name][Item.__model__].count_documents({"__version__": "2"})
                    assert done == documents, (name, done)
                rows.append({"case": f"{tenants} databases, --workers {workers}", "s": wall})
                rows[-1].update(cpu_s=cpu, docs_per_s=round(tenants * documents / wall))
                print(f"  {rows[-1]}", file=sys.stderr)
                for name in names:
                    client.drop_database(name)
            client.drop_database(SINGLE)
            coll = client[SINGLE][Item.__model__]
            for start in range(0, tenants * documents, 10000):
                coll.insert_many(legacy(min(10000, tenants * documents - start), start))
            wall, cpu = timed(where, url, "--database", SINGLE, "upgrade", "--no-progress")
            assert coll.count_documents({"__version__": "2"}) == tenants * documents
            rows.append({"case": f"{tenants * documents} documents in one database", "s": wall})
            rows[-1].update(cpu_s=cpu, docs_per_s=round(tenants * documents / wall))
            print(f"  {rows[-1]}", file=sys.stderr)
        version = client.server_info().get("version", "?")
    finally:
        close_dropping_tenants(client)
    return {
        "server": version,
        "tenants": tenants,
        "documents": documents,
        "machine": f"{os.cpu_count()} cores, shared with other work while measured",
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 3, D = 200, printed only")
    parser.add_argument(
        "--workers", action="store_true", help="databases at once (--workers 1, 2, 4)"
    )
    args = parser.parse_args(argv)
    with server() as url:
        if args.workers:
            tenants, documents = (4, 200) if args.quick else (100, DOCUMENTS)
            result = measure_workers(url, tenants, documents)
        else:
            result = measure(url, [3] if args.quick else TENANTS, 200 if args.quick else DOCUMENTS)
    flags = (" --workers" if args.workers else "") + (" --quick" if args.quick else "")
    result["command"] = COMMAND + flags
    if not args.quick:
        import run

        run.publish("tenants_workers" if args.workers else "tenants", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
