"""Races: an app writing during an upgrade, two runners, lazy write-backs and saves."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any

import pytest
from atom.api import Int, Str

from atomdb_migrate import VersionedModel, step

from ..project import CUSTOMER, PYPROJECT, Project
from .conftest import record


@pytest.mark.timeout(3600)
def test_app_writer_during_an_upgrade_loses_nothing(project: Project, long: bool) -> None:
    n = 50000 if long else 10000
    project.seed(n, seq=0)
    coll = project.db[CUSTOMER]
    ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
    proc = project.spawn("upgrade", "--batch-size", "200")
    last: dict[Any, int] = {}
    rng, seq = random.Random(11), 0
    while proc.poll() is None:
        seq += 1
        i = rng.choice(ids)
        coll.update_one({"_id": i}, {"$set": {"seq": seq}})
        last[i] = seq
    out = proc.stdout.read() + proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 0, out
    reruns = 0
    while project.versions() != {"3": n}:  # documents changed twice while read
        code, out = project.run("upgrade")
        assert code == 0, out
        reruns += 1
    stored = {d["_id"]: d.get("seq") for d in coll.find({}, {"seq": 1})}
    lost = [i for i, s in last.items() if stored[i] != s]
    assert lost == []
    assert coll.distinct("applied") == [1]
    record(
        "writer",
        documents=n,
        writes=seq,
        documents_written=len(last),
        lost=len(lost),
        reruns=reruns,
    )


@pytest.mark.timeout(1800)
def test_two_runners_then_takeover_after_the_lease(project: Project) -> None:
    (project.path / "pyproject.toml").write_text(PYPROJECT.replace("lock-ttl = 2", "lock-ttl = 3"))
    n = 10000
    project.seed(n)
    procs = [project.spawn("upgrade") for _ in range(2)]
    codes = sorted(p.wait(timeout=180) for p in procs)
    assert codes == [0, 5]
    assert project.versions() == {"3": n}

    # Kill the holder mid-run: a new runner is refused, then takes over once
    # the lease has expired.
    project.db[CUSTOMER].drop()
    project.seed(n)
    holder = project.spawn("upgrade", "--batch-size", "200")
    while project.db[CUSTOMER].count_documents({"__version__": "3"}) < 1000:
        assert holder.poll() is None
        time.sleep(0.02)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    code, out = project.run("upgrade")
    assert code == 5 and "held by upgrade" in out
    code, out = project.run("upgrade", "--wait")
    took_over = time.monotonic() - killed
    assert code == 0, out
    assert project.versions() == {"3": n}
    assert project.db[CUSTOMER].distinct("applied") == [1]
    assert took_over < 3 + 30, "within the lease and the run"
    record(
        "runners",
        started_together=2,
        ran=1,
        refused=1,
        lease_s=3,
        takeover_after_kill_s=round(took_over, 1),
    )


class RaceAccount(VersionedModel):
    __model__ = "races.Account"
    __version__ = 2
    __write_back__ = True

    owner = Str()
    seq = Int()


@step(RaceAccount, 1, 2)
async def rename_holder(doc: dict[str, Any]) -> None:
    await asyncio.sleep(random.random() / 1000)  # let other tasks in
    doc["owner"] = doc.pop("holder")


@pytest.mark.timeout(1800)
async def test_lazy_write_backs_never_overwrite_saves(db: Any, backend: str, long: bool) -> None:
    if backend == "mongomock":
        pytest.skip(
            "the race needs a real server's interleaving; mongomock runs the same code in process"
        )
    n, workers, rounds = (500, 40, 200) if long else (200, 20, 60)
    coll = RaceAccount.objects
    ids = [
        (
            await coll.insert_one(
                {
                    "holder": f"h{i}",
                    "seq": 0,
                    "__version__": "1",
                    "__model__": RaceAccount.__model__,
                }
            )
        ).inserted_id
        for i in range(n)
    ]
    last: dict[Any, int] = {}
    locks = {i: asyncio.Lock() for i in ids}
    counter = {"seq": 0, "saves": 0, "restores": 0, "refused": 0}
    rng = random.Random(5)

    async def worker() -> None:
        for _ in range(rounds):
            i = rng.choice(ids)
            state = await coll.find_one({"_id": i})
            if rng.random() < 0.5:
                await RaceAccount.restore(state, force=True)  # upgrade + write-back
                counter["restores"] += 1
                continue
            async with locks[i]:  # saves of one document in a known order
                obj = await RaceAccount.restore(state, force=True)
                counter["seq"] += 1
                seq = obj.seq = counter["seq"]
                await obj.save()  # (other tasks may restore into obj meanwhile)
                last[i] = seq
                counter["saves"] += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    stored = {d["_id"]: d.get("seq") async for d in coll.find({}, {"seq": 1})}
    lost = [i for i, s in last.items() if stored[i] != s]
    assert lost == []
    record(
        "lazy",
        documents=n,
        saves=counter["saves"],
        restores=counter["restores"],
        lost_saves=len(lost),
    )
