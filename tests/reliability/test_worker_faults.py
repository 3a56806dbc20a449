"""The fail-point suite with workers: a run split into ranges rides through transient
faults on each command it sends, the ranges' own among them (claims are
``findAndModify``, renewals and ends ``update``, the plan ``aggregate`` and
``insert``), and every document is transformed exactly once.

The faults, the database and the checks are those of `test_faults`.

"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from .test_faults import ERRORS, SLOW, Faults, fault_server, faults, run, steps  # noqa: F401

#: The run's commands, the ranges' among them.
COMMANDS = ["aggregate", "find", "getMore", "update", "findAndModify", "insert"]

#: A dropped connection and an election's error code, each twice in a row.
CHOSEN = [e for e in ERRORS if e[0].startswith(("connection", "PrimarySteppedDown"))]


@pytest.mark.parametrize(
    ("command", "label", "data"),
    [(c, label, data) for c in COMMANDS for label, data in CHOSEN],
    ids=[f"{c}-{label.split()[0]}" for c in COMMANDS for label, _ in CHOSEN],
)
async def test_workers_ride_through_a_transient_fault(
    faults: Faults,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    command: str,
    label: str,
    data: dict[str, Any],
) -> None:
    caplog.set_level(logging.WARNING, logger="atomdb_migrate")
    faults.seed()
    SLOW[0] = 0.001
    try:
        running = asyncio.ensure_future(run(faults.url, retry_for=30, workers=3))
        if command in ("update", "findAndModify"):
            # Once the ranges are planned and some written: the claims, the
            # renewals and the batches' writes.
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(faults.upgraded) < 200:
                assert not running.done(), "the run ended before the fault"
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
        faults.fail({"times": 2}, failCommands=[command], **data)
        result = await running
    finally:
        SLOW[0] = 0.0
    retried = sum("retrying in" in r.getMessage() for r in caplog.records)
    assert retried >= 1, f"the fault never reached the run: {label} on {command}"
    faults.check()
    faults.check_record()
    (report,) = result.reports
    assert (report.migrated, report.skipped, report.failed) == (1000, 0, 0)
