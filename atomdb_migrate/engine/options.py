"""What a run of upgrade or downgrade is told: its direction and its options.

`RunOptions` is carried from the command line (or from code) to the runner.
Its values are checked when it is made; the write concern is made, and
checked, by `write_concern` alone (`RunOptions.concern`).

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pymongo.write_concern import WriteConcern

from ..core.bson_rules import INT32_MAX
from ..driver.retry import DEFAULT_CALL_TIMEOUT, DEFAULT_RETRY_FOR
from ..exceptions import short_repr

#: The default number of documents per batch.
DEFAULT_BATCH_SIZE = 1000

#: How many documents a dry run transforms and restores.
DEFAULT_SAMPLE = 20

#: The most documents per read and per bulk write (the driver's batch size
#: is a 32-bit number).
MAX_BATCH_SIZE = INT32_MAX

#: The longest ``--wtimeout``, in milliseconds (a 32-bit number, 24 days).
MAX_WTIMEOUT = INT32_MAX

#: The most members a write concern may name: a replica set has at most 50.
MAX_MEMBERS = 50


@dataclass(frozen=True)
class Direction:
    """Which way a run takes documents."""

    #: "upgrade" or "downgrade": the command, and the history's name for it.
    name: Literal["upgrade", "downgrade"]
    #: What a document taken the whole way is ("upgraded").
    verb: str
    #: Whether the steps' downgrade functions run.
    down: bool


UPGRADE = Direction("upgrade", "upgraded", down=False)
DOWNGRADE = Direction("downgrade", "downgraded", down=True)


@dataclass(frozen=True)
class RunOptions:
    """How a run of upgrade or downgrade goes: carried from the command line to the runner."""

    #: Documents per read and per bulk write.
    batch_size: int = DEFAULT_BATCH_SIZE
    #: Record documents whose chain fails and go on, instead of stopping.
    continue_on_error: bool = False
    #: Write nothing: survey, and run the chain on a sample.
    dry_run: bool = False
    #: With `dry_run`: how many documents to transform and restore.
    sample: int = DEFAULT_SAMPLE
    #: Wait for the lock if another runner holds it.
    wait: bool = False
    #: Run the steps made only of operations as server-side updates.
    server_side: bool = True
    #: Only the documents the latest run with failures recorded.
    retry_failed: bool = False
    #: Seconds a server call may keep failing transiently (a dropped
    #: connection, an election, a write-concern error) before the run stops.
    retry_for: float = DEFAULT_RETRY_FOR
    #: The write concern of the run's writes: "majority", or a number of
    #: members (None: the URL's), and its timeout in milliseconds.
    write_concern: str | None = None
    wtimeout: int | None = None
    #: At most this many documents per second (None: as fast as it goes).
    max_rate: float | None = None
    #: Pause while a secondary lags the primary by more than this many
    #: seconds (None: never).
    max_lag: float | None = None
    #: Keep the toolkit's index on ``{__version__: 1, _id: 1}`` in each
    #: collection an upgrade runs on (the ``version-index`` setting).
    version_index: bool = True
    #: Seconds one server call may go unanswered before it counts as a
    #: transient fault (``--call-timeout``).
    call_timeout: float = DEFAULT_CALL_TIMEOUT

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.sample < 0:
            raise ValueError("sample must be at least 0")
        if self.retry_for < 0:
            raise ValueError("retry_for must be at least 0")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError("max_rate must be above 0")
        if self.max_lag is not None and self.max_lag < 0:
            raise ValueError("max_lag must be at least 0")
        if self.wtimeout is not None and self.wtimeout < 0:
            raise ValueError("wtimeout must be at least 0")
        if self.write_concern is not None:
            self.concern()  # refuses a bad one
        self._check_finite()

    def _check_finite(self) -> None:
        """Refuse NaN, infinity and numbers no server call can carry."""
        for name in ("retry_for", "max_rate", "max_lag", "call_timeout"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
        if not self.call_timeout > 0:
            raise ValueError("call_timeout must be above 0")
        if self.batch_size > MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be at most {MAX_BATCH_SIZE}")
        if self.wtimeout is not None and self.wtimeout > MAX_WTIMEOUT:
            raise ValueError(f"wtimeout must be at most {MAX_WTIMEOUT} ms")

    def concern(self) -> WriteConcern | None:
        """The write concern of the run's writes (None: the URL's), made by `write_concern`."""
        if self.write_concern is None and self.wtimeout is None:
            return None
        return write_concern(self.write_concern, self.wtimeout)

    def written_with(self) -> dict[str, Any] | None:
        """The write concern asked for, as the history records it (None: the URL's)."""
        concern = self.concern()
        return None if concern is None else concern.document


def write_concern(w: str | None, wtimeout: int | None) -> WriteConcern:
    """``--write-concern`` (``majority`` or a number) and ``--wtimeout`` as a `WriteConcern`.

    Raises
    ------
    ValueError
        For anything else, for 0 (an unacknowledged write cannot be guarded:
        the runner counts what the server says it matched), and for more
        members than a replica set can have.

    """
    value: str | int | None = w
    if w is not None and w != "majority":
        try:
            value = int(w)
        except ValueError:
            raise ValueError(f"write concern must be 'majority' or a number, not {w!r}") from None
        if value < 0:
            raise ValueError(f"write concern must be 'majority' or a number, not {w!r}")
        if value == 0:
            raise ValueError(
                "write concern must be 'majority' or a number of at least 1, not 0: an "
                "unacknowledged write cannot be guarded (the run counts what the server "
                "matched)"
            )
        if value > MAX_MEMBERS:
            raise ValueError(
                f"write concern must be 'majority' or a number up to {MAX_MEMBERS} (the most "
                f"members a replica set has), not {short_repr(w, 40)}"
            )
    if wtimeout is not None and not 0 <= wtimeout <= MAX_WTIMEOUT:
        raise ValueError(f"wtimeout must be between 0 and {MAX_WTIMEOUT} ms")
    return WriteConcern(w=value, wtimeout=wtimeout)
