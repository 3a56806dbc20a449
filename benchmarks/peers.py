"""atomdb-migrate side by side with Beanie and migrate-mongo: same server, data and change.

Three workloads, each tool run as a whole process, as a deployment runs it:

- **split**: a step written in the tool's language splits ``name`` into
  ``first`` and ``last`` (atomdb-migrate: a Python step module; Beanie: an
  ``iterative_migration``; migrate-mongo: a guarded ``bulkWrite`` loop, the
  careful form of its documented pattern);
- **rename**: ``qty`` renamed to ``quantity`` and ``status`` added
  (atomdb-migrate: ``ops.rename_field`` and ``ops.add_field``, run on the
  server; Beanie: a ``free_fall_migration`` with one ``update_many``;
  migrate-mongo: one ``updateMany``);
- **nothing to do**: the same command again, once the change is applied.

Each round seeds the same N documents afresh for each tool (the toolkit's
``__model__`` and ``__version__`` keys included: the peers ignore them) and
rotates the tools' order. The figures are the median of the rounds.

The peers are never dependencies of the package and never run in the test
suite: they are installed in a scratch directory, only when asked::

    python benchmarks/peers.py --install /tmp/peers      # Beanie 2.2 (venv), migrate-mongo 14 (npm)
    python benchmarks/peers.py --peers /tmp/peers        # N = 30000, 3 rounds
    python benchmarks/peers.py --peers /tmp/peers -n 2000 --rounds 1 --json

Starts its own SecantusDB server unless MONGO_URL is set.

"""

from __future__ import annotations

import argparse
import json
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
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upgrade import server  # noqa: E402

BEANIE = "beanie==2.2.0"
MIGRATE_MONGO = "migrate-mongo@14"
DB = "atomdb_migrate_peers"
COLLECTION = "bench.Person"
WORKLOADS = ("split", "rename")
TOOLS = ("atomdb-migrate", "beanie", "migrate-mongo")

# -- atomdb-migrate's project -------------------------------------------------

MODELS = {
    "split": """
from atom.api import Int, Str
from atomdb_migrate import VersionedModel

class Person(VersionedModel):
    __model__ = "bench.Person"
    __version__ = 2
    __base_version__ = 1
    first = Str()
    last = Str()
    qty = Int()
""",
    "rename": """
from atom.api import Int, Str
from atomdb_migrate import VersionedModel

class Person(VersionedModel):
    __model__ = "bench.Person"
    __version__ = 2
    __base_version__ = 1
    name = Str()
    quantity = Int()
    status = Str()
""",
}

STEPS = {
    "split": '''
"""Split the name into first and last."""

model = "bench.Person"
from_version = "1"
to_version = "2"
changes = ["name", "first", "last"]


def upgrade(doc):
    doc["first"], _, doc["last"] = doc.pop("name").partition(" ")
''',
    "rename": '''
"""Rename qty to quantity; every person gets a status."""

from atomdb_migrate import ops

model = "bench.Person"
from_version = "1"
to_version = "2"
operations = [ops.rename_field("qty", "quantity"), ops.add_field("status", "new")]
''',
}

PYPROJECT = """
[tool.atomdb-migrate]
models = ["peermodels"]
migrations = "migrations"
timeout = 10
"""

# -- Beanie's migrations ------------------------------------------------------

BEANIE_STEPS = {
    "split": """
from beanie import Document, iterative_migration


class Before(Document):
    name: str
    qty: int

    class Settings:
        name = "bench.Person"


class After(Document):
    first: str
    last: str
    qty: int

    class Settings:
        name = "bench.Person"


class Forward:
    @iterative_migration()
    async def split(self, input_document: Before, output_document: After):
        first, _, last = input_document.name.partition(" ")
        output_document.first = first
        output_document.last = last


class Backward: ...
""",
    "rename": """
from beanie import Document, free_fall_migration


class Person(Document):
    class Settings:
        name = "bench.Person"


class Forward:
    @free_fall_migration(document_models=[Person])
    async def rename(self, session):
        await Person.get_pymongo_collection().update_many(
            {}, {"$rename": {"qty": "quantity"}, "$set": {"status": "new"}}, session=session
        )


class Backward: ...
""",
}

# -- migrate-mongo's migrations -----------------------------------------------

MIGRATE_MONGO_CONFIG = """
module.exports = {
  mongodb: { url: process.env.PEERS_URL, databaseName: process.env.PEERS_DB, options: {} },
  migrationsDir: "migrations",
  changelogCollectionName: "changelog",
  lockCollectionName: "changelog_lock",
  lockTtl: 0,
  migrationFileExtension: ".js",
  useFileHash: false,
  moduleSystem: "commonjs",
};
"""

MIGRATE_MONGO_STEPS = {
    "split": """
module.exports = {
  async up(db) {
    const coll = db.collection("bench.Person");
    let ops = [];
    const cursor = coll.find({ name: { $exists: true } }).sort({ _id: 1 }).batchSize(1000);
    for await (const doc of cursor) {
      const at = doc.name.indexOf(" ");
      const first = at < 0 ? doc.name : doc.name.slice(0, at);
      const last = at < 0 ? "" : doc.name.slice(at + 1);
      ops.push({ updateOne: {
        filter: { _id: doc._id, name: doc.name },
        update: { $set: { first, last }, $unset: { name: "" } },
      } });
      if (ops.length === 1000) { await coll.bulkWrite(ops, { ordered: false }); ops = []; }
    }
    if (ops.length) await coll.bulkWrite(ops, { ordered: false });
  },
  async down() {},
};
""",
    "rename": """
module.exports = {
  async up(db) {
    await db.collection("bench.Person").updateMany(
      {}, { $rename: { qty: "quantity" }, $set: { status: "new" } });
  },
  async down() {},
};
""",
}


def install(where: Path) -> None:
    """Install Beanie in a venv and migrate-mongo with npm, under `where`."""
    where.mkdir(parents=True, exist_ok=True)
    venv = where / "venv"
    if not (venv / "bin" / "beanie").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", BEANIE], check=True)
    node = where / "node"
    if not (node / "node_modules" / ".bin" / "migrate-mongo").exists():
        node.mkdir(exist_ok=True)
        (node / "package.json").write_text('{"name": "peers", "private": true}\n')
        subprocess.run(["npm", "install", "--silent", MIGRATE_MONGO], cwd=node, check=True)


def projects(tmp: Path, workload: str) -> dict[str, Path]:
    """One project directory per tool, holding the workload's change."""
    out = {}
    own = tmp / f"own-{workload}"
    (own / "migrations").mkdir(parents=True)
    (own / "peermodels.py").write_text(MODELS[workload])
    (own / "migrations" / "0001_change.py").write_text(STEPS[workload])
    (own / "pyproject.toml").write_text(PYPROJECT)
    out["atomdb-migrate"] = own
    beanie = tmp / f"beanie-{workload}"
    (beanie / "migrations").mkdir(parents=True)
    (beanie / "migrations" / "20260101000000_change.py").write_text(BEANIE_STEPS[workload])
    out["beanie"] = beanie
    mm = tmp / f"mm-{workload}"
    (mm / "migrations").mkdir(parents=True)
    (mm / "migrate-mongo-config.js").write_text(MIGRATE_MONGO_CONFIG)
    (mm / "migrations" / "20260101000000-change.js").write_text(MIGRATE_MONGO_STEPS[workload])
    out["migrate-mongo"] = mm
    return out


def command(tool: str, peers: Path, url: str) -> list[str]:
    if tool == "atomdb-migrate":
        exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
        return [exe, "--url", f"{url}/{DB}", "upgrade", "--no-progress"]
    if tool == "beanie":
        return [
            str(peers / "venv" / "bin" / "beanie"),
            "migrate",
            "-uri",
            url,
            "-db",
            DB,
            "-p",
            "migrations",
            "--no-use-transaction",
        ]
    return [str(peers / "node" / "node_modules" / ".bin" / "migrate-mongo"), "up"]


def run(tool: str, where: Path, peers: Path, url: str) -> float:
    """Run `tool` in `where` as a whole process; its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    env.update(PEERS_URL=url, PEERS_DB=DB)
    env.pop("ATOMDB_MIGRATE_URL", None)
    start = time.perf_counter()
    out = subprocess.run(command(tool, peers, url), cwd=where, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{tool} exited {out.returncode}: {out.stderr.decode()[-2000:]}")
    return elapsed


def seed(client: MongoClient[Any], n: int) -> None:
    db = client[DB]
    for name in db.list_collection_names():
        db.drop_collection(name)
    coll = db[COLLECTION]
    for start in range(0, n, 20000):
        coll.insert_many(
            [
                {
                    "name": f"first{i} last{i}",
                    "qty": i % 97,
                    "__model__": COLLECTION,
                    "__version__": "1",
                }
                for i in range(start, min(n, start + 20000))
            ],
            ordered=False,
        )


def applied(client: MongoClient[Any], workload: str) -> int:
    """How many documents carry the workload's change."""
    coll = client[DB][COLLECTION]
    if workload == "split":
        return coll.count_documents({"first": {"$exists": True}, "name": {"$exists": False}})
    return coll.count_documents({"quantity": {"$exists": True}, "status": "new"})


def measure(
    url: str, peers: Path, n: int, rounds: int, tools: tuple[str, ...] = TOOLS
) -> dict[str, Any]:
    client: MongoClient[Any] = MongoClient(url)
    seconds: dict[str, dict[str, list[float]]] = {
        w: {t: [] for t in tools} for w in (*WORKLOADS, "nothing to do")
    }
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-peers-") as tmp:
            for workload in WORKLOADS:
                where = projects(Path(tmp), workload)
                for r in range(rounds):
                    order = tools[r % len(tools) :] + tools[: r % len(tools)]
                    for tool in order:
                        seed(client, n)
                        took = run(tool, where[tool], peers, url)
                        done = applied(client, workload)
                        if done != n:
                            raise RuntimeError(f"{tool} {workload}: {done} of {n} changed")
                        seconds[workload][tool].append(took)
                        again = run(tool, where[tool], peers, url)
                        seconds["nothing to do"][tool].append(again)
                        print(
                            f"  {workload}, {tool}: {took:.2f} s, then {again:.2f} s",
                            file=sys.stderr,
                        )
        client.drop_database(DB)
        info = client.server_info()
    finally:
        client.close()
    rows = {}
    for workload, by_tool in seconds.items():
        rows[workload] = {
            tool: {
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                **(
                    {}
                    if workload == "nothing to do"
                    else {"docs_per_s": round(n / statistics.median(times))}
                ),
            }
            for tool, times in by_tool.items()
        }
    return {
        "benchmark": "peers",
        "n": n,
        "rounds": rounds,
        "server": f"{'MONGO_URL' if os.environ.get('MONGO_URL') else 'SecantusDB'} "
        f"{info.get('version', '?')}",
        "peers": {"beanie": BEANIE, "migrate-mongo": MIGRATE_MONGO},
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Peers, N = {result['n']}, median of {result['rounds']} rounds (tools' order "
        f"rotated); {result['server']}; {result['peers']['beanie']}, "
        f"{result['peers']['migrate-mongo']}",
        "",
    ]
    tools = [t for t in TOOLS if t in result["rows"]["nothing to do"]]
    lines += ["| workload | " + " | ".join(tools) + " |", "|---|" + "---:|" * len(tools)]
    for workload, by_tool in result["rows"].items():
        if workload == "nothing to do":
            cells = [f"{by_tool[t]['median_s']} s" for t in tools]
        else:
            cells = [f"{by_tool[t]['docs_per_s']} docs/s" for t in tools]
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", type=Path, help="install the peers under this directory")
    parser.add_argument("--peers", type=Path, help="where the peers are installed")
    parser.add_argument("-n", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="the tools to run, comma-separated (all three)"
    )
    args = parser.parse_args(argv)
    tools = tuple(t for t in TOOLS if t in args.tools.split(","))
    if args.install:
        install(args.install)
        if not args.peers:
            return 0
    if not args.peers:
        parser.error("--peers DIR is needed (install there first with --install DIR)")
    with server() as url:
        result = measure(url, args.peers, args.n, args.rounds, tools)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
