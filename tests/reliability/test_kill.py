"""SIGKILL at random points of a run, then a rerun: nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from ..project import CUSTOMER, PYPROJECT, ROOT, Project
from .conftest import record


@pytest.mark.timeout(7200)
def test_sigkill_at_random_points(project: Project, long: bool) -> None:
    trials, n = (50, 50000) if long else (5, 3000)
    (project.path / "pyproject.toml").write_text(PYPROJECT)
    rng = random.Random(20261127)
    coll = project.db[CUSTOMER]
    outcomes = {"mid_run": 0, "before_first_write": 0, "finished_first": 0}
    lost = duplicated = twice = uncounted = 0
    started = time.monotonic()
    for _ in range(trials):
        coll.drop()
        project.db["atomdb_migrate_lock"].delete_many({})
        project.db["atomdb_migrate_history"].delete_many({})
        project.seed(n)
        ids = set(coll.distinct("_id"))
        batch = rng.choice([250, 500, 1000])
        proc = project.spawn("upgrade", "--batch-size", str(batch))
        # Most kills come once a random number of documents is written (the
        # machine's speed does not matter then); some come early, at a random
        # moment, before the first write or while it is in flight.
        if rng.random() < 0.2:
            wait_until: Any = time.monotonic() + rng.uniform(0.05, 1.0)
        else:
            wait_until = rng.randrange(1, n)
        while proc.poll() is None:
            if isinstance(wait_until, float):
                if time.monotonic() >= wait_until:
                    break
            elif coll.count_documents({"__version__": "3"}) >= wait_until:
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            outcomes["finished_first"] += 1
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done = coll.count_documents({"__version__": "3"})
            outcomes["mid_run" if done else "before_first_write"] += 1
        code, out = project.run("upgrade", "--wait")
        assert code == 0, out
        stored = list(coll.find({}, {"__version__": 1, "applied": 1}))
        stored_ids = [d["_id"] for d in stored]
        lost += len(ids - set(stored_ids))
        duplicated += len(stored_ids) - len(set(stored_ids))
        twice += sum(1 for d in stored if d.get("applied") != 1)
        assert {d["__version__"] for d in stored} == {"3"}
        uncounted += killed_run_counted(project, n, batch)
    assert (lost, duplicated, twice) == (0, 0, 0)
    assert outcomes["mid_run"] >= trials // 2, outcomes
    record(
        "kill",
        trials=trials,
        documents=n,
        killed_mid_run=outcomes["mid_run"],
        killed_before_first_write=outcomes["before_first_write"],
        finished_before_the_kill=outcomes["finished_first"],
        lost=lost,
        duplicated=duplicated,
        transformed_twice=twice,
        written_by_killed_runs_not_in_their_record=uncounted,
        seconds=round(time.monotonic() - started, 1),
    )


def killed_run_counted(project: Project, n: int, batch: int) -> int:
    """The killed run's record (marked abandoned by the rerun) holds what it wrote,
    as its last lease renewal or write carried it: at most the last batch is
    missing. Returns how many it misses."""
    runs = list(project.db["atomdb_migrate_history"].find({}, sort=[("started_at", 1)]))
    rerun = runs[-1]
    assert rerun["outcome"] == "succeeded"
    written = n - rerun["models"][CUSTOMER]["upgraded"]  # by the killed run
    if len(runs) == 1:  # killed before it recorded its start, or finished first
        assert written in (0, n), written
        return 0 if written == n else written
    killed = runs[0]
    assert killed["outcome"] in ("abandoned", "succeeded"), killed
    counted = (killed.get("models") or {}).get(CUSTOMER, {}).get("upgraded", 0)
    assert counted <= written <= counted + batch, (counted, written, batch)
    return written - counted


@pytest.mark.timeout(3600)
def test_sigkill_during_a_model_move(tmp_path: Path, secantus_url: str, long: bool) -> None:
    """Killed while renaming the collection or rewriting references: the rerun finishes the move."""
    from pymongo import MongoClient

    from ..test_rename_model import NEW, NEW_CODE, OLD, write_tree

    trials, n = (10, 10000) if long else (4, 3000)
    project = write_tree(tmp_path, NEW_CODE)
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml").read_text().replace("timeout = 5", "timeout = 5\nlock-ttl = 2")
    )
    client: MongoClient[dict[str, Any]] = MongoClient(secantus_url)
    db = client[f"kill_move_{uuid.uuid4().hex[:8]}"]
    env = {**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{ROOT}"}
    env.pop("ATOMDB_MIGRATE_URL", None)
    cli = [os.path.join(os.path.dirname(sys.executable), "atomdb-migrate"), "--url"]
    rng = random.Random(20261128)
    outcomes = {"killed": 0, "finished_first": 0}
    try:
        for _ in range(trials):
            client.drop_database(db.name)
            ids = [ObjectId() for _ in range(n)]

            def ref(i: int, ids: list[ObjectId] = ids) -> dict[str, Any]:
                return {"_id": ids[i], "__ref__": i, "__model__": OLD}

            db[OLD].insert_many(
                [
                    {"_id": ids[i], "__model__": OLD, "__version__": "1", "name": f"C{i}"}
                    | ({"referrer": ref(i + 1)} if i + 1 < n else {})
                    for i in range(n)
                ]
            )
            db["orders.Order"].insert_many(
                [
                    {"number": i, "__model__": "orders.Order", "customer": ref(i % n),
                     "cc": [ref((i + 1) % n)]}
                    for i in range(2 * n)
                ]
            )  # fmt: skip
            url = f"{secantus_url}/{db.name}"
            proc = subprocess.Popen(
                [*cli, url, "upgrade"], cwd=project, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                proc.wait(timeout=rng.uniform(0.2, 1.0 + n / 1500))
                outcomes["finished_first"] += 1
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                outcomes["killed"] += 1
            done = subprocess.run(
                [*cli, url, "upgrade", "--wait"], cwd=project, env=env,
                text=True, capture_output=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert OLD not in db.list_collection_names()
            customers = list(db[NEW].find())
            assert sorted(c["_id"] for c in customers) == sorted(ids)
            assert {(c["__model__"], c["__version__"]) for c in customers} == {(NEW, "2")}
            for name in db.list_collection_names():
                assert db[name].count_documents({"$or": [
                    {"__model__": OLD}, {"referrer.__model__": OLD},
                    {"customer.__model__": OLD}, {"cc.__model__": OLD},
                ]}) == 0, name  # fmt: skip
            assert db["orders.Order"].count_documents({}) == 2 * n
    finally:
        client.drop_database(db.name)
        client.close()
    assert outcomes["killed"] >= 1, outcomes
    record("kill_move", trials=trials, customers=n, orders=2 * n, **outcomes)
