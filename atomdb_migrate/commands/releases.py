"""Releases: taking every model back to where an earlier release left it.

A release is one recorded `upgrade` run that succeeded and moved documents
(``arguments.release`` names it: ``upgrade --release NAME``, by default the
models' versions). Taking releases back is one `downgrade` run, planned
from the history before anything is written:

- `plan_releases` finds the releases to take back (the latest ``-N``, or
  every one after the release named) and, per model they moved, the
  version its documents were at before the oldest of them (the lowest
  stored version that release found them at);
- `downgrade_releases` refuses the plan if any model's way back lacks a
  downgrade function, then runs each model's downgrade, newest release
  first and in each the reverse of the order it upgraded them in (see
  docs/deploying.md, Rolling back), under one lock, recorded as one run.

A release already taken back by an earlier `downgrade` of releases is not
one any more: ``--release -1`` twice takes back the last two.

"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from ..engine.history import History
from ..engine.leg import target_version
from ..engine.options import DOWNGRADE, RunOptions
from ..engine.report import Progress
from ..exceptions import ConfigError, InvalidVersionError, ReleaseNotFoundError
from ..steps.versions import parse_version
from .upgrade import RunResult, _run
from .workspace import Workspace

__all__ = ["Release", "ReleasePlan", "downgrade_releases", "plan_releases", "releases"]


@dataclass(frozen=True)
class Release:
    """A recorded upgrade run that moved documents."""

    #: The run's ``_id`` in the history.
    id: Any
    #: Its name (``arguments.release``; a run recorded before releases were
    #: named: the models' targets, as an upgrade names one today).
    name: str
    #: When it started.
    started_at: Any
    #: Each model it moved, in the order it upgraded them, and the version
    #: its documents were at before (the lowest it found them at).
    moved: dict[str, str]


@dataclass
class ReleasePlan:
    """What a downgrade of releases takes back, and where to."""

    #: What was asked: ``"-1"``, or the release's name.
    asked: str
    #: The releases taken back, newest first.
    undone: list[Release] = field(default_factory=list)
    #: Each model's target, in the order the downgrade takes them.
    targets: dict[str, str] = field(default_factory=dict)
    #: The command that asked for it, as typed (``downgrade --release -1``,
    #: ``downgrade --to-release r2``): what to run again from newer code.
    command: str | None = None

    def recorded(self) -> dict[str, Any]:
        """What the history records of it among the run's arguments."""
        return {
            "release": self.asked,
            "undone": [{"id": r.id, "release": r.name} for r in self.undone],
        }


def _lowest(versions: list[str]) -> str | None:
    """The lowest of recorded versions (None when there are none)."""
    return min(versions, key=parse_version) if versions else None


def _from_version(counts: dict[str, Any]) -> str | None:
    """The version a recorded model's documents were at before the run (the
    lowest, when at several), or None if it moved none."""
    moved = counts.get("upgraded") or sum((counts.get("server_steps") or {}).values())
    if not moved:
        return None
    found = counts.get("by_version")
    if isinstance(found, dict):
        return _lowest([v for v, n in found.items() if n])
    # Recorded before the versions found were: the steps planned from them.
    steps = counts.get("steps") or {}
    return _lowest([label.partition(" -> ")[0] for label, n in steps.items() if n])


def _release(run: dict[str, Any]) -> Release | None:
    """The release a recorded upgrade is, or None when it moved nothing."""
    arguments = run.get("arguments") or {}
    models = run.get("models") or {}
    order = list(arguments.get("models") or models)
    moved = {}
    for name in order:
        counts = models.get(name)
        found = _from_version(counts) if isinstance(counts, dict) else None
        if found is not None:
            moved[name] = found
    if not moved:
        return None
    name = arguments.get("release")
    if not isinstance(name, str):
        name = ",".join(f"{m}={c.get('target')}" for m, c in models.items())
    return Release(run.get("_id"), name, run.get("started_at"), moved)


async def releases(ws: Workspace) -> list[Release]:
    """The releases not taken back yet, newest first.

    A release is taken back by a downgrade of releases that names it, or
    by later downgrades (``downgrade MODEL --to V``, one model at a time)
    that took each model it moved to the version it found it at, or below.

    """
    await ws.connect()
    history = History(ws.database[ws.config.history_collection])
    # A model recorded under a former name (``ops.rename_model``) is the model now.
    ws.load()
    resolve = ws.registry.resolve
    undone: set[Any] = set()
    lowest: dict[str, str] = {}  # each model's lowest target of the downgrades seen
    found = []
    for run in await history.finished():  # newest first
        if run.get("command") == "downgrade":
            for r in (run.get("arguments") or {}).get("undone") or []:
                undone.add(r.get("id"))
            _note_targets(run, lowest, resolve)
        elif run.get("_id") not in undone:
            release = _release(run)
            if release is None:
                continue
            release = replace(release, moved={resolve(m): v for m, v in release.moved.items()})
            if not _taken_back(release, lowest):
                found.append(release)
    return found


def _note_targets(run: dict[str, Any], lowest: dict[str, str], resolve: Any) -> None:
    """Keep, per model, the lowest version a recorded downgrade took it to."""
    for name, counts in (run.get("models") or {}).items():
        target = counts.get("target") if isinstance(counts, dict) else None
        if not isinstance(target, str):
            continue
        try:
            parsed = parse_version(target)
        except InvalidVersionError:  # a hand-edited record: not a target
            continue
        model = resolve(name)
        if model not in lowest or parsed < parse_version(lowest[model]):
            lowest[model] = target


def _taken_back(release: Release, lowest: dict[str, str]) -> bool:
    """Whether later downgrades took every model `release` moved back to where it
    found it, or below."""
    return all(
        m in lowest and parse_version(lowest[m]) <= parse_version(v)
        for m, v in release.moved.items()
    )


async def plan_releases(
    ws: Workspace, *, back: int | None = None, to_release: str | None = None
) -> ReleasePlan:
    """Which releases to take back and each model's target: the latest
    `back` ones (``-1``: the last), or every one after `to_release`.

    Raises
    ------
    ReleaseNotFoundError
        When there are fewer releases than asked, or none of that name.
    ChainError
        When a model's way back to its target lacks a downgrade function
        (or the target is past the code's version): nothing was written.

    """
    if (back is None) == (to_release is None):
        raise ConfigError("give --release -N or --to-release NAME (one of them)")
    found = await releases(ws)
    known = [r.name for r in found]
    if back is not None:
        if back >= 0:
            raise ConfigError(f"--release takes a negative number (-1: the last), not {back}")
        if len(found) < -back:
            raise ReleaseNotFoundError(
                str(back), known, f"--release {back}: the history holds {len(found)} to take back"
            )
        plan = ReleasePlan(str(back), found[:-back], command=f"downgrade --release {back}")
    else:
        index = next((i for i, r in enumerate(found) if r.name == to_release), None)
        if index is None:
            raise ReleaseNotFoundError(
                str(to_release), known, f"no release named {to_release!r} to go back to"
            )
        asked = f"downgrade --to-release {shlex.quote(str(to_release))}"
        plan = ReleasePlan(str(to_release), found[:index], command=asked)
    _targets(plan)
    for name, to in plan.targets.items():
        target_version(ws.model(name), to, DOWNGRADE, ws.registry)
    return plan


def _targets(plan: ReleasePlan) -> None:
    """Each model's target: where the oldest release taken back found it; the
    order: newest release first, in each the reverse of its upgrade order."""
    for release in reversed(plan.undone):  # oldest first: its versions win
        for name, version in release.moved.items():
            plan.targets.setdefault(name, version)
    order = [name for r in plan.undone for name in reversed(r.moved)]
    plan.targets = {name: plan.targets[name] for name in dict.fromkeys(order)}


async def downgrade_releases(
    ws: Workspace,
    *,
    back: int | None = None,
    to_release: str | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
    plan: ReleasePlan | None = None,
) -> tuple[ReleasePlan, RunResult]:
    """Take every model the releases moved back where they found it: the
    latest `back` releases (``-1``: the last), or every one after `to_release`.

    One downgrade run of the models `plan_releases` plans (pass `plan` to
    run one made before), under one lock, recorded once with the release
    asked for and the releases taken back. Per model it is what `downgrade`
    does: documents newer than the code are left, and the result says so
    (`RunResult.left_newer`). With nothing to take back, nothing is run.

    """
    plan = plan or await plan_releases(ws, back=back, to_release=to_release)
    options = replace(options or RunOptions(), release=None)
    result = result or RunResult("downgrade", options.dry_run)
    if not plan.targets:
        return plan, result
    classes = [ws.model(name) for name in plan.targets]
    to = {
        cls.__model__: plan.targets[name] for cls, name in zip(classes, plan.targets, strict=True)
    }
    recorded = plan.recorded()
    # Documents left newer than the code: the error names the command asked
    # (`downgrade --release -1`) as the one to run from the newer code, not
    # each model's `downgrade MODEL --to V`, which would take the documents
    # back without recording the releases as taken back.
    await _run(ws, DOWNGRADE, classes, to, options, progress, result, None, recorded, plan.command)
    return plan, result
