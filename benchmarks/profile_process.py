"""Profile a whole ``atomdb-migrate`` process and the server beside it, with py-spy.

One workload of ``peers.py`` (the same project, data and change) is seeded,
then the command runs as a whole process under ``py-spy record --idle``
while a second py-spy samples the SecantusDB server process for as long.
The collapsed stacks of both are summarised as text: where the client's
main thread spends its wall time (its own code, the driver, waiting on a
socket), and where the server spends its CPU.

    python benchmarks/profile_process.py rename            # N = 30000
    python benchmarks/profile_process.py split -n 50000
    python benchmarks/profile_process.py nothing           # rename applied, then run again
    python benchmarks/profile_process.py summary FILE.txt  # summarise a collapsed file
    python benchmarks/profile_process.py restore-shares FILE.txt   # see profile_restore.py

Needs py-spy (``pip install py-spy``) and ptrace rights; starts its own
SecantusDB server unless ``MONGO_URL`` is set and ``--server-pid`` names its
process (the server must run on this machine to be sampled).

"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
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

#: How a frame's file names the part it belongs to, first match wins.
PARTS = (
    ("atomdb_migrate", "atomdb-migrate"),
    ("pymongo", "pymongo"),
    ("bson", "bson"),
    ("atomdb", "atom-db"),
    ("secantus", "secantus"),
    ("asyncio", "asyncio"),
    ("importlib", "imports"),
    ("<frozen", "imports"),
    ("click", "click"),
)

#: Leaf frames that mean a thread waits (on a socket, a selector, a lock).
WAITS = (
    "select",
    "poll",
    "recv",
    "recv_into",
    "sock_recv",
    "_recv_into",
    "wait",
    "acquire",
    "accept",
    "_recv_exactly",  # SecantusDB's connection threads, idle between commands
    "_readable",
)


def frame_part(frame: str) -> str:
    for needle, name in PARTS:
        if needle in frame:
            return name
    return "other"


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            out.append((stack.split(";"), int(count)))
    return out


def waits(frames: list[str]) -> bool:
    """Whether a sample's leaf is a wait (a socket, a selector, a lock)."""
    return frames[-1].split(" (")[0].rsplit(".", 1)[-1] in WAITS


def summary(path: Path, top: int = 25, main_only: bool = False, busy: bool = False) -> str:
    """The top entries of a collapsed profile: self time, inclusive time, parts.

    `main_only` keeps the main thread's samples; `busy` leaves out the samples
    of threads waiting (a server's idle connections), so that the shares are
    of the CPU the process spent.

    """
    stacks = read_collapsed(path)
    if busy:
        stacks = [(s, n) for s, n in stacks if not waits(s)]
    if main_only:  # the other threads' stacks start in threading's bootstrap
        stacks = [(s, n) for s, n in stacks if not s[0].startswith("Thread._bootstrap")]
    total = sum(n for _, n in stacks) or 1
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        if waits(frames):
            parts["waiting (socket, selector, lock)"] += n
            continue
        # the innermost Python frame of a known part names the sample's part
        part = next((p for p in map(frame_part, reversed(frames)) if p != "other"), "other")
        parts[part] += n
    lines = [
        f"{path.name}: {total} samples"
        + (", main thread" if main_only else "")
        + (", busy samples only (no thread waiting)" if busy else "")
    ]
    lines.append("  by part (innermost known frame; waiting = a wait at the leaf):")
    lines += [f"    {n / total:6.1%}  {p}" for p, n in parts.most_common()]
    lines.append("  self:")
    lines += [f"    {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive (our frames and the driver's):")
    ours = [
        (f, n)
        for f, n in inclusive.most_common()
        if frame_part(f) in ("atomdb-migrate", "pymongo", "secantus")
    ]
    lines += [f"    {n / total:6.1%}  {f}" for f, n in ours[:top]]
    return "\n".join(lines)


#: The pieces of a legacy restore, each named by a frame its samples pass
#: through, first match wins (`restore_shares`).
RESTORE_PIECES = (
    ("own_flattened", "ours: own_flattened"),
    ("LazyCopy.result", "ours: LazyCopy.result"),
    ("LazyCopy.of", "ours: LazyCopy.of"),
    ("run_chain", "ours: run_chain (the steps)"),
    ("_read_lazily", "ours: _read_lazily, its own"),
    ("_read_chain", "ours: the chain's lookup"),
    ("VersionedModel", "ours: VersionedModel.__restorestate__, its own"),
)


def restore_shares(path: Path) -> str:
    """The shares of a legacy restore's pieces, in the samples inside atom-db's
    ``NoSQLModel.restore`` (``profile_restore.py --loop`` under py-spy)."""
    inside = [
        (frames, n)
        for frames, n in read_collapsed(path)
        if any("NoSQLModel.restore (atomdb/nosql.py" in f for f in frames)
    ]
    total = sum(n for _, n in inside) or 1
    parts: collections.Counter[str] = collections.Counter()
    for frames, n in inside:
        ours = any("_read_lazily" in f or "_read_confined" in f for f in frames)
        if any("__restorestate__ (atomdb.base" in f for f in frames) and not ours:
            parts["atom-db: generated __restorestate__ (members, unflatten)"] += n
            continue
        name = next(
            (label for needle, label in RESTORE_PIECES if any(needle in f for f in frames)),
            "atom-db: restore (the object cache, the manager)",
        )
        parts[name] += n
    lines = [f"{path.name}: {total} samples inside NoSQLModel.restore"]
    lines += [f"    {n / total:6.1%}  {p}" for p, n in parts.most_common()]
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(found):
        raise SystemExit("py-spy is needed: pip install py-spy")
    return found


def profile_run(
    workload: str, n: int, url: str, server_pid: int, out: Path, rate: int
) -> dict[str, Any]:
    client: MongoClient[Any] = MongoClient(url)
    base = "rename" if workload == "nothing" else workload
    try:
        with tempfile.TemporaryDirectory(prefix="atomdb-migrate-profile-") as tmp:
            where = peers.projects(Path(tmp), base)["atomdb-migrate"]
            peers.seed(client, n)
            if workload == "nothing":
                peers.run("atomdb-migrate", where, Path(tmp), url)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(HERE.parent)])}
            env.pop("ATOMDB_MIGRATE_URL", None)
            env["PYTHONPYCACHEPREFIX"] = str(out / "pycache")  # compiled once, as installed
            cmd = peers.command("atomdb-migrate", Path(tmp), url)
            subprocess.run([*cmd[:1], "--help"], env=env, capture_output=True, check=True)
            client_file = out / f"{workload}-client.txt"
            server_file = out / f"{workload}-server.txt"
            spy = py_spy()
            watcher = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--format",
                    "raw",
                    "-r",
                    str(rate),
                    "-o",
                    str(server_file),
                    "--pid",
                    str(server_pid),
                    "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            start = time.perf_counter()
            subprocess.run(
                [
                    spy,
                    "record",
                    "--format",
                    "raw",
                    "--idle",
                    "-r",
                    str(rate),
                    "-o",
                    str(client_file),
                    "--",
                    *cmd,
                ],
                cwd=where,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            took = time.perf_counter() - start
            watcher.send_signal(2)
            watcher.wait(timeout=60)
            done = peers.applied(client, base)
            # the same run again without py-spy, each server command timed
            peers.seed(client, n)
            if workload == "nothing":
                peers.run("atomdb-migrate", where, Path(tmp), url)
            timed = subprocess.run(
                [sys.executable, str(HERE / "timed_commands.py"), *cmd[1:]],
                cwd=where,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
    finally:
        client.close()
    commands = timed.stderr[timed.stderr.index("commands:") :]
    return {
        "seconds": took,
        "applied": done,
        "client": client_file,
        "server": server_file,
        "commands": commands,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "workload", choices=("split", "rename", "nothing", "summary", "restore-shares")
    )
    parser.add_argument("file", nargs="?", type=Path, help="with summary: a collapsed file")
    parser.add_argument("-n", type=int, default=30000)
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("/tmp/atomdb-migrate-profiles"))
    parser.add_argument("--server-pid", type=int, help="the pid of the server at MONGO_URL")
    parser.add_argument("--busy", action="store_true", help="with summary: busy samples only")
    parser.add_argument("--main", action="store_true", help="with summary: the main thread only")
    args = parser.parse_args(argv)
    if args.workload == "restore-shares":
        print(restore_shares(args.file))
        return 0
    if args.workload == "summary":
        print(summary(args.file, args.top, main_only=args.main, busy=args.busy))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("MONGO_URL") and args.server_pid:
        result = profile_run(
            args.workload, args.n, os.environ["MONGO_URL"], args.server_pid, args.out, args.rate
        )
    else:
        from tests.servers import secantus_server

        with secantus_server() as url:
            pid = server_pid_of(url)
            result = profile_run(args.workload, args.n, url, pid, args.out, args.rate)
    print(f"{args.workload}, N = {args.n}: {result['seconds']:.2f} s under py-spy")
    print("without py-spy, the server commands timed by a command listener:")
    print(result["commands"])
    print(summary(result["client"], args.top, main_only=True))
    print()
    print(summary(result["server"], args.top, busy=True))
    return 0


def server_pid_of(url: str) -> int:
    """The pid of the process listening on `url`'s port (Linux, via ``ss``)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return int(out.stdout.split("pid=")[1].split(",")[0])


if __name__ == "__main__":
    sys.exit(main())
