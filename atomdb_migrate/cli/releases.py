"""What ``downgrade --release -N`` and ``--to-release NAME`` print before the
runs: the releases taken back and each model's target, as text or as plain
data for ``--json`` (docs/cli.md names every field)."""

from __future__ import annotations

from typing import Any

import click

from ..commands.releases import ReleasePlan


def release_json(plan: ReleasePlan) -> dict[str, Any]:
    """The plan of a downgrade of releases, as ``--json`` gives it."""
    return {
        "asked": plan.asked,
        "undone": [
            {"id": r.id, "release": r.name, "started_at": r.started_at, "moved": dict(r.moved)}
            for r in plan.undone
        ],
        "plan": [{"model": name, "to": to} for name, to in plan.targets.items()],
    }


def say_release_plan(plan: ReleasePlan, dry_run: bool) -> None:
    """The releases taken back (newest first) and each model's target, in the
    order the downgrade takes them."""
    if not plan.targets:
        click.echo("no release to take back: nothing to do")
        return
    would = "would take" if dry_run else "taking"
    for release in plan.undone:
        moved = ", ".join(f"{m} from {v}" for m, v in release.moved.items())
        click.echo(f"{would} back release {release.name} (it moved {moved})")
    for name, to in plan.targets.items():
        click.echo(f"{would} {name} back to {to}")


def release_label(run: dict[str, Any]) -> str:
    """A recorded run's release, as `history` prints it after the duration:
    `` release r2`` for an upgrade; for a downgrade of releases, what was
    asked and the releases it took back, `` release -1 (took back r2)``,
    `` to release r1 (took back r3, r2)`` (`--to-release r1`), or, for a run
    that did not succeed, `` release -1 (to take back r2)``; empty for any
    other run."""
    arguments = run.get("arguments")
    release = arguments.get("release") if isinstance(arguments, dict) else None
    if not isinstance(release, str) or not isinstance(arguments, dict):
        return ""
    undone = arguments.get("undone")
    if run.get("command") != "downgrade" or not isinstance(undone, list):
        return f" release {release}"
    names = ", ".join(str(u.get("release")) for u in undone if isinstance(u, dict))
    asked = f"release {release}" if _counted(release) else f"to release {release}"
    took = {"succeeded": "took back", "running": "taking back"}.get(
        str(run.get("outcome")), "to take back"
    )
    return f" {asked} ({took} {names})"


def _counted(asked: str) -> bool:
    """Whether a downgrade of releases asked for the latest N (``-1``), not
    for every release after one named."""
    return asked.startswith("-") and asked[1:].isdigit()
