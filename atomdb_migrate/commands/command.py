"""One plain function per command; the CLI only parses options and prints.

Every function here can be called from Python (an app's own deploy script,
a test) with a `Workspace`::

    ws = Workspace(load_config(url="mongodb://db/app", models=["app.models"]))
    async with ws:
        result = await upgrade(ws)

The commands live one group a module, and this module re-exports them all:
`init`; `upgrade` (upgrade, downgrade); `stamp` (stamp, accept_checksums);
`releases` (downgrade_releases, plan_releases, releases); `status`;
`history` (history, failures); `check`; `unlock` (holder,
unlock); `join` (join, run_status: a run of workers); `several`
(databases, each_database); `sweep` (sweep, sweeping: the in-app sweep);
`revision`.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .check import (
    DatabaseCheck,
    advice,
    changed_steps,
    check,
    check_database,
    check_databases,
    collection_indexes,
    collection_validators,
    drift,
    index_drift,
)
from .history import Failures, above_code, failures, history
from .init import TABLE_TEMPLATE, init
from .join import join, run_status
from .releases import Release, ReleasePlan, downgrade_releases, plan_releases, releases
from .several import SYSTEM_DATABASES, Visit, database_exists, databases, each_database
from .stamp import accept_checksums, known_versions, stamp
from .status import ModelStatus, status
from .sweep import Sweeping, SweepReport, sweep, sweeping
from .unlock import holder, unlock
from .upgrade import FINISH_RETRY, RunResult, applied_checksums, downgrade, upgrade
from .workspace import Workspace

if TYPE_CHECKING:
    from .revision import Revision, revision, revisions

#: The names of `revision`, imported on first use: that module imports
#: autogenerate (its inference, renderer and templates), which no other
#: command needs, and a run with nothing to do should not pay for it.
LAZY = frozenset({"Revision", "revision", "revisions"})


def __getattr__(name: str) -> Any:
    """`Revision`, `revision` and `revisions`, from `.revision` when first asked for."""
    if name in LAZY:
        from . import revision as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FINISH_RETRY",
    "SYSTEM_DATABASES",
    "TABLE_TEMPLATE",
    "DatabaseCheck",
    "Failures",
    "ModelStatus",
    "Release",
    "ReleasePlan",
    "Revision",
    "RunResult",
    "SweepReport",
    "Sweeping",
    "Visit",
    "Workspace",
    "above_code",
    "accept_checksums",
    "advice",
    "applied_checksums",
    "changed_steps",
    "check",
    "check_database",
    "check_databases",
    "collection_indexes",
    "collection_validators",
    "database_exists",
    "databases",
    "downgrade",
    "downgrade_releases",
    "drift",
    "each_database",
    "failures",
    "history",
    "holder",
    "index_drift",
    "init",
    "join",
    "known_versions",
    "plan_releases",
    "releases",
    "revision",
    "revisions",
    "run_status",
    "stamp",
    "status",
    "sweep",
    "sweeping",
    "unlock",
    "upgrade",
]
