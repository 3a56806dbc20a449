"""The migration lock: a lease held in the database.

One document with a fixed ``_id`` in the lock collection (by default
``atomdb_migrate_lock``) says who holds the lock and until when. It is taken
with one atomic find-and-modify that matches the document only when its
lease has expired (or is already ours), with an upsert for the first time:
when another runner holds a live lease, the upsert collides on the ``_id``
and nobody else's lease is touched. The holder renews the lease in the
background; a runner that dies stops renewing, and its lease expires after
``ttl`` seconds. Lease times come from the runners' clocks, which should be
kept in sync (NTP), as for every lease.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from pymongo.errors import DuplicateKeyError

from .exceptions import LockHeldError, LockLostError

log = logging.getLogger("atomdb_migrate")

#: The ``_id`` of the lock document.
LOCK_ID = "atomdb-migrate"


class LeaseLock:
    """A lease lock on a collection; an async context manager.

    Parameters
    ----------
    collection:
        The lock collection (PyMongo async or Motor).
    ttl: float
        Seconds a lease lasts unless renewed; it is renewed every ``ttl / 3``.
    command: str
        What the holder is doing, shown to runners that find the lock held.
    wait: bool
        Wait for the lock instead of raising `LockHeldError`.
    poll: float
        Seconds between attempts while waiting.

    """

    def __init__(
        self,
        collection: Any,
        *,
        ttl: float = 30.0,
        command: str = "atomdb-migrate",
        wait: bool = False,
        poll: float = 1.0,
    ) -> None:
        self.collection = collection
        self.ttl = ttl
        self.command = command
        self.wait = wait
        self.poll = poll
        #: A token unique to this runner.
        self.owner = uuid.uuid4().hex
        self._valid_until = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._lost = False

    # ------------------------------------------------------------------
    async def acquire(self) -> None:
        """Take the lock, waiting for it if asked to.

        Raises
        ------
        LockHeldError
            If another runner holds a live lease (and ``wait`` is False).

        """
        announced = False
        while True:
            try:
                await self._try_acquire()
                return
            except LockHeldError as exc:
                if not self.wait:
                    raise
                if not announced:
                    log.warning("waiting: %s", exc)
                    announced = True
                await asyncio.sleep(self.poll)

    async def _try_acquire(self) -> None:
        now = datetime.now(UTC)
        started = time.monotonic()
        holder = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=self.ttl),
        }
        query = {"_id": LOCK_ID, "$or": [{"expires_at": {"$lte": now}}, {"owner": self.owner}]}
        try:
            await self.collection.find_one_and_update(query, {"$set": holder}, upsert=True)
        except DuplicateKeyError:
            current = await self.collection.find_one({"_id": LOCK_ID})
            if current is None:
                return await self._try_acquire()  # released meanwhile
            raise LockHeldError(current) from None
        self._valid_until = started + self.ttl
        self._lost = False

    async def renew(self) -> bool:
        """Extend the lease; False if it is no longer ours."""
        started = time.monotonic()
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl)
        result = await self.collection.update_one(
            {"_id": LOCK_ID, "owner": self.owner}, {"$set": {"expires_at": expires}}
        )
        if result.matched_count:
            self._valid_until = started + self.ttl
            return True
        self._lost = True
        return False

    async def release(self) -> None:
        """Give the lock up (only if it is still ours)."""
        await self.collection.delete_one({"_id": LOCK_ID, "owner": self.owner})

    def check(self) -> None:
        """Raise `LockLostError` if the lease was lost or has run out.

        The runner calls this between batches, so it never writes without
        holding the lock.

        """
        if self._lost or time.monotonic() >= self._valid_until:
            raise LockLostError(
                "the migration lock's lease was lost (not renewed in time, or taken by "
                "another runner); stopping before the next write"
            )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.renew():
                    log.error("the migration lock was taken by another runner")
                    return
            except Exception as exc:  # keep trying until the lease runs out
                log.warning("could not renew the migration lock: %s", exc)

    # ------------------------------------------------------------------
    async def __aenter__(self) -> LeaseLock:
        await self.acquire()
        self._renewer = asyncio.create_task(self._renew_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(Exception):
            await self.release()
