"""What the command line says of a run of workers: in `status`, and in `history`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .at_once import shown

__all__ = ["describe_owner", "describe_workers", "workers_json"]


def describe_owner(owner: str, worker: Any) -> str:
    """One worker of a run of workers: where it ran, its ranges, counts and rate."""
    if not isinstance(worker, dict):
        return f"worker {shown(owner[:8])}: ?"
    ranges = worker.get("ranges")
    counts = worker.get("counts")
    ranges = ranges if isinstance(ranges, dict) else {}
    counts = counts if isinstance(counts, dict) else {}
    held = shown(", ".join(f"{n} {state}" for state, n in sorted(ranges.items())))
    return (
        f"worker {shown(owner[:8])} on {shown(worker.get('host', '?'))} "
        f"(pid {shown(worker.get('pid', '?'))}): "
        f"ranges {held or 'none'}; {counts.get('migrated', 0)} upgraded, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed; "
        f"{shown(worker.get('rate', 0))} documents/s"
    )


def describe_workers(found: dict[str, Any] | None) -> list[str]:
    """What `status` says of a run of workers in progress (`command.run_status`): none,
    or its ranges done, claimed and pending, and a line per worker."""
    if found is None:
        return []
    run, ranges = found["run"], found["ranges"]
    alive = "its lease alive" if found["alive"] else "its starter's lease ran out"
    expired = f" ({ranges['expired']} with their lease run out)" if ranges["expired"] else ""
    counts = found["counts"]
    lines = [
        f"run of workers in progress, started on {shown(run.get('host', '?'))} "
        f"(pid {shown(run.get('pid', '?'))}) with {shown(run.get('workers', '?'))} workers, "
        f"{alive}: "
        f"ranges {ranges['done']} done, {ranges['claimed']} claimed{expired}, "
        f"{ranges['pending']} pending; {counts.get('migrated', 0)} of {found['planned']} "
        "documents upgraded"
    ]
    return lines + [f"  {describe_owner(k, w)}" for k, w in found["owners"].items()]


def workers_json(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run of workers in progress as `status --json` gives it (its dates in ISO 8601;
    ``checksums`` left out: `history --json` has them); None: none."""
    if found is None:
        return None
    run = {k: v for k, v in found["run"].items() if k != "checksums"}
    plain: dict[str, Any] = _plain({**found, "run": run})
    return plain


def _plain(value: Any) -> Any:
    """`value` with its dates as ISO 8601 strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
