"""SIGKILL at random points of a run, then a rerun: nothing lost, nothing twice."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from ..project import CUSTOMER, PYPROJECT, Project
from .conftest import record


@pytest.mark.timeout(7200)
def test_sigkill_at_random_points(project: Project, long: bool) -> None:
    trials, n = (50, 50000) if long else (20, 20000)
    (project.path / "pyproject.toml").write_text(PYPROJECT.replace("lock-ttl = 2", "lock-ttl = 1"))
    rng = random.Random(20261127)
    coll = project.db[CUSTOMER]
    estimate = 1.0 + n / 3000  # seconds a whole run takes here, roughly
    outcomes = {"mid_run": 0, "before_first_write": 0, "finished_first": 0}
    lost = duplicated = twice = 0
    started = time.monotonic()
    for _ in range(trials):
        coll.drop()
        project.db["atomdb_migrate_lock"].delete_many({})
        project.seed(n)
        ids = set(coll.distinct("_id"))
        proc = project.spawn("upgrade", "--batch-size", str(rng.choice([250, 500, 1000])))
        try:
            proc.wait(timeout=rng.uniform(0.05, estimate))
            outcomes["finished_first"] += 1
        except subprocess.TimeoutExpired:
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
        seconds=round(time.monotonic() - started, 1),
    )
