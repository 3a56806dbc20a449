"""`holder` and `unlock`: the migration lock a killed runner left behind."""

from __future__ import annotations

from typing import Any

from ..engine.lock import LOCK_ID
from ..engine.lock import unlock as clear_lock
from .join import ranges_of
from .workspace import Workspace

__all__ = ["holder", "unlock"]


async def holder(ws: Workspace) -> dict[str, Any] | None:
    """The migration lock's document, if the lock is held (or was, and never released)."""
    await ws.connect()
    found: dict[str, Any] | None = await ws.database[ws.config.lock_collection].find_one(
        {"_id": LOCK_ID}
    )
    return found


async def unlock(ws: Workspace, *, force: bool = False) -> dict[str, Any] | None:
    """Clear the migration lock a dead runner left; return its holder (None: it was free).

        The holder's run, if still recorded as running, is marked abandoned; the
    ranges its workers held, for a run of workers, are pending again
    (``freed_ranges``: how many).

        Raises
        ------
        LockAliveError
            If the holder still renews its lease, unless `force` is given.

    """
    await ws.connect()
    cleared = await clear_lock(ws.database[ws.config.lock_collection], force=force)
    if cleared is not None and cleared.get("owner"):
        await ws.history().abandon_holder(cleared)
    run = None if cleared is None else cleared.get("run")
    if cleared is not None and isinstance(run, dict):
        # A dead run of workers: its claimed ranges are pending again, for
        # the next upgrade --workers of the same code to carry on.
        cleared["freed_ranges"] = await ranges_of(ws).free(run.get("key"))
    return cleared
