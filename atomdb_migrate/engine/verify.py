"""The verify phase: what a server replaced during the run lost, taken again.

A server that restarted may lose writes it acknowledged (without a journaled
or majority write concern), and an election may roll back the old primary's.
The runner compares the server process that answers at the start of a
model's run and at its end (`server_changed`); when it changed and the run
retried calls meanwhile, the documents still behind are taken again
(`sweep`). Only then does the contract run, if every document passed.

"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..core.storage import VERSION_KEY
from .leg import Leg
from .report import ModelReport

log = logging.getLogger("atomdb_migrate")

#: A read of the client stream (`Stream.pump`, through the runner).
Pump = Callable[[Leg, dict[str, Any], int], Awaitable[None]]


async def server_identity(database: Any) -> Any:
    """Which server process answers: the ``processId`` of ``hello``'s
    ``topologyVersion`` (None where the server does not say)."""
    try:
        hello = await database.command("hello")
    except Exception:  # a server without hello, or none at all: unknown
        return None
    topology = hello.get("topologyVersion") if isinstance(hello, Mapping) else None
    return topology.get("processId") if isinstance(topology, Mapping) else None


async def server_changed(database: Any, before: Any) -> bool:
    """Whether another server process answers than `before` (at the start of the
    model's run: a restart, or an election): only then may acknowledged writes be
    lost. True when either answer is unknown."""
    now = await server_identity(database)
    return before is None or now is None or now != before


async def sweep(leg: Leg, pump: Pump) -> None:
    """After the server was replaced during the run, take again what is still behind.

    A server that restarted may have lost writes it acknowledged; an
    election may roll back the old primary's. Their documents are at
    their old version again: they go through the steps again (from the
    stored document, so nothing is transformed twice), counted as
    `ModelReport.redone`. The documents the run skipped (changed
    meanwhile) are read again first: those written now move from
    skipped to upgraded. The documents the run left behind on purpose
    (failed, newer) are taken in a report of their own that is dropped:
    they were counted once.

    """
    report = leg.report
    skipped = list(leg.skipped.values())
    off_target = {VERSION_KEY: {"$ne": str(leg.target)}}
    if skipped:
        again = leg.toward(leg.target, ModelReport(report.model, report.target, report.direction))
        await pump(again, {"_id": {"$in": skipped}, **off_target}, 0)
        report.migrated += again.report.migrated
        report.skipped -= again.report.migrated
    counts = leg.toward(leg.target, ModelReport(report.model, report.target, report.direction))
    query: dict[str, Any] = {**leg.scope(), **off_target}
    if skipped:
        query["_id"] = {"$nin": skipped, **leg.scope().get("_id", {})}
    await pump(counts, query, 0)
    report.redone += counts.report.migrated
    if counts.report.migrated:
        log.warning(
            "%s: %d documents written again: the server lost writes it had acknowledged",
            report.model,
            counts.report.migrated,
        )
