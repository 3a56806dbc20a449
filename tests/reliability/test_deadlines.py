"""Deadlines under faults: the retry window, a call with no answer, a lease lost to an
outage, and write concerns the server can never satisfy.

On SecantusDB with fail points, as ``test_faults``. The URL here is a
default one (no shortened heartbeat): each try after a "not primary" error
waits for a server to be selected, which used to carry a 5 s window to
39.5 s; every try is now bounded by what is left of the window.

"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from atomdb_migrate import MigrationRegistry
from atomdb_migrate.driver.retry import GRACE, SHORTEST_TRY
from atomdb_migrate.exceptions import ServerUnavailableError, WriteConcernRefusedError

from ..servers import SecantusProcess
from . import test_faults
from .test_faults import APP, MODELS, PYPROJECT, STEP, Faults, N, Part, cli, run, spawn

#: The fault server, its database of parts, and the step, as in test_faults.
fault_server = test_faults.fault_server
faults = test_faults.faults
steps = test_faults.steps


def default_url(faults: Faults) -> str:
    """The run's URL as a deployment writes it: the driver's own heartbeat and retries."""
    return f"{faults.server}/{faults.name}?appname={APP}"


async def test_the_window_holds_on_a_default_url(faults: Faults) -> None:
    faults.seed()
    faults.fail("alwaysOn", failCommands=["update"], errorCode=189)
    with pytest.raises(ServerUnavailableError) as info:
        await run(default_url(faults), retry_for=2)
    assert info.value.seconds <= 2 + SHORTEST_TRY + GRACE, info.value.seconds
    faults.off()
    # The lock may be left behind (giving it up is tried briefly, and the driver
    # waits its 10 s heartbeat before it selects a "not primary" server again):
    # its lease runs out; here it is cleared instead of waiting.
    faults.db["atomdb_migrate_lock"].delete_many({})
    await run(default_url(faults), retry_for=2)
    faults.check()


async def test_a_call_with_no_answer_is_cut_and_sent_again(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    """One bulk write held 40 s by the server: past --call-timeout it is a transient
    fault, and the run finishes with every document transformed once."""
    faults.seed()
    faults.fail(
        {"skip": 1, "times": 1},
        failCommands=["update"],
        blockConnection=True,
        blockTimeMS=40000,
    )
    caplog.set_level(logging.WARNING, logger="atomdb_migrate")
    result = await run(default_url(faults), retry_for=5, call_timeout=1)
    assert sum(r.migrated for r in result.reports) == N
    cut = "writing to faults.Part: NetworkTimeout: no answer from the server in 1.0 s"
    assert cut in caplog.text
    faults.check()


async def test_an_unsatisfiable_write_concern_stops_at_once(faults: Faults) -> None:
    faults.seed()
    with pytest.raises(WriteConcernRefusedError, match="cannot be satisfied here") as info:
        await run(default_url(faults), write_concern="2", retry_for=60)
    assert info.value.code == 100
    assert faults.upgraded() == 0


def test_the_command_exits_3_for_an_unsatisfiable_write_concern(
    faults: Faults, tmp_path: Path
) -> None:
    (tmp_path / "faultmodels.py").write_text(MODELS)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_label.py").write_text(STEP)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    faults.seed(50)
    done = cli(tmp_path, default_url(faults), "--write-concern", "2")
    assert done.returncode == 3, done.stderr
    assert "retrying in" not in done.stderr and "Traceback" not in done.stderr
    assert "UnsatisfiableWriteConcern" in done.stderr or "cannot be satisfied" in done.stderr


async def test_a_write_concern_error_is_named_in_the_warning(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    faults.seed()
    faults.fail(
        {"skip": 1, "times": 1},
        failCommands=["update"],
        writeConcernError={"code": 91, "codeName": "ShutdownInProgress", "errmsg": "shutting"},
    )
    caplog.set_level(logging.WARNING, logger="atomdb_migrate")
    await run(faults.url)
    assert "write-concern error (91" in caplog.text, caplog.text
    assert "BulkWriteError (65)" not in caplog.text
    faults.check()


def test_a_lease_that_ran_out_during_an_outage_is_taken_back(
    steps: MigrationRegistry, tmp_path: Path
) -> None:
    """The server killed for longer than the lease (lock-ttl 1 s, down 4 s), well within
    --retry-for: nobody else took the lock, so the run takes its lease back and finishes."""
    server = SecantusProcess()
    try:
        server.start()
        (tmp_path / "faultmodels.py").write_text(MODELS)
        (tmp_path / "migrations").mkdir()
        slow = STEP.replace(
            "def upgrade(doc):", "import time\n\ndef upgrade(doc):\n    time.sleep(0.002)"
        )
        (tmp_path / "migrations" / "0001_label.py").write_text(slow)
        (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace("lock-ttl = 60", "lock-ttl = 1"))
        url = f"{server.url}/outage?appname={APP}"
        with MongoClient(server.url) as client:
            client["outage"][Part.__model__].insert_many(
                [{"name": f"part {i}", "__version__": "1"} for i in range(N)]
            )
        proc = spawn(tmp_path, url, "--retry-for", "30", "--batch-size", "50")
        deadline = time.monotonic() + 60
        with MongoClient(server.url, serverSelectionTimeoutMS=2000) as client:
            while client["outage"][Part.__model__].count_documents({"__version__": "2"}) < 200:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        server.kill()
        time.sleep(4)
        server.start()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        with MongoClient(server.url) as client:
            stored = list(
                client["outage"][Part.__model__].find({}, {"__version__": 1, "applied": 1})
            )
        assert {(d["__version__"], d["applied"]) for d in stored} == {("2", 1)}
        assert len(stored) == N
        taken = re.search(r"lease ran out .* taken back", err)
        print("lease taken back:", bool(taken), "(else renewed first by its thread)")
    finally:
        server.close()
