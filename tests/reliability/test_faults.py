"""Server faults during a run: the run rides through transient ones, and a lasting one
ends cleanly within its bound.

The faults are SecantusDB's ``failCommand`` fail point, as MongoDB's drivers
test their retryable reads and writes: a dropped connection, the error codes
of an election and a shutdown, a write-concern error, a connection held past
the socket timeout, and the server itself killed and started again. Each is
aimed (by ``appName``) at the run's own connections only, with the driver's
own single retry turned off, so that what rides through is the runner.

The step counts its applications in the document: after each run, every
document is at the head, transformed exactly once.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from atom.api import Int, Str
from pymongo import MongoClient

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.commands.command import upgrade
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.engine.pace import Pace, lag_of
from atomdb_migrate.engine.runner import RunOptions
from atomdb_migrate.exceptions import ServerUnavailableError

from ..project import ROOT
from ..servers import SecantusProcess, secantus_server
from .record_check import check_record, runs

APP = "atomdb-migrate-under-test"
N = 1000


class Part(VersionedModel):
    __model__ = "faults.Part"
    __version__ = 2

    name = Str()
    label = Str()
    applied = Int()


#: Seconds the step takes per document (a test that aims a fault mid-run
#: slows the run down so that it is still running then).
SLOW = [0.0]


def label(doc: dict[str, Any]) -> None:
    if SLOW[0]:
        time.sleep(SLOW[0])
    doc["label"] = doc["name"].upper()
    doc["applied"] = doc.get("applied", 0) + 1


@pytest.fixture(scope="module")
def fault_server() -> Iterator[str]:
    """A SecantusDB server that accepts ``configureFailPoint``."""
    with secantus_server(test_commands=True) as url:
        yield url


@pytest.fixture
def steps(registry: MigrationRegistry) -> MigrationRegistry:
    register_step(Part, 1, 2, label)
    return registry


class Faults:
    """A database of legacy parts, and the fail point aimed at the run's client."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"faults_{uuid.uuid4().hex[:10]}"
        self.client: MongoClient[dict[str, Any]] = MongoClient(server)
        self.db = self.client[self.name]
        #: The run's URL: its own appName, and no retry by the driver. A
        #: fail point changes no server state, so the driver would otherwise
        #: wait its whole heartbeat (10 s) before it selects the server again.
        self.url = (
            f"{server}/{self.name}?appname={APP}&retryWrites=false&retryReads=false"
            "&heartbeatFrequencyMS=500"
        )

    def seed(self, n: int = N) -> None:
        self.db[Part.__model__].insert_many(
            [{"name": f"part {i}", "__version__": "1"} for i in range(n)]
        )

    def upgraded(self) -> int:
        return self.db[Part.__model__].count_documents({"__version__": "2"})

    def fail(self, mode: Any, **data: Any) -> None:
        self.client.admin.command(
            {"configureFailPoint": "failCommand", "mode": mode, "data": {"appName": APP, **data}}
        )

    def off(self) -> None:
        self.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})

    def check(self, n: int = N) -> dict[str, int]:
        """Every document at the head, transformed exactly once."""
        counts: dict[str, int] = {}
        for doc in self.db[Part.__model__].find({}, {"__version__": 1, "applied": 1}):
            key = f"{doc.get('__version__')}/{doc.get('applied')}"
            counts[key] = counts.get(key, 0) + 1
        assert counts == {"2/1": n}, counts
        return counts

    def check_record(self, **options: Any) -> dict[str, int]:
        """The history's counts equal what the server holds (`check_record`)."""
        figures = check_record(self.db, Part.__model__, "2", **options)
        counted()
        return figures

    def close(self) -> None:
        self.off()
        self.client.drop_database(self.name)
        self.client.close()


def counted() -> None:
    """One more fault scenario the record invariant was checked after (for the report)."""
    from .report import FIGURES

    section = FIGURES.setdefault("faults", {})
    section["records_checked"] = section.get("records_checked", 0) + 1


class Writer:
    """An app changing the parts' names while the run reads them: a step that looked
    at a name changed meanwhile reads its document again; changed twice, it is skipped."""

    def __init__(self, faults: Faults, n: int = N) -> None:
        self.collection = faults.db[Part.__model__]
        self.n = n
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        rng = random.Random(23)
        ids = [d["_id"] for d in self.collection.find({}, {"_id": 1})]
        while not self._stop.is_set():
            doc_id = rng.choice(ids)
            self.collection.update_one(
                {"_id": doc_id}, {"$set": {"name": f"renamed {rng.random()}"}}
            )
            self.writes += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def faults(fault_server: str, steps: MigrationRegistry) -> Iterator[Faults]:
    f = Faults(fault_server)
    yield f
    f.close()


async def run(url: str, **options: Any) -> Any:
    ws = Workspace(replace(load_config(url=url, models=[]), lock_ttl=60))
    async with ws:
        return await upgrade(ws, [Part.__model__], options=RunOptions(batch_size=250, **options))


#: (label, fail point data): what each command fails with.
ERRORS = [
    ("connection dropped", {"closeConnection": True}),
    ("ShutdownInProgress (91)", {"errorCode": 91}),
    ("PrimarySteppedDown (189)", {"errorCode": 189}),
    ("NotWritablePrimary (10107)", {"errorCode": 10107}),
    ("InterruptedAtShutdown (11600)", {"errorCode": 11600}),
]
WRITE_CONCERN = (
    "write-concern error (91)",
    {"writeConcernError": {"code": 91, "errmsg": "Replication is being shut down"}},
)
#: The commands a run sends: the survey's count (aggregate), the reads (find,
#: getMore), the bulk writes (update), the lock (findAndModify) and the
#: history (insert).
COMMANDS = ["aggregate", "find", "getMore", "update", "findAndModify", "insert"]
WRITES = {"update", "findAndModify", "insert"}

#: Each fault on each command, once and twice in a row (the driver's own
#: single retry would take one, were it on); once on the commands a run sends
#: once (the lock, the history, the survey, the first read) only with
#: ``--long``. The runner sends no ``count`` command: it counts with
#: ``aggregate``.
SCENARIOS = [
    (command, label, data, times)
    for command in COMMANDS
    for label, data in [*ERRORS, *([WRITE_CONCERN] if command in WRITES else [])]
    for times in (1, 2)
]


#: The scenarios run with an app writing without --long (command, label start).
WRITER_DEFAULT = {("update", "conne"), ("update", "write"), ("getMore", "conne")}


@pytest.mark.parametrize("writer", [False, True], ids=["alone", "app-writing"])
@pytest.mark.parametrize(
    ("command", "label", "data", "times"),
    SCENARIOS,
    ids=[f"{c}-{label.split()[0]}-{t}x" for c, label, _, t in SCENARIOS],
)
async def test_a_transient_fault_is_ridden_through(
    faults: Faults,
    caplog: pytest.LogCaptureFixture,
    command: str,
    label: str,
    data: dict[str, Any],
    times: int,
    writer: bool,
    long: bool,
) -> None:
    if times == 1 and command not in ("getMore", "update") and not long:
        pytest.skip("a single fault on the commands sent once per run: with --long")
    if writer and not long and (times == 1 or (command, label[:5]) not in WRITER_DEFAULT):
        pytest.skip(
            "with an app writing: a dropped connection and a write-concern error on the "
            "batches' writes, a dropped connection on their reads; all with --long"
        )
    faults.seed()
    app = Writer(faults) if writer else contextlib.nullcontext()
    with app:
        result = await _ride_through(faults, caplog, command, label, data, times)
    faults.check_record()
    if writer:
        stored = faults.db[Part.__model__].distinct("applied")
        assert set(stored) <= {None, 1}, stored
        return
    faults.check()
    (report,) = result.reports
    assert (report.migrated, report.skipped, report.failed) == (N, 0, 0)


async def _ride_through(
    faults: Faults,
    caplog: pytest.LogCaptureFixture,
    command: str,
    label: str,
    data: dict[str, Any],
    times: int,
) -> Any:
    caplog.set_level(logging.WARNING, logger="atomdb_migrate")
    started = time.monotonic()
    if command == "update":
        # The history's first write is an update too: aim at the bulk writes,
        # once a few batches are written.
        SLOW[0] = 0.001
        try:
            running = asyncio.ensure_future(run(faults.url, retry_for=30))
            while await asyncio.to_thread(faults.upgraded) < 250:
                assert not running.done(), "the run ended before the fault"
                await asyncio.sleep(0.01)
            faults.fail({"times": times}, failCommands=[command], **data)
            result = await running
        finally:
            SLOW[0] = 0.0
    else:
        # The lock (findAndModify), the history (insert), the survey
        # (aggregate) come first; then the stream's find and its getMores.
        faults.fail({"times": times}, failCommands=[command], **data)
        result = await run(faults.url, retry_for=30)
    seconds = time.monotonic() - started
    retried = sum("retrying in" in r.getMessage() for r in caplog.records)
    assert retried >= 1, f"the fault never reached the runner: {label} on {command}"
    record_fault(f"{label} on `{command}`, {times}x", "finished", retried, seconds)
    return result


def record_fault(scenario: str, outcome: str, retries: int, seconds: float) -> None:
    from .report import FIGURES

    FIGURES.setdefault("faults", {})["documents"] = N
    rows = FIGURES["faults"].setdefault("rows", [])
    rows.append((scenario, outcome, retries, round(seconds, 1)))


async def test_a_connection_held_past_the_socket_timeout_is_ridden_through(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    faults.seed()
    faults.fail({"times": 1}, failCommands=["update"], blockConnection=True, blockTimeMS=3000)
    caplog.set_level(logging.WARNING, logger="atomdb_migrate")
    started = time.monotonic()
    result = await run(faults.url + "&socketTimeoutMS=1000", retry_for=30)
    faults.check()
    assert result.reports[0].migrated == N
    retried = sum("retrying in" in r.getMessage() for r in caplog.records)
    assert retried >= 1
    record_fault(
        "connection held 3 s on `update`, socket timeout 1 s",
        "finished",
        retried,
        time.monotonic() - started,
    )


async def test_a_lasting_fault_ends_within_its_bound_and_a_rerun_finishes(
    faults: Faults,
) -> None:
    faults.seed()
    faults.fail("alwaysOn", failCommands=["update"], errorCode=189)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="past the retry window") as info:
        await run(faults.url, retry_for=3)
    seconds = time.monotonic() - started
    assert seconds < 3 + 10, seconds
    assert "run the command again to resume" in str(info.value)
    faults.off()
    await run(faults.url, retry_for=3)
    faults.check()
    faults.check_record()
    record_fault(
        "`PrimarySteppedDown` on every `update`, `--retry-for 3`",
        f"stopped cleanly after {seconds:.1f} s; a rerun finished",
        0,
        seconds,
    )


def test_the_command_exits_cleanly_past_the_window(faults: Faults, tmp_path: Path) -> None:
    """As a deployment sees it: exit 7, one message, no traceback; then a rerun."""
    (tmp_path / "faultmodels.py").write_text(MODELS)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_label.py").write_text(STEP)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    faults.seed(300)
    slow = STEP.replace(
        "def upgrade(doc):", "import time\n\ndef upgrade(doc):\n    time.sleep(0.005)"
    )
    (tmp_path / "migrations" / "0001_label.py").write_text(slow)
    proc = spawn(tmp_path, faults.url, "--retry-for", "2", "--batch-size", "50")
    deadline = time.monotonic() + 60
    while faults.upgraded() < 100:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    # Every write from now on fails, and so does the record of the run.
    faults.fail("alwaysOn", failCommands=["update"], closeConnection=True)
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 7, err
    assert seconds < 2 + 5 + 10, "--retry-for, the brief retry of the record, and a margin"
    assert "Traceback" not in err and "Traceback" not in out
    assert "past the retry window" in err
    assert "run the command again to resume" in err
    written = faults.upgraded()
    assert f"faults.Part: {written} upgraded" in out, out
    faults.off()
    (tmp_path / "migrations" / "0001_label.py").write_text(STEP)
    history = faults.db["atomdb_migrate_history"].find_one({})
    assert history is not None and history["outcome"] == "running", "its end was not recorded"
    assert history["arguments"]["retry_for"] == 2.0
    faults.off()
    done = cli(
        tmp_path, faults.url, "--retry-for", "2", "--write-concern", "1", "--wtimeout", "5000"
    )
    assert done.returncode == 0, done.stderr
    faults.check(300)
    first, last = faults.db["atomdb_migrate_history"].find({}, sort=[("started_at", 1)])
    assert first["outcome"] == "abandoned", "the next run marks it so"
    assert last["arguments"]["write_concern"] == {"w": 1, "wtimeout": 5000}
    # The stopped run's record has the counts its last write carried with the lease.
    assert 0 < first["models"][Part.__model__]["upgraded"] <= written, first
    faults.check_record(entries=[first, last])


def test_a_server_killed_and_restarted_within_the_window(
    steps: MigrationRegistry, tmp_path: Path
) -> None:
    """SIGKILL to the server mid-run, started again on the same storage 2 s later:
    the run carries on and finishes."""
    server = SecantusProcess()
    try:
        server.start()
        (tmp_path / "faultmodels.py").write_text(MODELS)
        (tmp_path / "migrations").mkdir()
        slow = STEP.replace(
            "def upgrade(doc):", "import time\n\ndef upgrade(doc):\n    time.sleep(0.001)"
        )
        (tmp_path / "migrations" / "0001_label.py").write_text(slow)
        (tmp_path / "pyproject.toml").write_text(PYPROJECT)
        url = f"{server.url}/killed?appname={APP}"
        with MongoClient(server.url) as client:
            client["killed"][Part.__model__].insert_many(
                [{"name": f"part {i}", "__version__": "1"} for i in range(N)]
            )
        proc = spawn(tmp_path, url, "--retry-for", "60", "--batch-size", "100")
        deadline = time.monotonic() + 60
        with MongoClient(server.url, serverSelectionTimeoutMS=2000) as client:
            while client["killed"][Part.__model__].count_documents({"__version__": "2"}) < 300:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        started = time.monotonic()
        server.kill()
        time.sleep(2)
        server.start()
        out, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - started
        assert proc.returncode == 0, err
        assert f"faults.Part: {N} upgraded to 2" in out, out
        assert "Traceback" not in err
        with MongoClient(server.url) as client:
            stored = list(
                client["killed"][Part.__model__].find({}, {"__version__": 1, "applied": 1})
            )
        assert len(stored) == N
        assert {(d["__version__"], d["applied"]) for d in stored} == {("2", 1)}
        with MongoClient(server.url) as client:
            check_record(client["killed"], Part.__model__, "2", replaced=True)
        counted()
        redone = re.search(r"(\d+) documents written again", out)
        record_fault(
            "server SIGKILLed mid-run, restarted on the same storage 2 s later",
            f"finished; {redone.group(1) if redone else 0} acknowledged writes the server "
            "lost were written again",
            err.count("retrying in"),
            seconds,
        )
    finally:
        server.close()


def test_the_pace_holds_to_the_rate_and_waits_out_the_lag() -> None:
    """The throttle, with a clock and a lag source of the test's own."""
    now = [0.0]
    lags = [12.0, 8.0, 0.5]
    said: list[str] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def lag() -> float | None:
        return lags.pop(0) if lags else 0.0

    pace = Pace(100.0, 5.0, lag, said.append, clock=lambda: now[0], sleep=sleep, every=1.0)

    async def go() -> None:
        await pace.before_write()
        for _ in range(10):
            await pace.after_write(50)

    asyncio.run(go())
    assert said[0] == "paused: a secondary is 12.0 s behind the primary (--max-lag 5 s)"
    assert said[1].startswith("paused: a secondary is 8.0 s") and said[-1] == ""
    assert pace.waited_lag == 2.0
    # 500 documents at 100 per second, counted over every second: 100 at once
    # after the pause, then 100 at the start of each of the next four seconds.
    assert now[0] == pytest.approx(2.0 + 4.0)
    standalone = Pace(None, 5.0, lambda: _none(), said.append)
    asyncio.run(standalone.before_write())  # not a replica set: nothing to wait for
    assert lag_of({"members": [{"stateStr": "PRIMARY"}]}) is None


async def _none() -> None:
    return None


def test_lag_is_read_from_the_replica_set_status() -> None:
    from datetime import datetime, timedelta

    t = datetime(2026, 11, 28, 12, 0, 0)
    status = {
        "members": [
            {"stateStr": "PRIMARY", "optimeDate": t},
            {"stateStr": "SECONDARY", "optimeDate": t - timedelta(seconds=3)},
            {"stateStr": "SECONDARY", "optimeDate": t - timedelta(seconds=11)},
            {"stateStr": "ARBITER"},
        ]
    }
    assert lag_of(status) == 11.0


# ----------------------------------------------------------------------
# The command as a subprocess
# ----------------------------------------------------------------------
MODELS = """
from atom.api import Int, Str
from atomdb_migrate import VersionedModel

class Part(VersionedModel):
    __model__ = "faults.Part"
    __version__ = 2
    name = Str()
    label = Str()
    applied = Int()
"""

STEP = '''"""Label each part."""

model = "faults.Part"
from_version = "1"
to_version = "2"


def upgrade(doc):
    doc["label"] = doc["name"].upper()
    doc["applied"] = doc.get("applied", 0) + 1
'''

PYPROJECT = """
[tool.atomdb-migrate]
models = ["faultmodels"]
migrations = "migrations"
timeout = 5
lock-ttl = 60
"""


def spawn(where: Path, url: str, *args: str) -> subprocess.Popen[str]:
    exe = str(Path(sys.executable).parent / "atomdb-migrate")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": f"{where}:{ROOT}"}
    return subprocess.Popen(
        [exe, "--url", url, "upgrade", "--no-progress", *args],
        cwd=where,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def cli(where: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = spawn(where, url, *args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Shelf(VersionedModel):
    __model__ = "faults.Shelf"
    __version__ = 2
    __write_back__ = True

    name = Str()
    label = Str()


@pytest.mark.parametrize("data", [{"closeConnection": True}, {"errorCode": 189}])
async def test_a_write_back_that_meets_a_fault_never_breaks_the_read(
    faults: Faults, caplog: pytest.LogCaptureFixture, data: dict[str, Any]
) -> None:
    from pymongo import AsyncMongoClient

    from atomdb_migrate.driver.mongo import ManagerState, wire_manager

    register_step(Shelf, 1, 2, lambda doc: doc.update(label=doc["name"].upper()))
    faults.db[Shelf.__model__].insert_one({"_id": 1, "name": "top", "__version__": "1"})
    client: AsyncMongoClient[Any] = AsyncMongoClient(faults.url)
    before = ManagerState()
    try:
        wire_manager(client[faults.name])
        faults.fail({"times": 1}, failCommands=["update"], **data)
        caplog.set_level(logging.WARNING, logger="atomdb_migrate")
        shelf = await Shelf.restore(await Shelf.objects.find_one({"_id": 1}))
        assert (shelf.name, shelf.label) == ("top", "TOP")
        assert "not written back" in caplog.text
        assert faults.db[Shelf.__model__].find_one({"_id": 1})["__version__"] == "1"
        faults.off()
        Shelf.objects.cache.clear()
        await Shelf.restore(await Shelf.objects.find_one({"_id": 1}))
        assert faults.db[Shelf.__model__].find_one({"_id": 1})["__version__"] == "2"
    finally:
        before.restore()
        await client.close()


def test_the_pace_options_reach_the_run(faults: Faults, tmp_path: Path) -> None:
    """On a server that is not a replica set, --max-lag warns once and does not hold
    the run up; a bad write concern is a usage error."""
    (tmp_path / "faultmodels.py").write_text(MODELS)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_label.py").write_text(STEP)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    faults.seed(300)
    done = cli(tmp_path, faults.url, "--max-rate", "100000", "--max-lag", "5")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("--max-lag: the server reports no replica-set status") == 1
    faults.check(300)
    last = faults.db["atomdb_migrate_history"].find_one({})
    assert (last["arguments"]["max_rate"], last["arguments"]["max_lag"]) == (100000.0, 5.0)
    for bad in ("most", "-1", "1.5"):
        refused = cli(tmp_path, faults.url, "--write-concern", bad)
        assert refused.returncode == 2 and "write concern must be" in refused.stderr, bad


# ----------------------------------------------------------------------
# The record of a run under faults
# ----------------------------------------------------------------------
class Bin(VersionedModel):
    __model__ = "faults.Part"  # the same collection: Faults seeds and counts it
    __version__ = 2

    name = Str()
    label = Str()
    applied = Int()


@pytest.fixture
def server_step(registry: MigrationRegistry) -> MigrationRegistry:
    """A declarative step: run on the server, as one ``update_many``."""
    register_step(Bin, 1, 2, operations=[ops.add_field("label", "new")])
    return registry


async def run_bin(url: str, **options: Any) -> Any:
    ws = Workspace(replace(load_config(url=url, models=[]), lock_ttl=60))
    async with ws:
        return await upgrade(ws, [Bin.__model__], options=RunOptions(batch_size=250, **options))


SERVER_FAULTS = [WRITE_CONCERN, ERRORS[0], ERRORS[2]]


@pytest.mark.parametrize("writer", [False, True], ids=["alone", "app-writing"])
@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize(
    ("label", "data"), SERVER_FAULTS, ids=[f[0].split()[0] for f in SERVER_FAULTS]
)
async def test_a_server_step_counts_what_a_retried_call_wrote(
    fault_server: str,
    server_step: MigrationRegistry,
    label: str,
    data: dict[str, Any],
    times: int,
    writer: bool,
) -> None:
    """A write-concern error on the step's ``update_many`` leaves every document at
    the new version: the step's count says so, not the retried call's 0."""
    faults = Faults(fault_server)
    try:
        faults.seed()
        # The first update is the history's (marking runs left running abandoned).
        faults.fail({"skip": 1, "times": times}, failCommands=["update"], **data)
        with Writer(faults) if writer else contextlib.nullcontext():
            result = await run_bin(faults.url, retry_for=30)
        (report,) = result.reports
        assert report.server_steps, "the step ran on the client"
        assert faults.upgraded() == N
        assert report.server_steps == {"1 -> 2": N}, report.server_steps
        assert (report.migrated, report.skipped, report.redone) == (N, 0, 0)
        faults.check_record(server_step="1 -> 2")
    finally:
        faults.close()


async def test_a_run_stopped_by_a_fault_counts_what_the_server_holds(faults: Faults) -> None:
    """A write whose answer is a write-concern error was applied: the run that stops
    on it (no retry window) counts it, and so does its record."""
    faults.seed()
    SLOW[0] = 0.001
    try:
        running = asyncio.ensure_future(run(faults.url, retry_for=0))
        while await asyncio.to_thread(faults.upgraded) < 250:
            assert not running.done(), "the run ended before the fault"
            await asyncio.sleep(0.01)
        faults.fail({"times": 1}, failCommands=["update"], **WRITE_CONCERN[1])
        with pytest.raises(ServerUnavailableError):
            await running
    finally:
        SLOW[0] = 0.0
    (entry,) = runs(faults.db)
    assert entry["outcome"] == "failed"
    counts = entry["models"][Part.__model__]
    assert counts["upgraded"] == faults.upgraded() and counts["unconfirmed"] == 0, counts
    faults.check_record()


async def test_a_lasting_fault_stops_the_run_with_every_write_counted(faults: Faults) -> None:
    """Every ``update`` answered with a write-concern error past the window: each
    batch the server applied is counted (the printed and recorded figure was the
    batches acknowledged before, one short)."""
    from atomdb_migrate.commands.command import RunResult

    faults.seed()
    SLOW[0] = 0.001
    result = RunResult("upgrade", False)
    try:
        running = asyncio.ensure_future(_run_into(faults.url, result, retry_for=1))
        while await asyncio.to_thread(faults.upgraded) < 250:
            assert not running.done(), "the run ended before the fault"
            await asyncio.sleep(0.01)
        faults.fail("alwaysOn", failCommands=["update"], **WRITE_CONCERN[1])
        with pytest.raises(ServerUnavailableError):
            await running
    finally:
        SLOW[0] = 0.0
        faults.off()
    (report,) = result.reports
    assert report.migrated == faults.upgraded(), (report.migrated, faults.upgraded())
    # The record of its end was written (a write-concern error is an answer).
    faults.check_record()


async def test_a_write_whose_answer_never_comes_is_unconfirmed(faults: Faults) -> None:
    """Every ``update`` held past the socket timeout: the run stops; what the server
    holds is between what it counted and that plus what it could not confirm."""
    from atomdb_migrate.commands.command import RunResult

    faults.seed()
    SLOW[0] = 0.001
    result = RunResult("upgrade", False)
    url = faults.url + "&socketTimeoutMS=300"
    try:
        running = asyncio.ensure_future(_run_into(url, result, retry_for=1))
        while await asyncio.to_thread(faults.upgraded) < 250:
            assert not running.done(), "the run ended before the fault"
            await asyncio.sleep(0.01)
        # Held longer than the whole window: every try (the first one cut by the
        # socket timeout, the others by what is left of --retry-for) goes unanswered.
        faults.fail("alwaysOn", failCommands=["update"], blockConnection=True, blockTimeMS=2500)
        with pytest.raises(ServerUnavailableError):
            await running
    finally:
        SLOW[0] = 0.0
        faults.off()
    await asyncio.sleep(3.0)  # the held writes land
    (report,) = result.reports
    written = faults.upgraded()
    assert report.migrated <= written <= report.migrated + report.unconfirmed, (
        report.migrated,
        report.unconfirmed,
        written,
    )


@pytest.mark.parametrize("data", [{"closeConnection": True}, {"errorCode": 189}])
async def test_a_run_stopped_by_the_lease_check_sent_no_write(
    faults: Faults, data: dict[str, Any]
) -> None:
    """The lock's find-and-modify (the lease checked before each write) failing past the
    window: the batch's write was never sent, so none of it is unconfirmed (it was
    counted as "sent, but its answer never came", and recorded so)."""
    from atomdb_migrate.commands.command import RunResult

    faults.seed()
    SLOW[0] = 0.001
    result = RunResult("upgrade", False)
    try:
        running = asyncio.ensure_future(_run_into(faults.url, result, retry_for=1))
        while await asyncio.to_thread(faults.upgraded) < 250:
            assert not running.done(), "the run ended before the fault"
            await asyncio.sleep(0.01)
        faults.fail("alwaysOn", failCommands=["findAndModify"], **data)
        with pytest.raises(ServerUnavailableError, match="checking the migration lock"):
            await running
    finally:
        SLOW[0] = 0.0
        faults.off()
    (report,) = result.reports
    assert (report.migrated, report.unconfirmed) == (faults.upgraded(), 0)
    (entry,) = runs(faults.db)
    assert entry["models"][Part.__model__]["unconfirmed"] == 0, entry["models"]
    faults.check_record()


async def _run_into(url: str, result: Any, **options: Any) -> Any:
    ws = Workspace(replace(load_config(url=url, models=[]), lock_ttl=60))
    async with ws:
        return await upgrade(
            ws, [Part.__model__], options=RunOptions(batch_size=250, **options), result=result
        )


def test_a_lock_cleared_by_force_stops_the_old_runner_before_its_next_write(
    faults: Faults, tmp_path: Path
) -> None:
    """``unlock --force`` on a live run, and a second runner: the first stops before
    its next write (not at its next renewal, 20 s later), and the two records add up
    to the documents."""
    (tmp_path / "faultmodels.py").write_text(MODELS)
    (tmp_path / "migrations").mkdir()
    slow = STEP.replace(
        "def upgrade(doc):", "import time\n\ndef upgrade(doc):\n    time.sleep(0.002)"
    )
    (tmp_path / "migrations" / "0001_label.py").write_text(slow)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    n = 3000
    faults.seed(n)
    first = spawn(tmp_path, faults.url, "--batch-size", "100")
    deadline = time.monotonic() + 60
    while faults.upgraded() < 300:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    cleared = cli_command(tmp_path, faults.url, "unlock", "--force", "--yes")
    assert cleared.returncode == 0, cleared.stderr
    second = spawn(tmp_path, faults.url, "--batch-size", "100")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 5, err
    assert "taken from this runner" in err, err
    _, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    faults.check(n)
    old, new = runs(faults.db)
    assert old["outcome"] == "failed" and new["outcome"] == "succeeded", (old, new)
    faults.check_record(entries=[old, new])
    model = Part.__model__
    assert old["models"][model]["upgraded"] + new["models"][model]["upgraded"] == n


def cli_command(where: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "atomdb-migrate")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": f"{where}:{ROOT}"}
    return subprocess.run(
        [exe, "--url", url, *args],
        cwd=where,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
