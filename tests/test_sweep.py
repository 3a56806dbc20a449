"""The in-app sweep: `atomdb_migrate.sweep` and `sweeping`, on SecantusDB.

The app saves its documents through atom-db while the sweep upgrades them:
no save is lost and every document goes through its step once. The sweep
stops cleanly at the app's shutdown (its range and the lock given up),
never runs while a plain upgrade holds the lock, and a plain upgrade finds
the lock held by the sweep while a turn runs. Several sweeps (the app's
pods) share the ranges.

"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from atom.api import Int, Str

import atomdb_migrate
from atomdb_migrate import VersionedModel, step
from atomdb_migrate.engine.background import SWEEP_COMMAND, run_key
from atomdb_migrate.engine.lock import LOCK_ID, LeaseLock
from atomdb_migrate.engine.ranges import CLAIMED, ranges_collection
from atomdb_migrate.exceptions import LockHeldError
from atomdb_migrate.steps.registry import MigrationRegistry

from .project import ROOT, Project

#: Documents of the tests (raise it with SWEEP_DOCUMENTS).
N = int(os.environ.get("SWEEP_DOCUMENTS", "400"))

LOCKS = "atomdb_migrate_lock"


class SweptAccount(VersionedModel):
    __model__ = "sweeptest.Account"
    __version__ = 2

    owner = Str()
    #: The last sequence number the app saved.
    seq = Int()
    #: How many times the 1 -> 2 step ran on this document.
    applied = Int()


#: Set to hold the step (and the sweep's turn) until it is set again.
GATE: dict[str, asyncio.Event | None] = {"gate": None}


@pytest.fixture
def steps(registry: MigrationRegistry) -> Iterator[MigrationRegistry]:
    """The 1 -> 2 step of the test model, in the isolated registry."""
    registry.register_model(SweptAccount)

    @step(SweptAccount, 1, 2)
    async def name_owner(doc: dict[str, Any]) -> None:
        gate = GATE["gate"]
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(random.random() / 2000)  # let the app's tasks in
        if doc["holder"] == "BOOM":
            raise ValueError("cannot name BOOM")
        doc["owner"] = doc.pop("holder")
        doc["applied"] = doc.get("applied", 0) + 1

    yield registry
    GATE["gate"] = None


async def test_in_memory_one_turn(db: Any, backend: str, steps: MigrationRegistry) -> None:
    """mongomock has no $bucketAuto (nor $type with a list): the sweep takes a model's
    documents in one turn there, without ranges (an app's tests with
    `atomdb_migrate.testing`)."""
    if backend != "mongomock":
        pytest.skip("the fallback of mongomock, which has no $bucketAuto")
    await seed(db, 30)
    await db[SweptAccount.__model__].insert_one(
        {"_id": "text", "holder": "t", "__version__": "1", "__model__": SweptAccount.__model__}
    )
    report = await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.01)
    assert report.finished and report.ranges == 1
    assert report.models[SweptAccount.__model__].migrated == 31
    assert await versions(db) == {"2": 31}
    assert await db[LOCKS].count_documents({}) == 0


@pytest.fixture
def secantus(backend: str) -> str:
    if not backend.startswith("secantus"):
        pytest.skip("the sweep is tested on SecantusDB (its ranges use $bucketAuto)")
    return backend


async def until(found: Any, what: str, seconds: float = 60.0) -> None:
    """Wait until the coroutine function `found` gives true; fail after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while not await found():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"waited {seconds} s for {what}")


async def seed(db: Any, n: int) -> list[Any]:
    docs = [
        {"holder": f"h{i}", "seq": 0, "__version__": "1", "__model__": SweptAccount.__model__}
        for i in range(n)
    ]
    result = await db[SweptAccount.__model__].insert_many(docs)
    return list(result.inserted_ids)


async def _at_least(db: Any, n: int) -> bool:
    return (await versions(db)).get("2", 0) >= n


async def versions(db: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    async for d in db[SweptAccount.__model__].find({}, {"__version__": 1}):
        out[d["__version__"]] = out.get(d["__version__"], 0) + 1
    return out


async def test_the_app_saving_during_the_sweep_loses_nothing(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    ids = await seed(db, N)
    coll = SweptAccount.objects
    last: dict[Any, int] = {}
    locks = {i: asyncio.Lock() for i in ids}
    counter = {"seq": 0, "saves": 0}
    rng = random.Random(7)

    async def app() -> None:
        for _ in range(N // 4):
            i = rng.choice(ids)
            async with locks[i]:  # saves of one document in a known order
                obj = await SweptAccount.restore(await coll.find_one({"_id": i}), force=True)
                counter["seq"] += 1
                seq = obj.seq = counter["seq"]
                await obj.save()
                last[i] = seq
                counter["saves"] += 1

    async with atomdb_migrate.sweeping(
        [SweptAccount], database=db, batch_size=25, poll=0.05
    ) as running:
        await asyncio.gather(*(app() for _ in range(8)))
        report = await running.task  # it ends when nothing is left behind
    assert report.finished
    stored = {d["_id"]: d async for d in db[SweptAccount.__model__].find()}
    lost = [i for i, s in last.items() if stored[i]["seq"] != s]
    assert lost == []
    assert await versions(db) == {"2": N}
    assert {d["applied"] for d in stored.values()} == {1}  # each step once
    assert {d["owner"] for d in stored.values()} == {f"h{i}" for i in range(N)}
    assert report.models[SweptAccount.__model__].migrated + counter["saves"] >= N
    assert report.ranges >= 1
    # The lock and the ranges are left as found: free, and done.
    assert await db[LOCKS].count_documents({}) == 0
    ranges = db[ranges_collection(LOCKS)]
    assert await ranges.count_documents({"state": {"$ne": "done"}}) == 0
    print(f"sweep: {N} documents, {counter['saves']} saves by the app, {report.ranges} ranges")


async def test_stop_at_shutdown_gives_the_range_and_the_lock_back(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    await seed(db, N)
    async with atomdb_migrate.sweeping(
        [SweptAccount], database=db, batch_size=20, max_rate=400, poll=0.05
    ) as running:
        await until(lambda: _at_least(db, 40), "40 documents swept")
    report = running.report  # stopped at the end of the block
    assert not report.finished
    assert running.task.done()
    assert await db[LOCKS].count_documents({}) == 0
    ranges = db[ranges_collection(LOCKS)]
    assert await ranges.count_documents({"state": CLAIMED}) == 0
    behind = (await versions(db)).get("1", 0)
    assert behind > 0  # stopped before the end

    # Cancelled in the middle of a turn (the app's task cancelled at shutdown):
    # its range is given back at once, and the lock too.
    GATE["gate"] = asyncio.Event()
    task = asyncio.create_task(atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05))
    await until(lambda: ranges.count_documents({"state": CLAIMED}), "a range claimed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ranges.count_documents({"state": CLAIMED}) == 0
    assert await db[LOCKS].count_documents({}) == 0
    GATE["gate"] = None

    # A sweep started again finishes the rest, each document once.
    report = await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05)
    assert report.finished
    assert await versions(db) == {"2": N}
    assert await db[SweptAccount.__model__].distinct("applied") == [1]


async def test_the_sweep_waits_while_a_plain_upgrade_holds_the_lock(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    await seed(db, 60)
    upgrade = LeaseLock(db[LOCKS], command="upgrade")
    async with upgrade:
        stop = asyncio.Event()
        task = asyncio.create_task(
            atomdb_migrate.sweep([SweptAccount], database=db, stop=stop, poll=0.05)
        )
        for _ in range(10):  # ten looks at the lock, each finding it held
            await asyncio.sleep(0.06)
        assert await versions(db) == {"1": 60}
        assert not task.done()
    report = await task  # the upgrade gave the lock up: the sweep goes on, and ends
    assert report.finished and report.waited > 0
    assert await versions(db) == {"2": 60}


async def test_a_plain_upgrade_finds_the_lock_held_by_the_sweep(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    await seed(db, 30)
    gate = GATE["gate"] = asyncio.Event()
    task = asyncio.create_task(atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05))
    held = {"_id": LOCK_ID, "command": SWEEP_COMMAND}
    await until(lambda: db[LOCKS].count_documents(held), "the sweep holding the lock")
    # In the middle of a turn: the upgrade's lock is refused, naming the sweep.
    with pytest.raises(LockHeldError) as refused:
        await LeaseLock(db[LOCKS], command="upgrade").acquire()
    assert "held by sweep" in str(refused.value)
    gate.set()
    report = await task
    assert report.finished
    assert await versions(db) == {"2": 30}


async def test_the_command_line_upgrade_refuses_while_the_sweep_turns(
    project: Project, steps: MigrationRegistry, backend: str
) -> None:
    if not backend.startswith("secantus"):
        pytest.skip("the sweep is tested on SecantusDB (its ranges use $bucketAuto)")
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(project.url)
    db = client[project.dbname]
    try:
        await seed(db, 20)
        gate = GATE["gate"] = asyncio.Event()
        task = asyncio.create_task(atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05))
        held = {"command": SWEEP_COMMAND}
        await until(lambda: db[LOCKS].count_documents(held), "the sweep holding the lock")
        env = {**os.environ, "MONGO_URL": project.url, "PYTHONPATH": str(ROOT)}
        env.pop("ATOMDB_MIGRATE_URL", None)
        exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
        proc = await asyncio.create_subprocess_exec(
            exe,
            "upgrade",
            cwd=project.path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
        assert proc.returncode == 5, out
        assert b"held by sweep" in out
        gate.set()
        assert (await task).finished
        assert await versions(db) == {"2": 20}
    finally:
        GATE["gate"] = None
        await client.close()


async def test_several_sweeps_share_the_ranges(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    """Three app processes' sweeps (three sweeps here): each takes ranges of the one
    run, and each document goes through its step once."""
    await seed(db, N)
    reports = await asyncio.gather(
        *(
            atomdb_migrate.sweep([SweptAccount], database=db, batch_size=20, poll=0.01)
            for _ in range(3)
        )
    )
    assert all(r.finished for r in reports)
    assert sum(r.ranges for r in reports) == await db[ranges_collection(LOCKS)].count_documents(
        {"run": run_key(SweptAccount.__model__, "2"), "state": "done"}
    )
    assert sum(r.models[SweptAccount.__model__].migrated for r in reports) == N
    assert await versions(db) == {"2": N}
    assert await db[SweptAccount.__model__].distinct("applied") == [1]


async def test_documents_saved_behind_after_the_plan_are_swept_too(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    """An older process saves documents at version 1 after the ranges were done:
    the next sweep plans again and takes them."""
    await seed(db, 50)
    assert (await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05)).finished
    await seed(db, 10)
    report = await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05)
    assert report.finished and report.models[SweptAccount.__model__].migrated == 10
    assert await versions(db) == {"2": 60}


async def test_the_sweep_pauses_while_the_app_is_busy(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    await seed(db, 40)
    asked: list[dict[str, int]] = []

    async def busy() -> bool:
        asked.append(await versions(db))
        return len(asked) <= 5  # busy for the first five looks

    report = await atomdb_migrate.sweep([SweptAccount], database=db, busy=busy, poll=0.02)
    assert report.finished and report.paused > 0
    assert asked[:6] == [{"1": 40}] * 6  # nothing written while the app was busy
    assert await versions(db) == {"2": 40}


async def test_documents_a_step_fails_on_are_left_to_upgrade(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    """The sweep records them, plans once more for them, and ends: it does not
    try them again and again."""
    await seed(db, 30)
    await db[SweptAccount.__model__].insert_one(
        {"holder": "BOOM", "seq": 0, "__version__": "1", "__model__": SweptAccount.__model__}
    )
    report = await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.01)
    counts = report.models[SweptAccount.__model__]
    assert report.finished
    assert counts.migrated == 30
    assert counts.failed == 2  # the first plan, and the one made again for it
    assert "cannot name BOOM" in str(counts.failures[0]["error"])
    assert await versions(db) == {"2": 30, "1": 1}
    assert await db[LOCKS].count_documents({}) == 0

    # Good documents saved behind later: a new sweep plans again, though the
    # last plan migrated nothing.
    await seed(db, 10)
    report = await atomdb_migrate.sweep([SweptAccount], database=db, poll=0.01)
    assert report.finished and report.models[SweptAccount.__model__].migrated == 10
    assert await versions(db) == {"2": 40, "1": 1}


#: An app process of its own: the model, its step, and a sweep of its database.
POD = """
import asyncio, json, sys
from atom.api import Int, Str
import atomdb_migrate
from atomdb_migrate import VersionedModel, step
from pymongo import AsyncMongoClient


class SweptAccount(VersionedModel):
    __model__ = "sweeptest.Account"
    __version__ = 2
    owner = Str()
    seq = Int()
    applied = Int()


@step(SweptAccount, 1, 2)
def name_owner(doc):
    doc["owner"] = doc.pop("holder")
    doc["applied"] = doc.get("applied", 0) + 1


async def main():
    client = AsyncMongoClient(sys.argv[1])
    report = await atomdb_migrate.sweep(
        [SweptAccount], database=client[sys.argv[2]], batch_size=20, max_rate=2000, poll=0.02
    )
    counts = report.models[SweptAccount.__model__]
    print(json.dumps({"ranges": report.ranges, "migrated": counts.migrated,
                      "finished": report.finished}))
    await client.close()


asyncio.run(main())
"""


async def test_two_app_processes_share_the_sweep(
    tmp_path: Any, secantus_url: str, backend: str
) -> None:
    if backend != "secantus-pymongo":
        pytest.skip("processes of their own: once, on SecantusDB with PyMongo")
    import json

    from pymongo import AsyncMongoClient

    name = f"sweep_pods_{random.randrange(1 << 30)}"
    client: Any = AsyncMongoClient(secantus_url)
    db = client[name]
    try:
        await seed(db, N)
        (tmp_path / "pod.py").write_text(POD)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        pods = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(tmp_path / "pod.py"),
                secantus_url,
                name,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        async with asyncio.timeout(240):
            outs = await asyncio.gather(*(pod.communicate() for pod in pods))
        for pod, (_, err) in zip(pods, outs, strict=True):
            assert pod.returncode == 0, err.decode()
        said = [json.loads(out) for out, _ in outs]
        assert all(s["finished"] for s in said)
        done = await db[ranges_collection(LOCKS)].count_documents({"state": "done"})
        assert sum(s["ranges"] for s in said) == done
        assert sum(s["migrated"] for s in said) == N
        assert await versions(db) == {"2": N}
        assert await db[SweptAccount.__model__].distinct("applied") == [1]
        print(f"two processes: ranges {[s['ranges'] for s in said]} of {done}")
    finally:
        await client.drop_database(name)
        await client.close()


async def test_the_sweep_pauses_while_others_hold_every_range_left(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    """Every range left is claimed by another process (alive, or dead until its
    lease runs out): the sweep finds none to claim, and waits `poll` before it
    takes the lock again, instead of taking and giving it up in a loop."""
    from atomdb_migrate.commands.sweep import make_sweep
    from atomdb_migrate.engine.ranges import worker_id

    await seed(db, 40)
    stop = asyncio.Event()
    sweep = make_sweep([SweptAccount], database=db, stop=stop, batch_size=10, poll=0.05)
    run = run_key(SweptAccount.__model__, SweptAccount.__parsed_version__)
    other = worker_id()
    real_claim = sweep.ranges.claim
    turns = {"claims": 0}

    async def claim(*args: Any, **kwargs: Any) -> Any:
        # Another process claims every range first, and holds it.
        while await real_claim(run, other, SweptAccount.__model__) is not None:
            pass
        turns["claims"] += 1
        if turns["claims"] == 5:
            stop.set()
        return await real_claim(*args, **kwargs)

    sweep.ranges.claim = claim  # type: ignore[method-assign]
    report = await sweep.run()
    assert turns["claims"] == 5 and not report.finished
    assert report.waited > 0, "it paused between the turns that found no range"
    assert await versions(db) == {"1": 40}


async def test_the_sweeps_lock_carries_no_run_of_workers_a_dead_starter_left(
    db: Any, secantus: str, steps: MigrationRegistry
) -> None:
    """A starter of ``upgrade --workers N`` killed leaves its run's record in the lock
    document; a sweep that takes the lock after its lease ran out holds it for itself:
    no joiner may take the sweep's lease for the run's (and write beside it), and
    ``status`` shows no run of workers in progress."""
    from datetime import UTC, datetime, timedelta

    await seed(db, 30)
    past = datetime.now(UTC) - timedelta(seconds=5)
    run = {"key": "dead-run", "models": [SweptAccount.__model__], "host": "h", "pid": 1}
    await db[LOCKS].insert_one(
        {"_id": LOCK_ID, "owner": "dead", "command": "upgrade", "expires_at": past, "run": run}
    )
    gate = GATE["gate"] = asyncio.Event()
    task = asyncio.create_task(atomdb_migrate.sweep([SweptAccount], database=db, poll=0.05))
    held = {"_id": LOCK_ID, "command": SWEEP_COMMAND}
    await until(lambda: db[LOCKS].count_documents(held), "the sweep holding the lock")
    lock = await db[LOCKS].find_one({"_id": LOCK_ID})
    gate.set()
    report = await task
    assert "run" not in lock, lock
    assert report.finished
