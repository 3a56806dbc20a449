"""Start-up: whole processes with nothing to do.

A project of three versioned models, one step each (two Python steps, one of
operations), and 30,000 documents already at the code's version (10,000 a
model), upgraded once beforehand so that the toolkit's version index exists.
Timed, as subprocesses, as a deploy or a CI gate runs them:

- ``atomdb-migrate upgrade --no-progress``: nothing to do, but the lock, the
  survey, the checksums and the history record all the same;
- ``atomdb-migrate check --pending``: the deploy gate;
- ``atomdb-migrate --help``: the command line alone;
- ``upgrade`` again on a database without documents: all of the above but
  the survey's reading of the stored versions, which grows with the data.

Each command runs ``--rounds`` times (default 9), the three interleaved; the
median is the figure, the minimum and maximum the spread (the machine may be
shared), and the median CPU time of the process (user + system), which a
busy machine disturbs less. The processes keep their compiled modules in a
scratch directory, as an installed package does (``pip`` compiles them);
``--no-bytecode-cache`` compiles every module at each start instead, as
under ``PYTHONDONTWRITEBYTECODE=1`` from a source checkout. ``--profile``
also prints where the time of one ``upgrade`` goes (cProfile of the whole
process, the top entries by cumulative time).

    python benchmarks/bench_startup.py                # 9 rounds, printed and published
    python benchmarks/bench_startup.py --quick        # 3 rounds, printed only
    python benchmarks/bench_startup.py --profile      # and one profiled upgrade
    python benchmarks/bench_startup.py --package DIR  # another checkout's package, to compare

Starts its own SecantusDB server unless MONGO_URL is set. The full run
writes its figures into docs/benchmarks.json and renders docs/benchmarks.md
again.

"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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

from bench_upgrade import server  # noqa: E402

#: The command that reproduces the published figures.
COMMAND = "python benchmarks/bench_startup.py"

#: The checkout whose package is timed (``--package``: an older one, to compare).
PACKAGE = ROOT
#: Where the timed processes keep their compiled modules (empty: none kept,
#: every module compiled at each start, as with PYTHONDONTWRITEBYTECODE).
CACHE = ""

DATABASE = "bench_startup"
DOCUMENTS = 10_000  # a model

MODELS = """
from atom.api import Int, Str
from atomdb_migrate import VersionedModel


class Customer(VersionedModel):
    __model__ = "bench.Customer"
    __version__ = 2
    __base_version__ = 1
    name = Str()
    email = Str()


class Order(VersionedModel):
    __model__ = "bench.Order"
    __version__ = 2
    __base_version__ = 1
    number = Int()
    status = Str()


class Product(VersionedModel):
    __model__ = "bench.Product"
    __version__ = 2
    __base_version__ = 1
    title = Str()
    price = Int()
"""

STEPS = {
    "0001_customer_email.py": '''
"""Customers get an email."""

model = "bench.Customer"
from_version = "1"
to_version = "2"
changes = ["email"]
schema = {"name": "Str", "email": "Str"}


def upgrade(doc):
    doc["email"] = doc["name"].lower() + "@example.com"
''',
    "0002_order_status.py": '''
"""Orders get a status."""

model = "bench.Order"
from_version = "1"
to_version = "2"
changes = ["status"]
schema = {"number": "Int", "status": "Str"}


def upgrade(doc):
    doc["status"] = "open"
''',
    "0003_product_rename.py": '''
"""Products: name becomes title."""

from atomdb_migrate import ops

model = "bench.Product"
from_version = "1"
to_version = "2"
operations = [ops.rename_field("name", "title")]
schema = {"title": "Str", "price": "Int"}
''',
}

PYPROJECT = """
[tool.atomdb-migrate]
models = ["startupmodels"]
migrations = "migrations"
timeout = 10
"""

#: The database of the same models with no documents.
EMPTY = "bench_startup_empty"

#: The commands timed, by name.
COMMANDS: dict[str, list[str]] = {
    "upgrade": ["--database", DATABASE, "upgrade", "--no-progress"],
    "check_pending": ["--database", DATABASE, "check", "--pending"],
    "help": ["--help"],
    # The same models with no documents: everything but reading the stored
    # versions (the survey), whose cost grows with the collections.
    "upgrade_no_documents": ["--database", EMPTY, "upgrade", "--no-progress"],
}


def project(tmp: Path) -> Path:
    """A project directory with the models and their steps as modules."""
    (tmp / "startupmodels.py").write_text(MODELS)
    (tmp / "migrations").mkdir(exist_ok=True)
    for name, text in STEPS.items():
        (tmp / "migrations" / name).write_text(text)
    (tmp / "pyproject.toml").write_text(PYPROJECT)
    return tmp


def seed(client: MongoClient[dict[str, Any]], documents: int) -> None:
    """Legacy documents (version 1) for each model; the first upgrade takes them to 2."""
    db = client[DATABASE]
    client.drop_database(DATABASE)
    shapes = {
        "bench.Customer": lambda i: {"name": f"Customer {i}"},
        "bench.Order": lambda i: {"number": i},
        "bench.Product": lambda i: {"name": f"product {i}", "price": i % 100},
    }
    for model, shape in shapes.items():
        db[model].insert_many(
            [{**shape(i), "__model__": model, "__version__": "1"} for i in range(documents)],
            ordered=False,
        )


def run(
    where: Path, url: str, args: list[str], prefix: list[str] | None = None
) -> tuple[float, float]:
    """Seconds one whole process took (it must exit 0), and its CPU seconds (user + system)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(PACKAGE)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    if CACHE:
        # As an installed package runs: its modules compiled once, not at each start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = CACHE
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
    argv = [*(prefix or []), exe, "--url", url, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    out = subprocess.run(argv, cwd=where, env=env, text=True, capture_output=True)
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"atomdb-migrate {' '.join(args)} exited {out.returncode}: {out.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def spread(runs: list[tuple[float, float]]) -> dict[str, float]:
    """The median wall time, its spread (minimum, maximum), and the median CPU time."""
    walls = [wall for wall, _ in runs]
    return {
        "median_s": round(statistics.median(walls), 3),
        "min_s": round(min(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpu for _, cpu in runs), 3),
    }


def profile(where: Path, url: str) -> None:
    """cProfile of one whole ``upgrade`` process, the top 30 by cumulative time."""
    out = where / "upgrade.prof"
    run(where, url, COMMANDS["upgrade"], [sys.executable, "-m", "cProfile", "-o", str(out)])
    import pstats

    pstats.Stats(str(out), stream=sys.stderr).sort_stats("cumulative").print_stats(30)


def measure(url: str, rounds: int, documents: int, profiled: bool) -> dict[str, Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
            where = project(Path(tmp))
            seed(client, documents)
            run(where, url, COMMANDS["upgrade"])  # the real work, the version index, the bytecode
            run(where, url, COMMANDS["upgrade_no_documents"])
            for model in ("bench.Customer", "bench.Order", "bench.Product"):
                left = client[DATABASE][model].count_documents({"__version__": {"$ne": "2"}})
                assert left == 0, (model, left)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
            for _ in range(rounds):
                for name, args in COMMANDS.items():
                    times[name].append(run(where, url, args))
            if profiled:
                profile(where, url)
        version = client.server_info().get("version", "?")
    finally:
        client.drop_database(DATABASE)
        client.drop_database(EMPTY)
        client.close()
    return {
        "server": version,
        "documents": 3 * documents,
        "models": 3,
        "rounds": rounds,
        "bytecode_cache": bool(CACHE),
        **({} if PACKAGE == ROOT else {"package": str(PACKAGE)}),
        **{name: spread(values) for name, values in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, printed only")
    parser.add_argument("--rounds", type=int, default=9, help="runs of each command")
    parser.add_argument("--profile", action="store_true", help="also profile one upgrade")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module at each start (as with PYTHONDONTWRITEBYTECODE); printed only",
    )
    parser.add_argument(
        "--package", type=Path, help="time the package of this checkout; printed only"
    )
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    global PACKAGE, CACHE
    PACKAGE = (args.package or ROOT).resolve()
    printed_only = args.quick or args.no_bytecode_cache or args.package is not None
    with tempfile.TemporaryDirectory(prefix="atomdb-migrate-pyc-") as cache, server() as url:
        CACHE = "" if args.no_bytecode_cache else cache
        result = measure(url, rounds, DOCUMENTS, args.profile)
    result["command"] = COMMAND + (" --quick" if args.quick else "")
    if not printed_only:
        import run as publishing

        publishing.publish("startup", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
