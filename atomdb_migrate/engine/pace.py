"""The pace of a run: a rate limit, and a pause while replication lags.

An eager upgrade writes as fast as the server takes it. On a replica set
that can leave the secondaries behind: reads from them go stale, and a
failover loses what they had not copied. ``--max-rate`` caps the documents
per second; ``--max-lag`` pauses the writes while any secondary is more than
that many seconds behind the primary, as ``replSetGetStatus`` reports it.

The rate holds over every second, not on average: a write of ``n``
documents starts only when the last `Pace.span` seconds, writes in flight
included, leave room for ``n`` more, and a document counts from when its
write ended. No batch is larger than that room (`Pace.largest_batch`), so
batches shrink to fit a low rate, and the first batch waits like any other.

"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

log = logging.getLogger("atomdb_migrate")

#: Returns, when awaited, the replication lag in seconds (None: none to read).
LagSource = Callable[[], Awaitable[float | None]]

#: Seconds between two readings of the lag while running, and while paused.
CHECK_EVERY = 1.0


async def replication_lag(database: Any) -> float | None:
    """The largest lag of a secondary behind the primary, in seconds.

    Read from ``replSetGetStatus`` (each member's ``optimeDate``; it needs
    the ``clusterMonitor`` role or one holding ``replSetGetStatus``). None on
    a server that is not in a replica set, or where the status cannot be
    read: nothing to wait for.

    """
    try:
        status = await database.client.admin.command("replSetGetStatus")
    except (PyMongoError, AttributeError):
        return None
    return lag_of(status)


def lag_of(status: dict[str, Any]) -> float | None:
    """The largest secondary lag in a ``replSetGetStatus`` reply (None if no primary)."""
    members = status.get("members") or []
    primary = next((m for m in members if m.get("stateStr") == "PRIMARY"), None)
    if primary is None or not isinstance(primary.get("optimeDate"), datetime):
        return None
    lags = [
        (primary["optimeDate"] - m["optimeDate"]).total_seconds()
        for m in members
        if m.get("stateStr") == "SECONDARY" and isinstance(m.get("optimeDate"), datetime)
    ]
    return max(lags, default=0.0)


class Pace:
    """Holds a run to `max_rate` documents per second, and while `lag()` is over `max_lag`.

    `say` is told what holds the run up ("" once nothing does). Writes call
    `before_write` with their number of documents, and `written` once they
    have ended.

    """

    def __init__(
        self,
        max_rate: float | None,
        max_lag: float | None,
        lag: LagSource,
        say: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        every: float = CHECK_EVERY,
    ) -> None:
        self.max_rate = max_rate
        self.max_lag = max_lag
        self.lag = lag
        self.say = say
        self.clock = clock
        self.sleep = sleep
        self.every = every
        #: (when a write ended, its documents), for the last `span` seconds.
        self._ended: deque[tuple[float, int]] = deque()
        self._in_flight = 0
        self._checked: float | None = None
        self._unreadable = False
        #: Seconds spent waiting, for the rate and for the lag.
        self.waited_rate = 0.0
        self.waited_lag = 0.0

    @property
    def span(self) -> float:
        """The window the rate holds over: one second, or one document's share of time."""
        if self.max_rate is None:
            return 1.0
        return max(1.0, 1.0 / self.max_rate)

    def largest_batch(self) -> int | None:
        """The most documents one write may hold under the rate (None: no rate)."""
        if self.max_rate is None:
            return None
        # Exact: under one document per second the window holds one document
        # (max); from one up, the window is one second and the rate a float.
        return max(1, math.floor(self.max_rate * self.span))

    async def before_write(self, count: int = 0) -> None:
        """Wait while a secondary lags too far, then until the rate has room for `count`."""
        await self._wait_lag()
        if self.max_rate is not None and count > 0:
            await self._wait_room(count)
            self._in_flight += count

    def written(self, count: int) -> None:
        """A write of `count` documents (let in by `before_write`) has ended."""
        if self.max_rate is None or count <= 0:
            return
        self._in_flight = max(self._in_flight - count, 0)
        self._ended.append((self.clock(), count))

    async def after_write(self, count: int) -> None:
        """Wait for room for `count` documents, and count them as written now."""
        await self.before_write(count)
        self.written(count)

    def _used(self, now: float) -> int:
        while self._ended and self._ended[0][0] <= now - self.span:
            self._ended.popleft()
        return self._in_flight + sum(n for _, n in self._ended)

    async def _wait_room(self, count: int) -> None:
        room = self.largest_batch() or count
        while True:
            now = self.clock()
            used = self._used(now)
            if used + count <= room or used == 0:
                return
            # The oldest write leaves the window then (or one in flight ends).
            wait = self._ended[0][0] + self.span - now if self._ended else self.every
            wait = max(wait, 1e-3)
            await self.sleep(wait)
            self.waited_rate += wait

    async def _wait_lag(self) -> None:
        """Wait while a secondary lags too far (checked every `every` seconds)."""
        if self.max_lag is None or self._unreadable:
            return
        now = self.clock()
        if self._checked is not None and now - self._checked < self.every:
            return
        self._checked = now
        paused = False
        while True:
            lag = await self.lag()
            if lag is None:
                if not paused:
                    self._unreadable = True
                    log.warning(
                        "--max-lag: the server reports no replica-set status "
                        "(not a replica set, or no clusterMonitor role): not throttling"
                    )
                break
            if lag <= self.max_lag:
                break
            paused = True
            self.say(
                f"paused: a secondary is {lag:.1f} s behind the primary "
                f"(--max-lag {self.max_lag:g} s)"
            )
            start = self.clock()
            await self.sleep(self.every)
            self.waited_lag += self.clock() - start
        if paused:
            self.say("")
            self._checked = self.clock()
