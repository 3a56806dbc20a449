"""Riding through transient server faults: which errors pass, and for how long to retry.

A replica-set election makes the primary refuse writes for about ten
seconds; a restart or a dropped connection fails the command in flight. The
drivers retry such a command once; a run of hours needs more. `Retry` runs
a server call again, with exponential backoff and jitter, while its error is
transient (`is_transient`), for at most `Retry.seconds` from the first
failure in a row. Past that it raises `ServerUnavailableError`; any other
driver error becomes a `ServerError`. Neither leaves a PyMongo traceback.

What a retry may do twice is the caller's business: the runner's writes are
conditional on the document as read, so a write that was applied before its
acknowledgement was lost matches nothing the second time, and the document
is read again and counted as upgraded.

"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from .exceptions import ServerError, ServerUnavailableError, shorten

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

#: The default of ``--retry-for``: longer than an election.
DEFAULT_RETRY_FOR = 60.0


def is_transient(error: BaseException) -> bool:
    """Whether a driver error may pass if the command is sent again."""
    if isinstance(error, ConnectionFailure):  # network, not primary, no server
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


def describe(error: BaseException) -> str:
    """A driver error as one short line."""
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
        first failure in a row. 0 retries nothing.
    base, cap: float
        The first backoff, and the longest: each wait is drawn between half
        and all of ``min(cap, base * 2**attempt)``.
    on_retry: callable, optional
        Told ``(operation, error, delay)`` before each wait (the progress
        line says so).

    """

    seconds: float = DEFAULT_RETRY_FOR
    base: float = 0.1
    cap: float = 5.0
    on_retry: Callable[[str, BaseException, float], None] | None = None
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    #: How many retries this policy made, in all.
    retries: int = 0

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, again while it fails transiently.

        Raises
        ------
        ServerUnavailableError
            If it still fails past `seconds`.
        ServerError
            If it fails otherwise.

        """
        fault = Fault(self, operation)
        while True:
            try:
                return await fn()
            except PyMongoError as error:
                await fault.wait(error)

    def fault(self, operation: str) -> Fault:
        """A run of failures of one operation (a cursor read again and again)."""
        return Fault(self, operation)


class Fault:
    """Failures in a row of one operation: how long they have lasted."""

    def __init__(self, policy: Retry, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        self.started: float | None = None
        self.attempt = 0

    def clear(self) -> None:
        """The operation succeeded: the next failure starts a new window."""
        self.started, self.attempt = None, 0

    async def wait(self, error: PyMongoError) -> None:
        """Back off before the next attempt, or raise if there is to be none."""
        if not is_transient(error):
            raise ServerError(self.operation, error) from None
        policy = self.policy
        now = policy.clock()
        if self.started is None:
            self.started = now
        left = self.started + policy.seconds - now
        if left <= 0:
            raise ServerUnavailableError(self.operation, error, now - self.started) from None
        delay = min(policy.cap, policy.base * 2**self.attempt)
        delay = min(random.uniform(delay / 2, delay), left)
        self.attempt += 1
        policy.retries += 1
        log.warning("%s: %s; retrying in %.1f s", self.operation, describe(error), delay)
        if policy.on_retry is not None:
            policy.on_retry(self.operation, error, delay)
        await policy.sleep(delay)
