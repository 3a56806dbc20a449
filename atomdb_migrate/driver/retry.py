"""Riding through transient server faults: which errors pass, and for how long to retry.

A replica-set election makes the primary refuse writes for about ten
seconds; a restart or a dropped connection fails the command in flight. The
drivers retry such a command once; a run of hours needs more. `Retry` runs
a server call again, with exponential backoff and jitter, while its error is
transient (`is_transient`), for at most `Retry.seconds` from the first
failure in a row. Past that it raises `ServerUnavailableError`; any other
driver error becomes a `ServerError`. Neither leaves a PyMongo traceback.

The window is a deadline. Each try after a failure gets only what is left of
it (``pymongo.timeout``, which bounds the server selection too), so a try
that waits for a server that does not answer cannot carry the run past it;
a try that spent its whole time selecting a server counts from its start.
Every call, the first included, has a deadline of its own as well
(`Retry.call_timeout`, ``--call-timeout``): a call the server does not
answer in that time is cancelled and counts as a transient fault. While a
call is outstanding for more than `WAIT_NOTE` seconds, `Retry.on_wait` is
told, so the progress line says the run is waiting on the server.

A write concern the server can never satisfy (`PERMANENT_WRITE_CONCERN`:
``UnsatisfiableWriteConcern``, more members than the set has) is not
transient: it fails at once, as `WriteConcernRefusedError`.

What a retry may do twice is the caller's business: the runner's writes are
conditional on the document as read, so a write that was applied before its
acknowledgement was lost matches nothing the second time, and the document
is read again and counted as upgraded.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymongo
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from ..exceptions import ServerError, ServerUnavailableError, WriteConcernRefusedError, shorten

log = logging.getLogger("atomdb_migrate")

T = TypeVar("T")

#: Server error codes that say "try again": the retryable-reads and -writes
#: specifications' list (network, not primary, shutting down), the
#: write-concern timeout, and cursors killed or lost under the run.
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        43,  # CursorNotFound
        64,  # WriteConcernFailed (wtimeout)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        134,  # ReadConcernMajorityNotAvailableYet
        175,  # QueryPlanKilled
        189,  # PrimarySteppedDown
        237,  # CursorKilled
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)

#: Write-concern error codes no retry can pass: the write concern asks for
#: what the deployment does not have (``UnsatisfiableWriteConcern``, and
#: ``UnknownReplWriteConcern``: a tag set it does not define).
PERMANENT_WRITE_CONCERN = frozenset({100, 79})

#: The default of ``--retry-for``: longer than an election.
DEFAULT_RETRY_FOR = 60.0

#: The default of ``--call-timeout``: a server call (a batch read, a bulk
#: write, a step's ``update_many``) that gets no answer for this long is a
#: transient fault. Far above what a first batch takes to find its documents
#: in a collection of billions without an index.
DEFAULT_CALL_TIMEOUT = 3600.0

#: Seconds a call may be outstanding before `Retry.on_wait` is told, and
#: between two tellings.
WAIT_NOTE = 2.0

#: The least time a try gets: the window's last try ends this much past it.
SHORTEST_TRY = 0.001

#: Seconds past a call's deadline that the driver gets to end it with its own
#: timeout error before the call is cancelled.
GRACE = 1.0


def write_concern_errors(error: BaseException) -> list[dict[str, Any]]:
    """The write-concern errors a driver error carries (none: an empty list)."""
    if isinstance(error, BulkWriteError):
        return list((error.details or {}).get("writeConcernErrors") or [])
    if isinstance(error, WriteConcernError):
        return [dict(error.details or {"code": error.code, "errmsg": str(error)})]
    return []


def is_permanent_write_concern(error: BaseException) -> bool:
    """Whether a write-concern error says the write concern can never be satisfied."""
    if isinstance(error, BulkWriteError) and (error.details or {}).get("writeErrors"):
        return False
    return any(e.get("code") in PERMANENT_WRITE_CONCERN for e in write_concern_errors(error))


def is_transient(error: BaseException) -> bool:
    """Whether a driver error may pass if the command is sent again."""
    if isinstance(error, ConnectionFailure):  # network, not primary, no server
        return True
    if is_permanent_write_concern(error):
        return False
    if isinstance(error, PyMongoError) and error.timeout:  # a deadline of ours ran out
        return True
    if isinstance(error, BulkWriteError):
        # Refused writes are the documents' own; a write-concern error is the
        # server's state.
        details = error.details or {}
        return bool(details.get("writeConcernErrors")) and not details.get("writeErrors")
    if isinstance(error, WriteConcernError):
        return True
    if isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"):
        return True
    return isinstance(error, OperationFailure) and error.code in TRANSIENT_CODES


def fault_line(error: BaseException) -> str:
    """A driver error as one short line.

    A bulk write failed by its write concern names the write-concern error,
    not the ``BulkWriteError`` (65) around it.

    """
    concern = write_concern_errors(error)
    if concern and not (
        isinstance(error, BulkWriteError) and (error.details or {}).get("writeErrors")
    ):
        first = concern[0]
        code, name = first.get("code"), first.get("codeName")
        label = f" ({code}{f' {name}' if name else ''})" if code is not None else ""
        text = " ".join(str(first.get("errmsg", "")).split())
        return shorten(f"write-concern error{label}: {text}", 200)
    code = getattr(error, "code", None)
    text = " ".join(str(error).split("full error:")[0].split())
    return shorten(f"{type(error).__name__}{f' ({code})' if code else ''}: {text}", 200)


@dataclass
class Retry:
    """Runs server calls again while they fail transiently.

    Parameters
    ----------
    seconds: float
        The longest a call keeps failing before the run stops: from its
        first failure in a row (from the start of that try when it spent it
        selecting a server). 0 retries nothing. Each try after a failure is
        bounded by what is left.
    base, cap: float
        The first backoff, and the longest: each wait is drawn between half
        and all of ``min(cap, base * 2**attempt)``.
    on_retry: callable, optional
        Told ``(operation, error, delay)`` before each wait (the progress
        line says so).
    call_timeout: float
        The longest one call may go unanswered: past it, it is cancelled and
        counts as a transient fault.
    on_wait: callable, optional
        Told ``(operation, seconds)`` while a call is outstanding for more
        than `WAIT_NOTE` seconds, and ``("", 0.0)`` once it is answered.

    """

    seconds: float = DEFAULT_RETRY_FOR
    base: float = 0.1
    cap: float = 5.0
    on_retry: Callable[[str, BaseException, float], None] | None = None
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    on_wait: Callable[[str, float], None] | None = None
    #: How many retries this policy made, in all.
    retries: int = 0
    #: The start and the end of the latest run of failures ridden through
    #: (None while nothing failed): what a lease lost meanwhile names.
    outage: tuple[float, float] | None = None
    #: Failures in a row under way now, by when they started.
    failing: dict[int, float] = field(default_factory=dict, repr=False)

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, again while it fails transiently.

        Raises
        ------
        ServerUnavailableError
            If it still fails past `seconds`.
        WriteConcernRefusedError
            If the server can never satisfy the write concern.
        ServerError
            If it fails otherwise.

        """
        fault = Fault(self, operation)
        try:
            while True:
                try:
                    return await fault.run_once(fn)
                except PyMongoError as error:
                    await fault.wait(error)
        finally:
            fault.clear()

    def fault(self, operation: str) -> Fault:
        """A run of failures of one operation (a cursor read again and again)."""
        return Fault(self, operation)

    def outage_since(self) -> float | None:
        """When the oldest run of failures under way now started (None: none is)."""
        return min(self.failing.values(), default=None)


class Fault:
    """Failures in a row of one operation: how long they have lasted."""

    def __init__(self, policy: Retry, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        self.started: float | None = None
        self.attempt_started: float | None = None
        self.attempt = 0
        #: The fault being ridden through: what the run names if it stops.
        self.cause: PyMongoError | None = None
        #: Whether a try of this run of failures went unanswered.
        self.lost = False

    def clear(self) -> None:
        """The operation succeeded: the next failure starts a new window."""
        if self.started is not None:
            self.policy.outage = (self.started, self.policy.clock())
        self.policy.failing.pop(id(self), None)
        self.started, self.attempt, self.cause, self.lost = None, 0, None, False

    def limit(self) -> float:
        """How long the next try may take: the call's deadline, within the window."""
        policy = self.policy
        if self.started is None:
            return policy.call_timeout
        left = self.started + policy.seconds - policy.clock()
        return max(min(policy.call_timeout, left), SHORTEST_TRY)

    def begin(self) -> float:
        """A try starts: its time limit (see `limit`)."""
        self.attempt_started = self.policy.clock()
        return self.limit()

    async def run_once(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` within `limit`, as a try of this operation.

        A first try keeps the client's own timeouts (the URL's
        ``socketTimeoutMS``) and is cancelled past the call's deadline; a try
        after a failure runs under ``pymongo.timeout``, so that its server
        selection and its command end with the window.

        """
        limit = self.begin()
        if self.started is None:
            return await bounded(fn(), limit, self.operation, self.policy.on_wait)
        with pymongo.timeout(limit):
            return await bounded(fn(), limit, self.operation, self.policy.on_wait)

    def _remember(self, error: PyMongoError) -> None:
        """Keep `error` as the fault, unless it is a try cut short by the window.

        A try after a failure runs under what is left of the window; the last
        one often gets a millisecond and ends with the driver's own timeout
        (``ExecutionTimeout``, ``NetworkTimeout``). That names the window, not
        the fault the run was riding through (a not-primary error, a dropped
        connection), which the message of a run that stops should name.

        """
        if self.cause is None or self.started is None or not error.timeout:
            self.cause = error
        self.lost = self.lost or isinstance(error, ConnectionFailure)

    async def wait(self, error: PyMongoError) -> None:
        """Back off before the next attempt, or raise if there is to be none."""
        if is_permanent_write_concern(error):
            raise WriteConcernRefusedError(self.operation, error) from None
        if not is_transient(error):
            raise ServerError(self.operation, error) from None
        policy = self.policy
        now = policy.clock()
        self._remember(error)
        if self.started is None:
            self.started = now
            if isinstance(error, ServerSelectionTimeoutError) and self.attempt_started is not None:
                # The whole try went to waiting for a server: it counts.
                self.started = min(self.attempt_started, now)
            policy.failing[id(self)] = self.started
        left = self.started + policy.seconds - now
        if left <= 0:
            cause = self.cause or error
            raise ServerUnavailableError(
                self.operation, cause, now - self.started, answer_lost=self.lost
            ) from None
        delay = min(policy.cap, policy.base * 2**self.attempt)
        delay = min(random.uniform(delay / 2, delay), left)
        self.attempt += 1
        policy.retries += 1
        log.warning("%s: %s; retrying in %.1f s", self.operation, fault_line(error), delay)
        if policy.on_retry is not None:
            policy.on_retry(self.operation, error, delay)
        await policy.sleep(delay)


async def bounded(
    call: Awaitable[T],
    limit: float,
    operation: str,
    on_wait: Callable[[str, float], None] | None = None,
) -> T:
    """``await call``, cancelled past `limit` seconds (and `GRACE`).

    The driver's own timeout (``pymongo.timeout``, set by the caller) ends
    it first where the client honours it; past `GRACE` more, it is
    cancelled. `on_wait` is told every `WAIT_NOTE` seconds while it is
    outstanding.

    Raises
    ------
    NetworkTimeout
        If no answer came in time: a transient fault.

    """
    task = asyncio.ensure_future(call)
    started = time.monotonic()
    deadline = started + limit + GRACE
    told = False
    try:
        while True:
            now = time.monotonic()
            step = min(WAIT_NOTE, deadline - now)
            if step > 0:
                done, _ = await asyncio.wait({task}, timeout=step)
                if done:
                    return task.result()
            if time.monotonic() >= deadline:
                raise NetworkTimeout(
                    f"no answer from the server in {limit:.1f} s (--call-timeout, "
                    "or what was left of --retry-for)"
                )
            if on_wait is not None:
                on_wait(operation, time.monotonic() - started)
                told = True
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if told and on_wait is not None:
            on_wait("", 0.0)
