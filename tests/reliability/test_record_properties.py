"""Properties of a run's record over generated fault schedules, and of the lease
check before every write over generated takeover points.

``RECORD_EXAMPLES`` sets how many examples each property runs (default 4: a
few seconds each, on a SecantusDB server with fail points).

"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from atomdb_migrate import MigrationRegistry, register_step
from atomdb_migrate.commands.command import RunResult, upgrade
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.engine.lock import LOCK_ID
from atomdb_migrate.engine.runner import RunOptions
from atomdb_migrate.exceptions import LockLostError, ServerUnavailableError

from .test_faults import ERRORS, WRITE_CONCERN, Faults, Part, Writer, fault_server  # noqa: F401

EXAMPLES = int(os.environ.get("RECORD_EXAMPLES", "4"))

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FAULTS = [*ERRORS, WRITE_CONCERN]


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    """A fault: its kind, the command, how many to skip and to fail, an app writing."""
    label, data = draw(st.sampled_from(FAULTS))
    return {
        "data": data,
        "label": label,
        "command": draw(st.sampled_from(["update", "getMore", "find"])),
        "skip": draw(st.integers(0, 3)),
        "times": draw(st.integers(1, 3)),
        "writer": draw(st.booleans()),
        "batch": draw(st.sampled_from([100, 250, 400])),
    }


@PROPERTY
@given(schedule=schedules())
def test_the_record_equals_the_server_under_any_fault(
    fault_server: str,  # noqa: F811
    schedule: dict[str, Any],
) -> None:
    from .test_faults import label

    faults = Faults(fault_server)
    with MigrationRegistry.instance().isolated():
        register_step(Part, 1, 2, label)
        _fault_run(faults, schedule)


def _fault_run(faults: Faults, schedule: dict[str, Any]) -> None:
    try:
        faults.seed(600)
        faults.fail(
            {"skip": schedule["skip"], "times": schedule["times"]},
            failCommands=[schedule["command"]],
            **schedule["data"],
        )
        app = Writer(faults) if schedule["writer"] else contextlib.nullcontext()
        with app:
            asyncio.run(_run(faults.url, schedule["batch"]))
        faults.check_record()
        assert set(faults.db[Part.__model__].distinct("applied")) <= {None, 1}
    finally:
        faults.close()


async def _run(url: str, batch: int, result: RunResult | None = None, **extra: Any) -> Any:
    ws = Workspace(replace(load_config(url=url, models=[]), lock_ttl=60))
    async with ws:
        return await upgrade(
            ws,
            [Part.__model__],
            options=RunOptions(batch_size=batch, **{"retry_for": 30, **extra}),
            result=result,
        )


@PROPERTY
@given(
    batch=st.sampled_from([50, 100, 150]),
    at=st.integers(0, 599),
)
def test_a_lock_taken_over_stops_the_run_before_its_next_write(
    fault_server: str,  # noqa: F811
    batch: int,
    at: int,
) -> None:
    """Another runner takes the lock while the step runs on document `at`: the batch
    holding it is not written, nor any after it; what was written is counted."""
    faults = Faults(fault_server)
    seen = [0]
    takeover = MongoClient(fault_server)[faults.name]["atomdb_migrate_lock"]

    def step(doc: dict[str, Any]) -> None:
        if seen[0] == at:
            takeover.delete_one({"_id": LOCK_ID})
            takeover.insert_one({"_id": LOCK_ID, "owner": "another runner"})
        seen[0] += 1
        doc["applied"] = doc.get("applied", 0) + 1

    with MigrationRegistry.instance().isolated():
        register_step(Part, 1, 2, step)
        _taken_over(faults, takeover, batch, at)


def _taken_over(faults: Faults, takeover: Any, batch: int, at: int) -> None:
    try:
        faults.seed(600)
        result = RunResult("upgrade", False)
        with pytest.raises(LockLostError, match="taken from this runner"):
            asyncio.run(_run(faults.url, batch, result))
        # The batch being transformed when the lock was taken, and every later one,
        # are not written; the one before it may not be either (its write waits
        # for the event loop, and checks the lease then).
        written = faults.upgraded()
        last = (at // batch) * batch
        assert written in (last, max(last - batch, 0)), (written, last)
        (report,) = result.reports
        assert report.migrated == written
        (entry,) = list(faults.db["atomdb_migrate_history"].find({}))
        assert entry["models"][Part.__model__]["upgraded"] == written
    finally:
        takeover.database.client.close()
        faults.close()


@st.composite
def lasting(draw: st.DrawFn) -> dict[str, Any]:
    """A fault that outlasts the window: its kind, the command, after how many of them."""
    label, data = draw(st.sampled_from(FAULTS[:3]))
    command = draw(st.sampled_from(["update", "findAndModify", "getMore"]))
    return {
        "data": data,
        "label": label,
        "command": command,
        "skip": draw(st.integers(2, 6)),
        "retry_for": draw(st.sampled_from([0.0, 0.5])),
    }


@PROPERTY
@given(schedule=lasting())
def test_a_run_stopped_by_a_lasting_fault_names_it_and_counts_only_sent_writes(
    fault_server: str,  # noqa: F811
    schedule: dict[str, Any],
) -> None:
    """Past the window: the message names the fault (not the driver's timeout of a try
    the window cut short); documents are unconfirmed only if the write that stopped the
    run was sent (not when the lease check before it failed); after a rerun, the
    records add up to what the server holds."""
    from .test_faults import label

    faults = Faults(fault_server)
    with MigrationRegistry.instance().isolated():
        register_step(Part, 1, 2, label)
        try:
            faults.seed(600)
            faults.fail(
                {"skip": schedule["skip"], "times": 10**6},
                failCommands=[schedule["command"]],
                **schedule["data"],
            )
            result = RunResult("upgrade", False)
            try:
                asyncio.run(_run(faults.url, 100, result, retry_for=schedule["retry_for"]))
            except ServerUnavailableError as stopped:
                message = str(stopped)
                assert "exceed time limit" not in message, message
                unconfirmed = sum(r.unconfirmed for r in result.reports)
                if not stopped.operation.startswith("writing to"):
                    assert unconfirmed == 0, (stopped.operation, unconfirmed)
            else:
                # The read opened again after the last _id it handed out sent no
                # more getMore: the fault never came back.
                assert schedule["command"] == "getMore", schedule
            faults.off()
            asyncio.run(_run(faults.url, 100))
            faults.check_record()
        finally:
            faults.close()
