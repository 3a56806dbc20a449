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

The renewal runs in a thread of its own, with a synchronous client of its
own (given as `renewal`), so that nothing the run does on its event loop (a
slow synchronous step, a step that never awaits) can keep it from renewing.
Without one, it runs as a task on the event loop, and a step that holds the
loop longer than the renewal interval loses the lease; the error says so.

"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from ..driver.retry import Retry
from ..exceptions import LockAliveError, LockHeldError, LockLostError

log = logging.getLogger("atomdb_migrate")

#: The ``_id`` of the lock document.
LOCK_ID = "atomdb-migrate"

#: Seconds to keep trying to give the lock up when the server fails (each try
#: bounded by it too): past that, the lease runs out on its own.
RELEASE_RETRY = 2.0


#: What taking the lock clears of a former holder's document: its progress and
#: its run of workers (the ``run`` record, see `commands.join`).
CLEARED = {"progress": "", "progress_seq": "", "run": ""}


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
    retry: Retry, optional
        Sends the commands that take and give up the lock again while they
        fail transiently (taking it again is harmless: it matches our own
        lease). The renewal retries on its own until the lease runs out.

    """

    def __init__(
        self,
        collection: Any,
        *,
        ttl: float = 30.0,
        command: str = "atomdb-migrate",
        wait: bool = False,
        poll: float = 1.0,
        renewal: Callable[[], Any] | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.collection = collection
        #: Takes and gives up the lock again while the server fails transiently.
        self.retry = retry
        #: Makes the renewal thread's synchronous collection, when first due
        #: (retried like a renewal): a short run opens no second client.
        self.renewal = renewal
        self.ttl = ttl
        self.command = command
        self.wait = wait
        self.poll = poll
        #: A token unique to this runner.
        self.owner = uuid.uuid4().hex
        self._valid_until = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lost = False
        #: The longest the event loop kept the renewal waiting, in seconds.
        self.blocked = 0.0
        self._due = float("inf")
        #: What the run has written so far (its counts by model, as the
        #: history records them), numbered: carried by every renewal and
        #: every `verify`, so that the run of a runner that dies has them
        #: (`progress`). One tuple, so that the renewal thread reads both at once.
        self._carried: tuple[int, dict[str, Any] | None] = (0, None)
        #: The lock document this runner's lease replaced: that of a runner
        #: whose lease ran out (its ``owner`` and ``progress``), or None.
        self.replaced: dict[str, Any] | None = None
        self._keep = False

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
                if self.retry is None:
                    await self._try_acquire()
                else:
                    await self.retry.call("taking the migration lock", self._try_acquire)
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
            "renewed_at": now,
            "expires_at": now + timedelta(seconds=self.ttl),
            "ttl": self.ttl,
        }
        query = {"_id": LOCK_ID, "$or": [{"expires_at": {"$lte": now}}, {"owner": self.owner}]}
        try:
            before = await self.collection.find_one_and_update(
                query, {"$set": holder, "$unset": CLEARED}, upsert=True
            )
        except DuplicateKeyError:
            current = await self.collection.find_one({"_id": LOCK_ID})
            if current is None:
                return await self._try_acquire()  # released meanwhile
            raise LockHeldError(current) from None
        self._valid_until = started + self.ttl
        self._lost = False
        if isinstance(before, dict) and before.get("owner") != self.owner:
            self.replaced = before

    @property
    def progress(self) -> dict[str, Any] | None:
        """What the run has written so far, as the lock document is to carry it."""
        return self._carried[1]

    @progress.setter
    def progress(self, progress: dict[str, Any] | None) -> None:
        self._carried = (self._carried[0] + 1, progress)

    def _renewal(self) -> tuple[float, list[tuple[dict[str, Any], dict[str, Any]]]]:
        """When a renewal starts, and its updates (filter, update), tried in turn
        until one matches.

        The first carries the progress, but only over an older one: a
        renewal that read the progress before a `verify` carried a newer one
        (the renewal runs in a thread of its own) must not put the older
        counts back. The second then extends the lease alone.

        """
        now = datetime.now(UTC)
        fields: dict[str, Any] = {
            "expires_at": now + timedelta(seconds=self.ttl),
            "renewed_at": now,
        }
        seq, progress = self._carried  # set on the event loop; read once here
        query = {"_id": LOCK_ID, "owner": self.owner}
        plain = (query, {"$set": fields})
        if progress is None:
            return time.monotonic(), [plain]
        older = [{"progress_seq": {"$lte": seq}}, {"progress_seq": {"$exists": False}}]
        carried = {"$set": {**fields, "progress": progress, "progress_seq": seq}}
        return time.monotonic(), [({**query, "$or": older}, carried), plain]

    def _renewed(self, started: float, matched: int) -> bool:
        if matched:
            self._valid_until = started + self.ttl
            return True
        self._lost = True
        return False

    async def renew(self) -> bool:
        """Extend the lease; False if it is no longer ours."""
        started, updates = self._renewal()
        matched = 0
        for query, update in updates:
            matched = (await self.collection.update_one(query, update)).matched_count
            if matched:
                break
        return self._renewed(started, matched)

    def renew_sync(self, collection: Any) -> bool:
        """Extend the lease through a synchronous collection; False if it is no longer ours."""
        started, updates = self._renewal()
        matched = 0
        for query, update in updates:
            matched = collection.update_one(query, update).matched_count
            if matched:
                break
        return self._renewed(started, matched)

    async def release(self) -> None:
        """Give the lock up (only if it is still ours).

        After `keep_progress`, the lease is ended instead of the lock document
        deleted: the next runner takes it at once, and finds the counts.

        """
        if self._keep:
            now = datetime.now(UTC)
            ended = {"expires_at": now, "renewed_at": now, "progress": self.progress}
            # A find-and-modify: it reaches the server where an update may not.
            query = {"_id": LOCK_ID, "owner": self.owner}
            await self.collection.find_one_and_update(query, {"$set": ended})
            return
        await self.collection.delete_one({"_id": LOCK_ID, "owner": self.owner})

    def keep_progress(self, progress: dict[str, Any]) -> None:
        """The run's end could not be recorded: leave `progress` in the lock document
        when giving the lock up, for the next runner to record (`History.abandon_holder`)."""
        self.progress = copy.deepcopy(progress)
        self._keep = True

    def check(self) -> None:
        """Raise `LockLostError` if the lease was lost or has run out.

        The runner calls this between batches, so it never writes without
        holding the lock.

        """
        now = time.monotonic()
        if self._lost or now >= self._valid_until:
            why = "not renewed in time, or taken by another runner"
            if self._renewer is not None:  # a renewal still waiting for its turn
                self.blocked = max(self.blocked, now - self._due)
            if self.blocked >= self.ttl / 3:
                why = (
                    f"not renewed in time: the event loop was busy for {self.blocked:.1f} s "
                    f"at a stretch, longer than the renewal interval ({self.ttl / 3:.1f} s); "
                    "a step that blocks (slow synchronous code, or a slow async step that "
                    "never awaits) starves the renewal. Raise lock-ttl, make the step "
                    "faster or make it await, or lower --batch-size"
                )
            raise LockLostError(
                f"the migration lock's lease was lost ({why}); stopping before the next write"
            )

    async def hold(self) -> None:
        """Make sure the lease is ours before a write; take it back if it ran out unclaimed.

        A lease that ran out while the runner rode through a server outage
        longer than ``ttl`` (the renewals failed too) is taken back when the
        lock document still names this runner: nobody else took the lock, so
        nobody else wrote meanwhile. One that another runner took, or that
        was cleared (``unlock``), stays lost.

        Raises
        ------
        LockLostError
            If the lease was lost; the message names the outage when the
            lease ran out during one.

        """
        try:
            self.check()
            return
        except LockLostError:
            if self._lost or self.blocked >= self.ttl / 3:
                raise
            expired = time.monotonic() - self._valid_until
        started, updates = self._renewal()
        matched = 0
        try:
            for query, update in updates:
                if self.retry is None:
                    result = await self.collection.update_one(query, update)
                else:
                    result = await self.retry.call(
                        "taking back the migration lock",
                        partial(self.collection.update_one, query, update),
                    )
                matched = result.matched_count
                if matched:
                    break
        except PyMongoError as exc:
            problem = f"and could not be taken back: {exc}"
            raise LockLostError(self._lost_message(expired, problem)) from None
        if matched:
            self._valid_until = started + self.ttl
            log.warning(
                "the migration lock's lease ran out %.1f s ago%s; nobody else took it: taken back",
                expired,
                self._outage_text(),
            )
            return
        self._lost = True
        raise LockLostError(
            self._lost_message(expired, "and another runner took it, or it was cleared (unlock)")
        )

    def _outage_text(self) -> str:
        """ ", during a server outage of N s" when the run rode through one lately."""
        if self.retry is None:
            return ""
        since = self.retry.outage_since()
        if since is not None:
            return f", during a server outage under way for {time.monotonic() - since:.0f} s"
        if self.retry.outage is not None:
            start, end = self.retry.outage
            if end >= self._valid_until - 1.0:
                return (
                    f", during a server outage of {end - start:.0f} s "
                    f"(longer than the lease, lock-ttl {self.ttl:g} s)"
                )
        return ""

    def _lost_message(self, expired: float, then: str) -> str:
        return (
            f"the migration lock's lease was lost: it ran out {expired:.1f} s ago"
            f"{self._outage_text()}, {then}; stopping before the next write"
        )

    async def verify(self, progress: dict[str, Any] | None = None) -> None:
        """Make sure, on the server, that the lease is still ours; carry `progress`.

        `check` tells from this runner's clock alone; a lock cleared by
        ``unlock --force`` and taken by another runner is only seen here. The
        runner calls this before every write (a round trip: one update of the
        lock document, matching our ``owner``, that records what the run has
        written so far without extending the lease). What it cannot close is
        the time between this answer and the write that follows it.

        Raises
        ------
        LockLostError
            If the lock document is no longer ours, or the lease has run out.

        """
        await self.hold()
        if progress is not None:
            self.progress = progress
        fields: dict[str, Any] = {"verified_at": datetime.now(UTC)}
        seq, carried = self._carried
        if carried is not None:
            fields.update(progress=carried, progress_seq=seq)
        # A findAndModify, not an update: the run's bulk writes are the updates.
        query = {"_id": LOCK_ID, "owner": self.owner}
        found = await self.collection.find_one_and_update(
            query, {"$set": fields}, projection={"_id": 1}
        )
        if found is None:
            self._lost = True
            raise LockLostError(
                "the migration lock was taken from this runner (cleared with `unlock "
                "--force`, or taken by another runner once the lease ran out); stopping "
                "before the next write"
            )
        # Ours on the server: a lease that ran out during this call (a slow
        # answer) is taken back, as after any outage nobody used.
        await self.hold()

    def _renew_in_thread(self, make_collection: Callable[[], Any]) -> None:
        """Renew every ``ttl / 3`` s until stopped, making the collection when first due."""
        collection: Any = None
        while not self._stop.wait(self.ttl / 3):
            try:
                if collection is None:
                    collection = make_collection()
                if not self.renew_sync(collection):
                    log.error("the migration lock was taken by another runner")
                    return
            except Exception as exc:  # keep trying until the lease runs out
                log.warning("could not renew the migration lock: %s", exc)

    async def _renew_forever(self) -> None:
        while True:
            self._due = time.monotonic() + self.ttl / 3
            await asyncio.sleep(self.ttl / 3)
            self.blocked = max(self.blocked, time.monotonic() - self._due)
            self._due = float("inf")
            try:
                if not await self.renew():
                    log.error("the migration lock was taken by another runner")
                    return
            except Exception as exc:  # keep trying until the lease runs out
                log.warning("could not renew the migration lock: %s", exc)

    # ------------------------------------------------------------------
    async def __aenter__(self) -> LeaseLock:
        await self.acquire()
        if self.renewal is not None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_in_thread,
                args=(self.renewal,),
                name="atomdb-migrate lease",
                daemon=True,
            )
            self._thread.start()
        else:
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
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with contextlib.suppress(Exception):
            if self.retry is None:
                await self.release()
            else:
                # Briefly: a lock left behind expires with its lease anyway.
                brief = Retry(min(self.retry.seconds, RELEASE_RETRY), call_timeout=RELEASE_RETRY)
                await brief.call("giving up the migration lock", self.release)


def utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (PyMongo returns naive ones); None if it is none."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def renewal_age(holder: dict[str, Any]) -> float | None:
    """Seconds since the holder last renewed its lease (None if the lock document does not say)."""
    last = utc(holder.get("renewed_at")) or utc(holder.get("acquired_at"))
    return (datetime.now(UTC) - last).total_seconds() if last else None


def is_alive(holder: dict[str, Any]) -> bool:
    """Whether a lock's holder still renews its lease.

    A holder renews every ``ttl / 3`` seconds: one that missed two renewals,
    or whose lease has run out, is taken to be dead, and so is one on this
    host whose process is gone.

    """
    expires = utc(holder.get("expires_at"))
    if expires is None or expires <= datetime.now(UTC):
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process: alive
        except (OverflowError, ValueError, OSError):
            pass  # no process can have that number: as its lease says
    age = renewal_age(holder)
    ttl = holder.get("ttl")
    if age is None or not isinstance(ttl, (int, float)):
        return True  # an older holder that does not say: as its lease says
    return age < 2 * ttl / 3 + 1.0


async def unlock(collection: Any, *, force: bool = False) -> dict[str, Any] | None:
    """Clear the migration lock; return the holder it had (None if it was free).

    Raises
    ------
    LockAliveError
        If the holder still renews its lease, unless `force` is given.

    """
    holder: dict[str, Any] | None = await collection.find_one({"_id": LOCK_ID})
    if holder is None:
        return None
    if not force and is_alive(holder):
        raise LockAliveError(holder, renewal_age(holder))
    await collection.delete_one({"_id": LOCK_ID, "owner": holder.get("owner")})
    return holder
