"""`history`: each model's chain of steps and the recorded runs; `failures`:
the documents the latest run with failures recorded (read only).

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.lock import is_alive
from ..steps.versions import Step
from .unlock import holder
from .workspace import Workspace

__all__ = ["Failures", "Step", "above_code", "failures", "history"]


async def history(
    ws: Workspace, limit: int = 20
) -> tuple[dict[str, list[Step]], list[dict[str, Any]]]:
    """Each model's chain of steps, and the latest recorded runs (if connected)."""
    classes = ws.models()
    chains = {c.__model__: ws.registry.graph(c).steps for c in classes}
    for name, graph in ws.registry.graphs.items():
        key = ws.registry.resolve(name)
        if key not in chains and len(graph):
            chains[key] = ws.registry.graph(key).steps
    runs: list[dict[str, Any]] = []
    if ws.config.url:
        await ws.connect()
        runs = await ws.history().runs(limit)
        lock = await holder(ws)
        for run in runs:
            alive = lock is not None and lock.get("owner") == run.get("owner") and is_alive(lock)
            if run.get("outcome") == "running" and not alive:
                run["outcome"] = "abandoned (its runner no longer holds the lock)"
    return chains, runs


def above_code(ws: Workspace, chains: dict[str, list[Step]]) -> dict[Step, str]:
    """The steps of `chains` above their model's ``__version__``, each with that
    version: a rollback build ships them (the newer release's step modules), and
    they run only to read newer documents back, or to downgrade them.

    A chain whose model is not in the code (a former name's) has none.

    """
    versions = {c.__model__: c.__parsed_version__ for c in ws.models()}
    above: dict[Step, str] = {}
    for name, steps in chains.items():
        version = versions.get(name)
        if version is None:
            continue
        for step in steps:
            if step.to_key > version:
                above[step] = str(version)
    return above


@dataclass
class Failures:
    """The documents a run recorded as failed."""

    #: The run: its ``_id``, command, ``started_at`` and outcome.
    run: dict[str, Any]
    #: Each failure: ``model``, ``_id``, ``step``, ``error``.
    failures: list[dict[str, Any]]
    #: The later run that retried them all and succeeded, if one did.
    retried_by: dict[str, Any] | None = None

    def ids(self) -> dict[str, list[Any]]:
        """The failed documents' ``_id``, by model."""
        out: dict[str, list[Any]] = {}
        for f in self.failures:
            if isinstance(f, dict) and isinstance(f.get("model"), str) and "_id" in f:
                out.setdefault(f["model"], []).append(f["_id"])
        return out


async def failures(ws: Workspace) -> Failures | None:
    """The failed documents of the latest run that recorded any (None if none did)."""
    await ws.connect()
    run = await ws.history().with_failures()
    if run is None:
        return None
    found = run.get("failures")
    result = Failures(
        run, [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
    )
    if run.get("command") == "upgrade":
        models = sorted({ws.registry.resolve(m) for m in result.ids()})
        result.retried_by = await ws.history().retried(run, models)
    return result
