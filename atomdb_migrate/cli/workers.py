"""What the command line says of a run of workers: in `status`, and in `history`."""

from __future__ import annotations

from typing import Any

__all__ = ["describe_owner", "describe_workers"]


def describe_owner(owner: str, worker: Any) -> str:
    """One worker of a run of workers: where it ran, its ranges, counts and rate."""
    if not isinstance(worker, dict):
        return f"worker {owner[:8]}: ?"
    ranges = worker.get("ranges")
    counts = worker.get("counts")
    ranges = ranges if isinstance(ranges, dict) else {}
    counts = counts if isinstance(counts, dict) else {}
    held = ", ".join(f"{n} {state}" for state, n in sorted(ranges.items()))
    return (
        f"worker {owner[:8]} on {worker.get('host', '?')} (pid {worker.get('pid', '?')}): "
        f"ranges {held or 'none'}; {counts.get('migrated', 0)} upgraded, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed; "
        f"{worker.get('rate', 0)} documents/s"
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
        f"run of workers in progress, started on {run.get('host', '?')} "
        f"(pid {run.get('pid', '?')}) with {run.get('workers', '?')} workers, {alive}: "
        f"ranges {ranges['done']} done, {ranges['claimed']} claimed{expired}, "
        f"{ranges['pending']} pending; {counts.get('migrated', 0)} of {found['planned']} "
        "documents upgraded"
    ]
    return lines + [f"  {describe_owner(k, w)}" for k, w in found["owners"].items()]
