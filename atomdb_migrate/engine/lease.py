"""The run's lease on the migration lock, as the run's writers see it.

Before each write the lease is held (taken back if it ran out while nobody
took it) and checked on the server (`LeaseLock.verify`), which also keeps
there what the run has written so far. A write that stopped the run is read
back briefly (`RECOUNT_WAIT`); `answer_lost` says whether the server may
still apply it.

"""

from __future__ import annotations

import copy
from functools import partial
from typing import TYPE_CHECKING, Any

from pymongo.errors import ConnectionFailure

from ..driver.retry import Retry
from .report import ModelReport

if TYPE_CHECKING:
    from .lock import LeaseLock

#: What the runner is doing while it checks its lease before a write.
LEASE_CHECK = "checking the migration lock"

#: Seconds to try to read back what a write that stopped the run left
#: (the server may have applied it without its answer coming back).
RECOUNT_WAIT = 5.0


class Lease:
    """The lock a run holds (if any), checked before each of its writes.

    Parameters
    ----------
    retry
        The run's `Retry`, for the check on the server.
    reports
        The run's reports: what the run has written so far.

    """

    def __init__(self, retry: Retry, reports: list[ModelReport]) -> None:
        #: The migration lock; None: the run holds none (a run from code).
        self.lock: LeaseLock | None = None
        self.retry = retry
        self.reports = reports

    async def hold(self) -> None:
        """Before a write: the lease is ours, taken back if it ran out while nobody took it."""
        if self.lock is not None:
            await self.lock.hold()

    async def verify(self) -> None:
        """Before a write: make sure on the server that the lease is still ours, and
        leave there what the run has written so far (`LeaseLock.verify`)."""
        if self.lock is None:
            return
        await self.retry.call(LEASE_CHECK, partial(self.lock.verify, self.progress()))

    def carry(self) -> None:
        """Give the lock what the run has written so far, for its next renewal."""
        if self.lock is not None:
            self.lock.progress = self.progress()

    def progress(self) -> dict[str, Any]:
        """What the run has written so far, by model, as the history records it (a copy)."""
        return copy.deepcopy({r.model: r.counts() for r in self.reports})


def answer_lost(stopped: BaseException) -> bool:
    """Whether a write that stopped the run may have gone unanswered: a try of its
    run of failures (the last one, or any before it) lost its connection.

    Never when the lease check before the write stopped it: the write was not sent.

    """
    if getattr(stopped, "operation", None) == LEASE_CHECK:
        return False
    return bool(getattr(stopped, "answer_lost", False)) or isinstance(
        getattr(stopped, "error", None), ConnectionFailure
    )
