"""Every benchmark, in one run: writes docs/benchmarks.md and docs/benchmarks.json.

    python benchmarks/run.py             # the full run (about 40 minutes here)
    python benchmarks/run.py --quick     # small N, a few minutes; writes to --out
    MONGO_URL=mongodb://... python benchmarks/run.py   # another server

Starts its own SecantusDB server unless MONGO_URL is set. Each case is
measured against its baseline in the same run, on the same server:

1. read cost: ``VersionedModel.restore`` against atom-db's ``NoSQLModel.restore``;
2. the whole `atomdb-migrate upgrade` process against hand-written PyMongo loops
   (a naive one and one with the same guard);
3. a step of operations on the server against the same step on the client;
4. memory: peak RSS of ``atomdb-migrate upgrade`` as a subprocess, by N;
5. scaling: documents per second of those runs, by N;
6. version-aware queries against the original filter (``bench_queries.py``);
7. the version index (``bench_version_index.py``, run on its own);
8. several databases: one command against a loop of commands
   (``bench_tenants.py``, run on its own; a small case in ``--quick``).

The figures of the full run are in ``docs/benchmarks.md``; hand-written
notes on the goals not met (with their profiles) come from
``benchmarks/notes.md``.

"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pymongo import MongoClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_fused  # noqa: E402
import bench_ops  # noqa: E402
import bench_queries  # noqa: E402
import bench_restore  # noqa: E402
import bench_tenants  # noqa: E402
import bench_upgrade  # noqa: E402
import peers  # noqa: E402

#: The command that reproduces the published figures.
COMMAND = "python benchmarks/run.py"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        memory = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def versions(server_version: str) -> dict[str, str]:
    found = {name: version(name) for name in ("atomdb-migrate", "atom-db", "atom", "pymongo")}
    found["server"] = server_version
    return found


def memory_case(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Peak RSS and throughput of ``atomdb-migrate upgrade`` as a subprocess, by N."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="atomdb-migrate-bench-") as tmp:
        where = bench_upgrade.project(Path(tmp))
        client: MongoClient[dict[str, Any]] = MongoClient(url)
        db = client["atomdb_migrate_bench_memory"]
        coll = db[bench_upgrade.Item.__model__]
        try:
            for n in sizes:
                client.drop_database(db.name)
                for start in range(0, n, 50000):
                    coll.insert_many(bench_upgrade.legacy(min(50000, n - start), start))
                try:
                    elapsed, cpu, rss_kb = bench_upgrade.run_command(where, f"{url}/{db.name}")
                except RuntimeError as exc:  # a run that failed is a figure too
                    rows.append({"n": n, "error": " ".join(str(exc).split())[:300]})
                    print(f"  memory: N={n}: {rows[-1]}", file=sys.stderr)
                    continue
                assert coll.count_documents({"__version__": "2"}) == n
                rows.append(
                    {
                        "n": n,
                        "peak_rss_mb": round(rss_kb / 1024, 1),
                        "seconds": round(elapsed, 2),
                        "docs_per_s": round(n / elapsed),
                        "client_cpu_us_per_doc": round(cpu / n * 1e6, 1),
                    }
                )
                print(f"  memory: N={n}: {rows[-1]}", file=sys.stderr)
        finally:
            client.drop_database(db.name)
            client.close()
    return rows


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the benchmark issue, with the figure measured and whether it is met."""
    restore = {r["case"]: r["ratio"] for r in result["restore"]["rows"]}
    upgrade = result["upgrade"]["rows"]
    ops = result["operations"]["rows"]
    memory = [r for r in result["memory"] if "error" not in r]
    found = [
        {
            "goal": "restore of current documents, ratio to atom-db <= 1.03",
            "measured": restore["VersionedModel, current"],
            "met": restore["VersionedModel, current"] <= 1.03,
        },
        {
            "goal": "restore 2 steps behind, ratio to atom-db <= 1.3",
            "measured": restore["VersionedModel, 2 steps behind"],
            "met": restore["VersionedModel, 2 steps behind"] <= 1.3,
        },
    ]
    for r in upgrade:
        found.append(
            {
                "goal": f"`atomdb-migrate upgrade` at N = {r['n']}: at least the guarded "
                "loop (ratio >= 1.0)",
                "measured": r["ratio_to_guarded"],
                "met": r["ratio_to_guarded"] >= 1.0,
            }
        )
        found.append(
            {
                "goal": f"`atomdb-migrate upgrade` at N = {r['n']}: at least 0.6x the naive loop",
                "measured": r["ratio_to_naive"],
                "met": r["ratio_to_naive"] >= 0.6,
            }
        )
        if "with_index_to_without" in r:
            found.append(
                {
                    "goal": f"a full rewrite at N = {r['n']} with the version index, against "
                    "without it (>= 0.85)",
                    "measured": r["with_index_to_without"],
                    "met": r["with_index_to_without"] >= 0.85,
                }
            )
    found += _later_goals(result)
    for r in ops:
        found.append(
            {
                "goal": f"server-side operations at N = {r['n']}: >= 3x the client path",
                "measured": r["ratio"],
                "met": r["ratio"] >= 3.0,
            }
        )
    if len(memory) > 1:
        growth = memory[-1]["peak_rss_mb"] - memory[0]["peak_rss_mb"]
        found.append(
            {
                "goal": f"peak RSS flat: under +50 MB from N = {memory[0]['n']} "
                f"to {memory[-1]['n']}",
                "measured": f"{growth:+.1f} MB",
                "met": growth < 50,
            }
        )
        first, last = memory[0]["docs_per_s"], memory[-1]["docs_per_s"]
        found.append(
            {
                "goal": "documents per second do not fall as N grows "
                f"(N = {memory[-1]['n']} against N = {memory[0]['n']}, within 10%)",
                "measured": round(last / first, 2),
                "met": last >= 0.9 * first,
            }
        )
    return found


def _later_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of the sections added since: the version index resumed, one pass
    for five steps, the peers, a run with nothing to do."""
    found = []
    for r in (result.get("version_index") or {}).get("rows", []):
        if r.get("n", 0) >= 200000 and "upgrade_1pct_with" in r:
            ratio = round(r["upgrade_1pct_with"] / r["upgrade_1pct_without"], 3)
            found.append(
                {
                    "goal": f"a resumed run (1% pending) at N = {r['n']} with the index, "
                    "against without it (<= 1.0)",
                    "measured": ratio,
                    "met": ratio <= 1.0,
                }
            )
    for r in (result.get("fused") or {}).get("rows", []):
        found.append(
            {
                "goal": f"5 declarative steps ({r['chain']}): fused >= 3x step by step",
                "measured": r["ratio"],
                "met": r["ratio"] >= 3.0,
            }
        )
    rows = (result.get("peers") or {}).get("rows")
    if rows:
        for workload, rival, goal, what in (
            ("rename", "migrate-mongo", 0.9, "a declarative change against `updateMany`"),
            ("split", "migrate-mongo", 1.0, "a Python step against a guarded `bulkWrite` loop"),
        ):
            ratio = round(
                rows[workload]["atomdb-migrate"]["docs_per_s"]
                / rows[workload][rival]["docs_per_s"],
                2,
            )
            found.append(
                {
                    "goal": f"{what} (migrate-mongo), whole processes (>= {goal})",
                    "measured": ratio,
                    "met": ratio >= goal,
                }
            )
    startup = (result.get("startup") or {}).get("upgrade")
    if startup:
        found.append(
            {
                "goal": f"`upgrade` with nothing to do, {result['startup']['documents']} "
                "documents (<= 0.5 s)",
                "measured": startup["median_s"],
                "met": startup["median_s"] <= 0.5,
            }
        )
    return found


def markdown(result: dict[str, Any], notes: str) -> str:
    m, v = result["machine"], result["versions"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{result['command']}` on {result['date']} in "
        f"{result['duration_s'] / 60:.1f} minutes. Do not edit: run it again.",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, {m['python']}",
        f"- versions: atomdb-migrate {v['atomdb-migrate']}, atom-db {v['atom-db']}, "
        f"atom {v['atom']}, pymongo {v['pymongo']}; server {v['server']}",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---:|:---:|",
    ]
    lines += [
        f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |"
        for g in result["goals"]
    ]
    r = result["restore"]
    lines += [
        "",
        "## 1. Read cost",
        "",
        f"`VersionedModel.restore` against atom-db's `NoSQLModel.restore` of the same "
        f"documents, in process, N = {r['rows'][0]['n']}, median of {r['rounds']} "
        "alternating rounds. Legacy documents go through trivial steps.",
        "",
        "| case | N | this project (µs/doc) | baseline: atom-db (µs/doc) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    base = next(x for x in r["rows"] if x["case"] == "atom-db NoSQLModel")
    for x in r["rows"]:
        if x is base:
            continue
        lines.append(
            f"| {x['case']} | {x['n']} | {x['us_per_doc']} | {base['us_per_doc']} | {x['ratio']} |"
        )
    u = result["upgrade"]
    lines += [
        "",
        "## 2. Eager upgrade",
        "",
        "The whole `atomdb-migrate upgrade --no-progress` process (start-up, lock, "
        "survey, history) with one Python step, against two loops a user writes with "
        "PyMongo, in `_id` order with an unordered `bulk_write` per batch of 1000: the "
        "naive loop (`ReplaceOne` by `_id`, which overwrites concurrent changes) and the "
        "guarded loop (`UpdateOne` filtered on the whole document as read, `$set`/`$unset` "
        f"of what changed). Best of {u['rounds']}, alternating, reseeded before each. "
        "Client CPU: the loops' process time; the command's user + system time.",
        "",
        "| N | this project (docs/s) | guarded loop (docs/s) | ratio | naive loop (docs/s) "
        "| ratio | client CPU, µs/doc: this project / guarded / naive |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in u["rows"]:
        own, guarded, naive = (x[case] for case in bench_upgrade.CASES[::-1])
        lines.append(
            f"| {x['n']} | {own['docs_per_s']} | {guarded['docs_per_s']} "
            f"| {x['ratio_to_guarded']} | {naive['docs_per_s']} | {x['ratio_to_naive']} "
            f"| {own['client_cpu_us_per_doc']} / {guarded['client_cpu_us_per_doc']} "
            f"/ {naive['client_cpu_us_per_doc']} |"
        )
    bare = [x for x in u["rows"] if bench_upgrade.NO_INDEX_CASE in x]
    if bare:
        lines += [
            "",
            "The same command with `version-index = false`, in the same rounds: what the "
            "toolkit's version index costs a full rewrite (the run above starts with the "
            "index in place, as the previous release's upgrade left it).",
            "",
            "| N | without the index (docs/s) | ratio to guarded | ratio to naive "
            "| with the index / without |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {x['n']} | {x[bench_upgrade.NO_INDEX_CASE]['docs_per_s']} "
            f"| {x['no_index_ratio_to_guarded']} | {x['no_index_ratio_to_naive']} "
            f"| {x['with_index_to_without']} |"
            for x in bare
        ]
    o = result["operations"]
    lines += [
        "",
        "## 3. Operations on the server",
        "",
        f"The step `{o['step']}` through `Runner.upgrade`, as server-side updates "
        f"against the client path (`server_side=False`), best of {o['rounds']}; both "
        "leave the same documents (checked).",
        "",
        "| N | this project: server-side (docs/s) | baseline: client path (docs/s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['n']} | {x['server_docs_per_s']} | {x['client_docs_per_s']} | {x['ratio']} |"
        for x in o["rows"]
    ]
    mem = result["memory"]
    if mem:
        lines += [
            "",
            "## 4. Memory and 5. scaling",
            "",
            "`atomdb-migrate upgrade` as a subprocess, one Python step, batches of 1000; "
            "peak RSS of the process, and its documents per second. Baseline: the "
            f"same run at N = {mem[0]['n']}.",
            "",
            "| N | peak RSS (MB) | vs smallest N | seconds | docs/s | vs smallest N "
            "| client CPU (µs/doc) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in mem:
            if "error" in x:
                lines.append(f"| {x['n']} | failed: {x['error']} | | | | | |")
                continue
            grew = x["peak_rss_mb"] - mem[0]["peak_rss_mb"]
            speed = x["docs_per_s"] / mem[0]["docs_per_s"]
            lines.append(
                f"| {x['n']} | {x['peak_rss_mb']} | {grew:+.1f} | {x['seconds']} "
                f"| {x['docs_per_s']} | {speed:.2f} | {x.get('client_cpu_us_per_doc', '?')} |"
            )
    q = result.get("queries")
    if q:
        lines += _section(
            "6. Version-aware queries",
            f"`{{'title': 'page k'}}` for {q['queries']} values of k (one document each, "
            f"fetched whole), N = {q['n']}, median of {q['rounds']} rounds; the chain renames "
            "`heading` to `title` and adds `views`. *Upgraded*: every document at the head. "
            "*Mixed*: half stored at version 1 (with `heading`); there the original finds "
            "only the other half, so it is the baseline of cost, not of the answer. Indexes, "
            "where there are: on `title` and `heading`",
            q,
            "| collection | index | filter | ms/query | ratio to the original | documents found |",
            "|---|---|---|---:|---:|---:|",
            [
                f"| {x['collection']} | {'yes' if x['index'] else 'no'} | {x['case']} "
                f"| {x['ms_per_query']} | {x['ratio']} | {x['found']} |"
                for x in q["rows"]
            ],
        )
    vi = result.get("version_index")
    if vi:
        lines += _section(
            "7. The version index",
            "Every document at the code's version: `atomdb-migrate upgrade` with nothing to "
            "do and `atomdb-migrate check --pending`, as subprocesses (start-up included), best "
            f"of {vi['rounds']}; then 1% of the documents put back a version and `upgrade` "
            "taking them. Without the toolkit's index (`version-index = false`) and with it",
            vi,
            "| N | no-op upgrade (s): without / with | check --pending (s): without / with "
            "| upgrade of 1% (s): without / with |",
            "|---:|---:|---:|---:|",
            [
                f"| {x['n']} | {x['noop_upgrade_without']} / {x['noop_upgrade_with']} "
                f"| {x['check_pending_without']} / {x['check_pending_with']} "
                f"| {x['upgrade_1pct_without']} / {x['upgrade_1pct_with']} |"
                for x in vi["rows"]
            ],
        )
    tenants = result.get("tenants")
    if tenants:
        lines += _section(
            "8. Several databases",
            "T tenant databases of D legacy documents each, taken through one step: one "
            "command over all of them (`--databases REGEX`), against a shell loop of one "
            "command per tenant (`--database NAME`); then the gate (`check --pending`) both "
            "ways, with nothing left to do. Wall seconds, start-up included",
            tenants,
            "| tenants | documents each | upgrade: one command | upgrade: a loop "
            "| gate: one command | gate: a loop |",
            "|---:|---:|---:|---:|---:|---:|",
            [
                f"| {x['tenants']} | {x['documents']} | {x['upgrade_one_command']} "
                f"| {x['upgrade_loop']} | {x['gate_one_command']} | {x['gate_loop']} |"
                for x in tenants["rows"]
            ],
        )
    lines += _tenants_workers(result.get("tenants_workers"))
    lines += _startup(result.get("startup"))
    lines += _fused(result.get("fused"))
    lines += _peers(result.get("peers"))
    if notes.strip():
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


#: The benchmarks run on their own, which publish their figures themselves
#: (the peers too, when the run is not given ``--peers DIR``).
SEPARATE = ("version_index", "tenants", "tenants_workers", "startup", "peers")


def _fused(figures: dict[str, Any] | None) -> list[str]:
    """Section 10: five declarative steps, one pass or one per step (``bench_fused.py``)."""
    if not figures:
        return []
    return _section(
        "10. Consecutive steps in one pass",
        f"A model five steps behind, every step made of operations, N = {figures['n']}, "
        "the whole `Runner.upgrade` in process, fused (the default) against "
        f"`RunOptions(fuse_steps=False)`, {figures['rounds']} rounds, the order alternating. "
        "*disjoint*: each step has fields of its own (the pass's fast form); *reads-back*: "
        "the fifth step reads what the third wrote (the general pipeline)",
        figures,
        "| workload | fused (docs/s, per round) | step by step (docs/s, per round) "
        "| ratio per round | median ratio |",
        "|---|---:|---:|---:|---:|",
        [
            f"| {x['chain']} | {', '.join(map(str, x['fused_docs_per_s']))} "
            f"| {', '.join(map(str, x['step_docs_per_s']))} "
            f"| {', '.join(f'{r}x' for r in x['ratios'])} | {x['ratio']}x |"
            for x in figures["rows"]
        ],
    )


def _peers(figures: dict[str, Any] | None) -> list[str]:
    """Section 11: the same changes with Beanie and migrate-mongo (``peers.py``)."""
    if not figures:
        return []
    rows = figures["rows"]
    return _section(
        "11. Side by side with the peers",
        f"The same server, data (N = {figures['n']}) and change, each tool as a whole "
        f"process, median of {figures['rounds']} rounds, the tools' order rotated: a step "
        "in the tool's language that splits a name (atomdb-migrate: a Python step; Beanie: "
        "an `iterative_migration`; migrate-mongo: a guarded `bulkWrite` loop), a rename "
        "plus an added field (operations on the server; Beanie: `update_many` in a "
        "`free_fall_migration`; migrate-mongo: `updateMany`), and the same command again "
        f"with nothing to do. {figures['peers']['beanie']}, {figures['peers']['migrate-mongo']}",
        {"command": "python benchmarks/peers.py --peers DIR", **figures},
        "| workload | " + " | ".join(peers.TOOLS) + " |",
        "|---|" + "---:|" * len(peers.TOOLS),
        [
            f"| {workload} | "
            + " | ".join(
                f"{by[t]['median_s']} s"
                if workload == "nothing to do"
                else f"{by[t]['docs_per_s']} docs/s"
                for t in peers.TOOLS
            )
            + " |"
            for workload, by in rows.items()
        ],
    )


def _startup(figures: dict[str, Any] | None) -> list[str]:
    """Section 9: whole processes with nothing to do (``bench_startup.py``)."""
    if not figures:
        return []
    names = {
        "upgrade": "`upgrade` with nothing to do",
        "check_pending": "`check --pending` (the gate)",
        "help": "`--help`",
        "upgrade_no_documents": "`upgrade`, the same models without documents",
    }
    return _section(
        "9. Start-up",
        f"{figures['models']} models, {figures['documents']} documents all at the code's "
        "version (the version index built), whole processes as a deploy runs them: "
        f"median of {figures['rounds']} interleaved runs, with the fastest and slowest "
        "(the machine may be shared), and the median CPU time of the process. Compiled "
        f"modules kept between runs: {'yes' if figures.get('bytecode_cache') else 'no'}",
        figures,
        "| command | median (s) | fastest / slowest (s) | CPU (s) |",
        "|---|---:|---:|---:|",
        [
            f"| {names.get(key, key)} | {x['median_s']} | {x['min_s']} / {x['max_s']} "
            f"| {x['cpu_median_s']} |"
            for key, x in figures.items()
            if isinstance(x, dict) and "median_s" in x
        ],
    )


def _tenants_workers(figures: dict[str, Any] | None) -> list[str]:
    """Section 8's databases at once: the one command with ``--workers N``, against
    the same documents in one database."""
    if not figures:
        return []
    return [
        "",
        f"Databases at once: {figures['tenants']} tenants of {figures['documents']} "
        "documents, one command (`--databases REGEX upgrade --no-progress`) with "
        "`--workers N`, against the same documents in one database (one runner). Wall "
        "and CPU seconds of the whole process, start-up included; "
        f"server {figures['server']}; {figures['machine']} (see the notes below); "
        f"from `{figures['command']}`.",
        "",
        "| case | wall (s) | CPU (s) | docs/s |",
        "|---|---:|---:|---:|",
        *(
            f"| {x['case']} | {x['s']} | {x['cpu_s']} | {x['docs_per_s']} |"
            for x in figures["rows"]
        ),
    ]


def _section(
    title: str, text: str, figures: dict[str, Any], header: str, align: str, rows: list[str]
) -> list[str]:
    """A section of a benchmark run on its own: its title, what it measures (and the
    command that measured it), and its table."""
    source = f"; from `{figures['command']}`." if "command" in figures else "."
    return ["", f"## {title}", "", text + source, "", header, align, *rows]


def publish(key: str, result: dict[str, Any]) -> None:
    """Put one benchmark's figures into docs/benchmarks.json, and write benchmarks.md again."""
    path = ROOT / "docs" / "benchmarks.json"
    published = json.loads(path.read_text())
    published[key] = result
    path.write_text(json.dumps(published, indent=2) + "\n")
    main(["--render"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, for CI")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write benchmarks.md and benchmarks.json "
        "(default: docs/, or a temporary directory with --quick)",
    )
    parser.add_argument(
        "--peers",
        type=Path,
        default=None,
        help="also measure Beanie and migrate-mongo, installed there (peers.py --install DIR)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only write benchmarks.md again from benchmarks.json and benchmarks/notes.md",
    )
    args = parser.parse_args(argv)
    if args.render:
        out = args.out or ROOT / "docs"
        result = json.loads((out / "benchmarks.json").read_text())
        result["goals"] = goals(result)  # a benchmark run on its own may have changed them
        (out / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "benchmarks.md").write_text(markdown(result, (HERE / "notes.md").read_text()))
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-")) if args.quick else ROOT / "docs")
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    result: dict[str, Any] = {
        "command": COMMAND + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
    }
    print("restore ...", file=sys.stderr)
    result["restore"] = asyncio.run(
        bench_restore.measure(2000 if args.quick else 20000, 5 if args.quick else 15)
    )
    with bench_upgrade.server() as url:
        print("upgrade ...", file=sys.stderr)
        result["upgrade"] = asyncio.run(
            bench_upgrade.measure(
                url, [2000] if args.quick else [50000, 100000], 1 if args.quick else 2
            )
        )
        print("operations ...", file=sys.stderr)
        result["operations"] = asyncio.run(
            bench_ops.measure(url, [2000] if args.quick else [100000], 1 if args.quick else 3)
        )
        print("memory ...", file=sys.stderr)
        result["memory"] = memory_case(
            url, [2000, 10000] if args.quick else [10000, 100000, 300000]
        )
        print("queries ...", file=sys.stderr)
        result["queries"] = asyncio.run(
            bench_queries.measure(
                url,
                2000 if args.quick else bench_queries.N,
                1 if args.quick else bench_queries.ROUNDS,
            )
        )
        print("fused ...", file=sys.stderr)
        result["fused"] = bench_fused.measure(
            url, 2000 if args.quick else 30000, 1 if args.quick else 3
        )
        if args.peers:
            print("peers ...", file=sys.stderr)
            result["peers"] = peers.measure(
                url, args.peers, 2000 if args.quick else 30000, 1 if args.quick else 3
            )
        if args.quick:  # the full one runs on its own (bench_tenants.py)
            print("tenants ...", file=sys.stderr)
            result["tenants"] = bench_tenants.measure(url, [3], 200)
        result["versions"] = versions(result["upgrade"]["server"])
    if not args.quick:
        # The benchmarks run on their own keep the figures they published.
        published = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
        result.update({k: published[k] for k in SEPARATE if k in published and k not in result})
    result["goals"] = goals(result)
    result["duration_s"] = round(time.perf_counter() - began, 1)
    notes_file = HERE / "notes.md"
    notes = notes_file.read_text() if notes_file.is_file() and not args.quick else ""
    (out / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "benchmarks.md").write_text(markdown(result, notes))
    print(f"wrote {out / 'benchmarks.md'} and {out / 'benchmarks.json'}", file=sys.stderr)
    print(markdown(result, "").split("## 1.")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
