"""The in-app sweep, from the app: `sweep` (awaited) and `sweeping` (a background task).

No job to schedule: the app upgrades its stored documents itself, slowly,
beside its requests::

    async with atomdb_migrate.sweeping(max_rate=200, busy=lambda: app.load > 0.8):
        await serve()  # the sweep runs meanwhile, and stops cleanly at the end

The engine's loop is `atomdb_migrate.engine.background.Sweep`: it takes the
migration lock one short turn at a time, so it never runs at the same time
as a plain ``upgrade``, and shares its ranges with the app's other
processes.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from atomdb.nosql import NoSQLModelManager

from ..engine.background import Busy, Sweep, SweepReport
from ..engine.options import DEFAULT_BATCH_SIZE, RunOptions
from ..exceptions import ConfigError
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry
from .config import DEFAULT_LOCK_COLLECTION

log = logging.getLogger("atomdb_migrate")

__all__ = ["SweepReport", "Sweeping", "sweep", "sweeping"]


def _models(
    models: Sequence[type[VersionedModel] | str], registry: MigrationRegistry
) -> list[type[VersionedModel]]:
    """The models named (classes, or ``__model__`` names), or every registered one."""
    if not models:
        return [registry.models[name] for name in sorted(registry.models)]
    found = []
    for m in models:
        if isinstance(m, str):
            name = registry.resolve(m)
            if name not in registry.models:
                raise ConfigError(f"sweep: no versioned model {m!r}")
            found.append(registry.models[name])
        else:
            found.append(m)
    return found


def _database(database: Any) -> Any:
    """The database given, or the one atom-db's manager points at (the app's)."""
    if database is not None:
        return database
    try:
        return NoSQLModelManager.instance().database
    except OSError:
        raise ConfigError(
            "sweep: give database=, or set atom-db's first "
            "(NoSQLModelManager.instance().database = db)"
        ) from None


def make_sweep(
    models: Sequence[type[VersionedModel] | str] = (),
    *,
    database: Any = None,
    max_rate: float | None = None,
    max_lag: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    busy: Busy | None = None,
    stop: asyncio.Event | None = None,
    lock_collection: str = DEFAULT_LOCK_COLLECTION,
    lock_ttl: float = 30.0,
    poll: float = 1.0,
    registry: MigrationRegistry | None = None,
) -> Sweep:
    """The sweep `sweep` runs (its arguments are `sweep`'s)."""
    registry = registry or MigrationRegistry.instance()
    options = RunOptions(
        max_rate=max_rate, max_lag=max_lag, batch_size=batch_size, continue_on_error=True
    )
    return Sweep(
        _database(database),
        _models(models, registry),
        options=options,
        lock_collection=lock_collection,
        lock_ttl=lock_ttl,
        registry=registry,
        busy=busy,
        stop=stop,
        poll=poll,
    )


async def sweep(models: Sequence[type[VersionedModel] | str] = (), **arguments: Any) -> SweepReport:
    """Upgrade the models' stored documents in the background of the app, until none
    is left behind or `stop` is set.

    Parameters
    ----------
    models
        The versioned models (classes or ``__model__`` names); by default every
        registered one. Load the step modules first (`load_migrations`).
    database
        The app's database; by default the one atom-db's manager points at.
    max_rate
        The most documents a second the sweep writes (None: as fast as one
        batch at a time goes).
    max_lag
        On a replica set, pause while a secondary is more than this many
        seconds behind (as ``upgrade --max-lag``).
    batch_size
        The documents of one turn (a range): the lock is given up between turns.
    busy
        The app's hook, called before each turn: the sweep pauses while it
        returns True (or an awaitable of True).
    stop
        An `asyncio.Event`: set it to end the sweep after its turn.
    lock_collection, lock_ttl
        The project's ``lock-collection`` and ``lock-ttl`` settings.
    poll
        Seconds between looks while the app is busy or the lock is held.

    Returns
    -------
    SweepReport
        What this process did: each model's counts, the ranges it took, the
        seconds it paused, and whether every model's sweep ended.

    """
    return await make_sweep(models, **arguments).run()


class Sweeping:
    """A sweep running as a background task (`sweeping`)."""

    def __init__(self, running: Sweep) -> None:
        self.sweep = running
        self.task: asyncio.Task[SweepReport] = asyncio.create_task(running.run())
        self.task.add_done_callback(_said)

    @property
    def report(self) -> SweepReport:
        """What the sweep did so far."""
        return self.sweep.report

    async def stop(self) -> SweepReport:
        """End the sweep after its turn (its range done, the lock given up), and wait."""
        self.sweep.stop.set()
        return await self.task


def _said(task: asyncio.Task[SweepReport]) -> None:
    """A sweep that failed says so in the app's log (it is raised again at `stop`)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the in-app sweep stopped: %s", task.exception())


@contextlib.asynccontextmanager
async def sweeping(
    models: Sequence[type[VersionedModel] | str] = (), **arguments: Any
) -> AsyncIterator[Sweeping]:
    """`sweep` as a background task for the time of the block; at its end the sweep
    finishes its turn (its range done, the lock given up) and stops.

    Takes `sweep`'s arguments. A sweep that failed is raised at the block's end.

    """
    running = Sweeping(make_sweep(models, **arguments))
    try:
        yield running
    finally:
        await running.stop()
