"""``upgrade --workers N`` and ``upgrade --join`` from the command line, on SecantusDB:
processes joining one run, killed (SIGKILL) and run again, and a join refused.

The demo's step 1 -> 2 counts its passes in ``applied``: a document taken
twice shows 2, one never taken stays at version 1.

"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

#: The exit code of a lock error (`JoinError` derives from `LockError`).
from atomdb_migrate.cli.exits import EXIT_LOCK, EXIT_STEP

from .project import CUSTOMER, Project

RANGES = "atomdb_migrate_lock_ranges"


def wait_for(what: Callable[[], Any], procs: list[subprocess.Popen[str]], limit: float = 90) -> Any:
    """The first true value of `what`, while the processes run."""
    deadline = time.monotonic() + limit
    while not (found := what()):
        for p in procs:
            assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def once(project: Project, n: int) -> None:
    """Every document at the code's version, each transformed exactly once."""
    assert project.versions() == {"3": n}
    assert project.db[CUSTOMER].distinct("applied") == [1]


def last_run(project: Project) -> dict[str, Any]:
    run = project.db["atomdb_migrate_history"].find_one({}, sort=[("started_at", -1)])
    assert run is not None
    return run


def test_workers_in_one_process(project: Project) -> None:
    n = 3000
    project.seed(n)
    code, out = project.run("upgrade", "--workers", "3", "--batch-size", "100")
    assert code == 0, out
    once(project, n)
    run = last_run(project)
    assert run["outcome"] == "succeeded"
    workers = run["workers"]
    assert len(workers) == 3
    assert sum(w["counts"]["migrated"] for w in workers.values()) == n
    assert project.db[RANGES].count_documents({}) == 0, "the run's ranges are deleted at its end"
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 0
    code, out = project.run("history")
    assert code == 0 and out.count("worker ") == 3, out


def test_three_processes_join_one_run(project: Project) -> None:
    n = 6000
    project.seed(n)
    # Slow enough (6 s at least) that the joiners, started beside it, find ranges left.
    rate = ["--max-rate", "1000", "--batch-size", "100"]
    starter = project.spawn("upgrade", "--workers", "2", *rate)
    joiners = [project.spawn("upgrade", "--join", *rate) for _ in range(2)]
    results = [finish(p) for p in [starter, *joiners]]
    assert [code for code, _ in results] == [0, 0, 0], results
    once(project, n)
    run = last_run(project)
    workers = run["workers"]
    pids = {w["pid"] for w in workers.values()}
    assert {p.pid for p in joiners} <= pids, "each joiner took ranges"
    assert sum(w["counts"]["migrated"] for w in workers.values()) == n
    assert run["models"][CUSTOMER]["upgraded"] == n, "the run's record counts every worker"
    assert f"{n} upgraded to 3" in results[0][1], results[0][1]
    for _, out in results[1:]:
        # A joiner's progress names the model, out of the run's documents (its ranges').
        assert f"{CUSTOMER}: {n} documents to migrate" in out, out
        assert re.search(rf"^{re.escape(CUSTOMER)}: \d+/{n} documents, ", out, re.M), out
        assert "/0 documents" not in out, out


def test_a_killed_joiners_ranges_are_taken_over(project: Project) -> None:
    n = 6000
    project.seed(n)
    rate = ["--max-rate", "1500", "--batch-size", "100"]
    starter = project.spawn("upgrade", "--workers", "2", *rate)
    joiner = project.spawn("upgrade", "--join", *rate)
    wait_for(
        lambda: project.db[RANGES].find_one(
            {"pid": joiner.pid, "state": "claimed", "counts.migrated": {"$gt": 0}}
        ),
        [starter, joiner],
    )
    # Killed between two renewals of its lease (lock-ttl 2 s: every 0.67 s), with
    # batches written since the last one: each recorded as it was written.
    time.sleep(0.3)
    joiner.send_signal(signal.SIGKILL)
    joiner.wait()
    code, out = finish(starter)
    assert code == 0, out
    once(project, n)
    run = last_run(project)
    workers = run["workers"]
    dead = [w for w in workers.values() if w["pid"] == joiner.pid]
    assert dead and dead[0]["ranges"].get("taken over", 0) >= 1, "its range was taken over"
    assert dead[0]["counts"]["migrated"] > 0
    # What the server holds: the batch it was writing is counted by the worker that
    # took its range over (it recorded the batch's ids before writing it).
    assert sum(w["counts"]["migrated"] for w in workers.values()) == n
    assert run["models"][CUSTOMER]["upgraded"] == n, run["models"]


def test_all_killed_then_a_rerun_carries_the_same_ranges_on(project: Project) -> None:
    n = 6000
    project.seed(n)
    rate = ["--max-rate", "1500", "--batch-size", "100"]
    procs = [
        project.spawn("upgrade", "--workers", "2", *rate),
        project.spawn("upgrade", "--join", *rate),
    ]
    wait_for(lambda: project.db[RANGES].count_documents({"state": "done"}) >= 2, procs)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    planned = {d["_id"] for d in project.db[RANGES].find({})}
    assert project.db[CUSTOMER].count_documents({"__version__": "1"}) > 0, "killed mid-run"
    code, out = project.run("upgrade", "--workers", "2", "--wait", "--batch-size", "100")
    assert code == 0, out
    once(project, n)
    workers = last_run(project)["workers"]
    assert {p.pid for p in procs} <= {w["pid"] for w in workers.values()}, (
        "the rerun's ranges are the killed run's: its workers are counted"
    )
    assert planned, "the killed run's ranges were there"


def test_a_join_of_other_code_is_refused_and_writes_nothing(project: Project) -> None:
    n = 3000
    project.seed(n)
    starter = project.spawn(
        "upgrade", "--workers", "2", "--max-rate", "1000", "--batch-size", "100"
    )
    wait_for(lambda: project.db[RANGES].count_documents({}), [starter])
    step = project.path / "migrations" / "0002_add_tier.py"
    step.write_text(step.read_text().replace('"basic"', '"bronze"'))
    try:
        code, out = project.run("upgrade", "--join")
        assert code == EXIT_LOCK, out
        assert "runs other code than this one" in out and "checksums" in out, out
        assert "clidemo.Customer 2 -> 3" in out, out
        assert not project.db[RANGES].find_one(
            {"host": {"$exists": True}, "pid": {"$nin": [starter.pid]}}
        )
        code, out = project.run("upgrade", "--join", "--to", "2", "clidemo.Customer")
        assert code == EXIT_LOCK and "targets" in out, out
    finally:
        step.write_text(step.read_text().replace('"bronze"', '"basic"'))
    code, out = finish(starter)
    assert code == 0, out
    once(project, n)
    assert project.db[CUSTOMER].distinct("tier") == ["basic"], "the refused joiners wrote nothing"


def test_a_join_with_no_run_waits_then_fails(project: Project) -> None:
    project.seed(10)
    for refused in ("--dry-run", "--retry-failed"):
        code, out = project.run("upgrade", "--join", refused)
        assert code != 0 and f"not with {refused}" in out, out
    code, out = project.run("upgrade", "--join", "--join-wait", "0.5")
    assert code == EXIT_LOCK, out
    assert "no upgrade run with workers to join started within 0.5 s" in out
    assert project.versions() == {"1": 10}


def test_status_shows_a_run_and_unlock_frees_its_ranges(project: Project) -> None:
    n = 3000
    project.seed(n)
    starter = project.spawn(
        "upgrade", "--workers", "2", "--max-rate", "1000", "--batch-size", "100"
    )
    wait_for(lambda: project.db[RANGES].count_documents({"state": "done"}), [starter])
    code, out = project.run("status")
    assert code == 0, out
    assert "run of workers in progress" in out and "claimed" in out, out
    assert out.count("  worker ") == 2, out
    shown = project.spawn("status", "--json")
    out, err = shown.communicate(timeout=60)
    assert shown.returncode == 0, out + err
    rows = json.loads(out)
    workers = rows[0]["workers"]
    assert workers["run"]["workers"] == 2 and workers["alive"] is True, workers
    assert len(workers["owners"]) == 2 and workers["ranges"]["done"] >= 1, workers
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    claimed = project.db[RANGES].count_documents({"state": "claimed"})
    code, out = project.run("unlock", "--yes", "--force")
    assert code == 0, out
    if claimed:
        assert f"{claimed} ranges of its workers are pending again" in out, out
    assert project.db[RANGES].count_documents({"state": "claimed"}) == 0
    code, out = project.run("upgrade", "--workers", "2")
    assert code == 0, out
    once(project, n)


def start_and_join(project: Project, *given: str) -> tuple[Any, Any]:
    """A starter with two workers (and `given`), and a joiner spawned once the
    starter holds the first range; both slowed, so that the joiner finds ranges."""
    rate = ["--max-rate", "1500", "--batch-size", "100"]
    starter = project.spawn("upgrade", "--workers", "2", *given, *rate)
    wait_for(
        lambda: project.db[RANGES].find_one({"n": 0, "pid": starter.pid, "state": "claimed"}),
        [starter],
    )
    return starter, project.spawn("upgrade", "--join", *rate)


def test_a_joiner_of_a_run_that_failed_fails_too(project: Project) -> None:
    """The starter's run ends failed (a document its step refuses, under
    --continue-on-error, taken by the starter): the joiner, whose own ranges went
    well, exits non-zero too, naming the run's outcome. A Kubernetes Job of joiners
    must not complete over a run that failed."""
    n = 6000
    project.seed(n)
    # The first range (the smallest _id) holds the document step 1 -> 2 refuses.
    first = ObjectId("000000000000000000000001")
    project.db[CUSTOMER].insert_one(
        {"_id": first, "name": "BOOM", "__model__": CUSTOMER, "__version__": "1"}
    )
    starter, joiner = start_and_join(project, "--continue-on-error")
    code, out = finish(starter)
    assert code == EXIT_STEP, out
    assert last_run(project)["outcome"] == "failed"
    code, out = finish(joiner)
    assert code == EXIT_STEP, out
    assert "the run of workers joined ended failed" in out, out
    assert project.versions() == {"3": n, "1": 1}


def test_hostile_strings_of_a_run_of_workers_are_printed_escaped(project: Project) -> None:
    """What ``status`` and ``history`` print of a run of workers comes from the
    database (the run's record, the ranges, the history): a host, an owner or a model
    name holding a newline or an escape sequence shows escaped, one line each."""
    hostile = "evil\n\x1b[2Jhost"
    project.seed(5)
    project.db["atomdb_migrate_lock"].insert_one(
        {
            "_id": "atomdb-migrate",
            "owner": "x",
            "command": "upgrade",
            "host": hostile,
            "pid": 1,
            "expires_at": datetime.now(UTC),
            "run": {"key": "k", "host": hostile, "pid": "1\r2", "workers": 2, "models": []},
        }
    )
    by = {"host": hostile, "pid": 3, "counts": {"migrated": 1}}
    project.db[RANGES].insert_one(
        {
            "_id": "k:m:0",
            "run": "k",
            "model": "m",
            "n": 0,
            "state": "claimed",
            "owner": "o\x1b[31m",
            "count": 1,
            "counts": {},
            "by": {"o\x1b[31m": by},
        }
    )
    project.db["atomdb_migrate_history"].insert_one(
        {
            "command": "upgrade",
            "outcome": "succeeded",
            "started_at": datetime.now(UTC),
            "models": {"clidemo.Customer\n\x1b[2J": {"migrated": 5}},
            "workers": {"o\x1b[31m": {**by, "ranges": {"done": 1}}},
        }
    )
    for command in (["status"], ["history"]):
        result = project.invoke(*command, color=True)
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            assert line.isprintable(), (command, line)
        assert "evil\\n\\x1b[2Jhost" in result.output, result.output


def test_a_joiner_claims_no_range_once_the_run_failed(project: Project) -> None:
    """The starter fails (a document its step refuses, in the first range, which it
    took): its lock is released, and no process is to write for that run any more.
    The joiner ends the range it holds, claims no other, and fails."""
    project.seed(700)
    project.db[CUSTOMER].insert_one(
        {"_id": ObjectId(), "name": "BOOM", "__model__": CUSTOMER, "__version__": "1"}
    )
    project.seed(5300)
    starter, joiner = start_and_join(project)
    code, out = finish(starter)
    assert code == EXIT_STEP, out
    run = last_run(project)
    assert run["outcome"] == "failed"
    code, out = finish(joiner)
    assert code == EXIT_STEP, out
    ended = run["finished_at"]
    late = [
        d["_id"]
        for d in project.db[RANGES].find({})
        for owner, seen in (d.get("by") or {}).items()
        if seen.get("pid") == joiner.pid and seen["since"] > ended
    ]
    assert not late, f"the joiner claimed {late} after the run failed"
    assert project.versions().get("1", 0) > 1, "the run stopped"


def test_a_joiner_stops_in_its_range_once_the_run_failed(project: Project) -> None:
    """Ranges can be long (a collection's documents / 4 per worker): a joiner in the
    middle of one when the run fails does not write on to its end. It sees the run
    ended at its next renewal of the lease, gives the range back and fails."""
    project.seed(2000)
    project.db[CUSTOMER].insert_one(
        {"_id": ObjectId(), "name": "BOOM", "__model__": CUSTOMER, "__version__": "1"}
    )
    project.seed(18000)
    starter = project.spawn(
        "upgrade", "--workers", "2", "--max-rate", "1500", "--batch-size", "100"
    )
    wait_for(
        lambda: project.db[RANGES].find_one({"n": 0, "pid": starter.pid, "state": "claimed"}),
        [starter],
    )
    joiner = project.spawn("upgrade", "--join", "--max-rate", "300", "--batch-size", "100")
    wait_for(lambda: project.db[RANGES].find_one({"pid": joiner.pid}), [starter, joiner])
    code, out = finish(starter)
    assert code == EXIT_STEP, out
    ended = last_run(project)["finished_at"]
    code, out = finish(joiner)
    assert code == EXIT_STEP, out
    late = [
        d["_id"]
        for d in project.db[RANGES].find({"pid": joiner.pid, "state": "done"})
        if d["done_at"] > ended
    ]
    assert not late, f"the joiner wrote {late} to their end after the run failed"
