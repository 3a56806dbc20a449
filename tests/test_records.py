"""The record of runs: failed, killed and continued runs, the lock they leave, retries."""

from __future__ import annotations

import datetime
import signal
import socket
import time
from typing import Any

import pytest
from atom.api import Str
from bson import ObjectId

from atomdb_migrate import (
    MigrationRegistry,
    StepFailedError,
    VersionedModel,
    ops,
    register_step,
)
from atomdb_migrate.cli.exits import EXIT_LOCK, EXIT_STEP
from atomdb_migrate.commands.command import downgrade
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.engine.lock import LOCK_ID, is_alive

from .project import CUSTOMER, Project


def step_module(project: Project, body: str) -> None:
    (project.path / "migrations" / "0001_split_name.py").write_text(
        '"""Split."""\nmodel = "clidemo.Customer"\nfrom_version = "1"\nto_version = "2"\n' + body
    )


BOOM = (
    "def upgrade(doc):\n"
    "    if doc.get('name') == 'BOOM':\n"
    "        raise ValueError('cannot split BOOM')\n"
    "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n"
)


def slow_upgrade_under_way(project: Project, *args: str) -> Any:
    """`upgrade` of 2,000 slow documents as a subprocess, once 100 are written."""
    project.seed(2000)
    step_module(
        project,
        "import time\n\ndef upgrade(doc):\n    time.sleep(0.002)\n"
        "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n",
    )
    proc = project.spawn("upgrade", "--batch-size", "100", *args)
    deadline = time.monotonic() + 60
    while project.db[CUSTOMER].count_documents({"__version__": "3"}) < 100:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def records(project: Project) -> list[dict[str, Any]]:
    return list(project.db["atomdb_migrate_history"].find({}, sort=[("started_at", 1)]))


def test_a_failed_run_records_and_prints_what_it_wrote(project: Project) -> None:
    project.seed(30)
    ids = [d["_id"] for d in project.db[CUSTOMER].find({}, sort=[("_id", 1)])]
    project.db[CUSTOMER].update_one({"_id": ids[13]}, {"$set": {"name": "BOOM"}})
    step_module(project, BOOM)
    result = project.invoke("upgrade", "--batch-size", "5")
    assert result.exit_code == EXIT_STEP
    written = project.db[CUSTOMER].count_documents({"__version__": "3"})
    assert 10 <= written == 13, "what was transformed before the failure is written"
    assert f"clidemo.Customer: {written} upgraded to 3 before the run stopped" in result.output
    (run,) = records(project)
    assert run["outcome"] == "failed" and "cannot split BOOM" in run["error"]
    assert run["models"]["clidemo.Customer"]["upgraded"] == written


class Shelf(VersionedModel):
    __model__ = "records.Shelf"
    __version__ = 3

    label = Str()


async def test_a_downgrade_failing_after_its_server_step_records_the_step(
    secantus_url: str, registry: MigrationRegistry
) -> None:
    def never_back(doc: dict[str, Any]) -> None:
        if doc.get("name") == "BOOM":
            raise ValueError("cannot go back")

    register_step(Shelf, 1, 2, lambda d: None, never_back)
    register_step(Shelf, 2, 3, operations=[ops.rename_field("name", "label")])
    name = f"records_{ObjectId()}"
    ws = Workspace(load_config(url=f"{secantus_url}/{name}", models=[]))
    async with ws:
        docs = [{"label": f"s{i}", "__version__": "3"} for i in range(20)]
        docs[-1]["label"] = "BOOM"
        await ws.database[Shelf.__model__].insert_many(docs)
        with pytest.raises(StepFailedError, match="cannot go back"):
            await downgrade(ws, Shelf.__model__, "1")
        (run,) = await ws.database["atomdb_migrate_history"].find({}).to_list(None)
        counts = run["models"][Shelf.__model__]
        assert run["outcome"] == "failed"
        assert counts["server_steps"] == {"2 -> 3": 20}, "the server step, by its label"
        await ws.database.client.drop_database(name)


def test_a_killed_run_is_abandoned_and_its_lock_cleared(project: Project) -> None:
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("lock-ttl = 2", "lock-ttl = 60"))
    proc = slow_upgrade_under_way(project)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = records(project)
    assert run["outcome"] == "running", "a killed run cannot say so itself"

    refused = project.invoke("upgrade")
    assert refused.exit_code == EXIT_LOCK and "atomdb-migrate unlock" in refused.output
    assert "abandoned (its runner no longer holds the lock)" in project.invoke("history").output
    kept = project.invoke("unlock", input="n\n")
    assert kept.exit_code == EXIT_LOCK and "left as it is" in kept.output
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 1
    cleared = project.invoke("unlock", "--yes")
    assert cleared.exit_code == 0, cleared.output
    assert "held by upgrade on host" in cleared.output and "cleared" in cleared.output
    assert records(project)[0]["outcome"] == "abandoned"
    done = project.invoke("upgrade")
    assert done.exit_code == 0 and project.versions() == {"3": 2000}


def test_unlock_refuses_a_holder_that_still_renews(project: Project) -> None:
    now = datetime.datetime.now(datetime.UTC)
    project.db["atomdb_migrate_lock"].insert_one(
        {
            "_id": LOCK_ID,
            "owner": "other",
            "host": f"not-{socket.gethostname()}",
            "pid": 42,
            "command": "upgrade",
            "acquired_at": now - datetime.timedelta(minutes=5),
            "renewed_at": now,
            "expires_at": now + datetime.timedelta(seconds=30),
            "ttl": 30,
        }
    )
    refused = project.invoke("unlock", "--yes")
    assert refused.exit_code == EXIT_LOCK and "that runner is alive" in refused.output
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 1
    forced = project.invoke("unlock", "--yes", "--force")
    assert forced.exit_code == 0 and project.db["atomdb_migrate_lock"].count_documents({}) == 0
    assert project.invoke("unlock").output == "the migration lock is free\n"


def test_a_new_run_marks_a_dead_runs_record_abandoned(project: Project) -> None:
    project.db["atomdb_migrate_history"].insert_one(
        {
            "command": "upgrade",
            "owner": "dead",
            "outcome": "running",
            "started_at": datetime.datetime(2026, 1, 1),
        }
    )
    project.seed(3)
    assert project.invoke("upgrade").exit_code == 0
    dead, mine = records(project)
    assert dead["outcome"] == "abandoned" and mine["outcome"] == "succeeded"


def test_failures_are_shown_and_only_they_are_retried(project: Project) -> None:
    project.seed(10)
    ids = [d["_id"] for d in project.db[CUSTOMER].find({}, sort=[("_id", 1)])]
    failed = ids[2:5]
    project.db[CUSTOMER].update_many({"_id": {"$in": failed}}, {"$set": {"name": "BOOM"}})
    step_module(project, BOOM)
    first = project.invoke("upgrade", "--continue-on-error")
    assert first.exit_code == EXIT_STEP
    assert "history --failures" in first.output and "--retry-failed" in first.output
    shown = project.invoke("history", "--failures")
    assert shown.exit_code == 0
    for _id in failed:
        assert f"clidemo.Customer _id={_id!r} step " in shown.output
    assert shown.output.count("raised ValueError: cannot split BOOM") == 3
    # Others arrive meanwhile: a retry takes the failed documents only.
    project.seed(4)
    step_module(project, BOOM.replace("raise ValueError('cannot split BOOM')", "pass"))
    retry = project.invoke("upgrade", "--retry-failed")
    assert retry.exit_code == 0, retry.output
    assert "clidemo.Customer: 3 upgraded to 3" in retry.output
    assert project.versions() == {"3": 10, "1": 4}
    assert project.invoke("upgrade").exit_code == 0 and project.versions() == {"3": 14}


def test_retry_failed_with_nothing_recorded(project: Project) -> None:
    result = project.invoke("upgrade", "--retry-failed")
    assert result.exit_code == 3 and "no recorded run has failed documents" in result.output


def test_retry_failed_takes_the_model_by_any_name(project: Project) -> None:
    """A model named by its class name alone is the model the failures were recorded
    under; a model with no recorded failure is refused, not taken as 'every model'."""
    project.seed(6)
    ids = [d["_id"] for d in project.db[CUSTOMER].find({}, sort=[("_id", 1)])]
    project.db[CUSTOMER].update_one({"_id": ids[1]}, {"$set": {"name": "BOOM"}})
    step_module(project, BOOM)
    assert project.invoke("upgrade", "--continue-on-error").exit_code == EXIT_STEP
    none = project.invoke("upgrade", "clidemo.Order", "--retry-failed")
    assert none.exit_code == 3, none.output
    assert "no recorded failure of clidemo.Order" in none.output
    assert project.versions() == {"3": 5, "1": 1}, "nothing was retried"
    step_module(project, BOOM.replace("raise ValueError('cannot split BOOM')", "pass"))
    retry = project.invoke("upgrade", "Customer", "--retry-failed")
    assert retry.exit_code == 0, retry.output
    assert "clidemo.Customer: 1 upgraded to 3" in retry.output
    assert project.versions() == {"3": 6}
    shown = project.invoke("history", "--failures")
    assert "retried by the run started" in shown.output, shown.output
    assert "retry them with" not in shown.output


@pytest.mark.parametrize("second", [None, 0.0, 0.05, 0.2], ids=["once", "at-once", "50ms", "200ms"])
def test_ctrl_c_once_or_twice_records_what_was_written(
    project: Project, second: float | None
) -> None:
    """Ctrl-C stops the run with exit 130; the record says "interrupted" with the
    count written, even when a second Ctrl-C comes while it is being written."""
    proc = slow_upgrade_under_way(project, "--no-progress")
    proc.send_signal(signal.SIGINT)
    if second is not None:
        time.sleep(second)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    (run,) = records(project)
    written = project.db[CUSTOMER].count_documents({"__version__": "3"})
    assert run["outcome"] == "interrupted", run
    assert run["models"][CUSTOMER]["upgraded"] == written >= 100
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 0, "the lock is released"


@pytest.mark.parametrize("pid", [2**62, -(2**70), "123", 0.5])
def test_a_holder_whose_pid_cannot_be_checked_is_judged_by_its_lease(pid: Any) -> None:
    now = datetime.datetime.now(datetime.UTC)
    holder = {
        "host": socket.gethostname(),
        "pid": pid,
        "expires_at": now + datetime.timedelta(seconds=30),
        "renewed_at": now,
        "ttl": 30,
    }
    assert is_alive(holder) is True
    assert is_alive({**holder, "expires_at": now - datetime.timedelta(seconds=1)}) is False
