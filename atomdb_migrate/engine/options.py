"""What a run of upgrade or downgrade is told: its direction and its options.

`RunOptions` is carried from the command line (or from code) to the runner.
Its values are checked when it is made; the write concern is made, and
checked, by `write_concern` alone (`RunOptions.concern`).

"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
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

#: The share of a collection pending above which an upgrade drops the version
#: index before its writes and builds it after them: the crossover measured by
#: ``benchmarks/bench_version_index.py --crossover`` (benchmarks/notes.md).
DEFAULT_VERSION_INDEX_REBUILD_AT = 0.4

#: The most workers one process runs (``--workers``).
MAX_WORKERS = 64

#: Seconds ``upgrade --join`` waits for a run of workers to start (``--join-wait``).
DEFAULT_JOIN_WAIT = 60.0

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


#: The longest time an option takes, in seconds: it becomes a time limit in
#: milliseconds, which the server takes as a 32-bit number (about 24.8 days).
MAX_SECONDS = INT32_MAX / 1000

#: What an option's value is: a switch, a whole number, a time in seconds, a
#: number (a fraction allowed), or text.
Kind = Literal["flag", "count", "seconds", "number", "text"]


@dataclass(frozen=True)
class Declared:
    """How one `RunOptions` field is given, checked and recorded.

    Each field of `RunOptions` carries one (its ``metadata["option"]``,
    written with `option`): the command line makes its click option from it,
    `RunOptions` checks a value against it, and the history records the
    fields it marks. A new run option is a new field here, and the code that
    uses it.

    """

    #: The command-line flag (``--batch-size``); None: set from code or by a
    #: project setting only.
    flag: str | None
    #: What the value is (`Kind`).
    kind: Kind
    #: The flag's help, one line.
    help: str = ""
    #: The smallest value taken (None: no bound), and whether it is excluded.
    low: float | None = None
    low_open: bool = False
    #: The largest value taken (None: no bound).
    high: float | None = None
    #: The unit said when a value is past `high` (``ms``).
    unit: str = ""
    #: The flag's value, as shown in the help (``SECONDS``).
    metavar: str | None = None
    #: Whether only upgrade takes it (not downgrade).
    upgrade_only: bool = False
    #: Whether the history records it among the run's arguments.
    recorded: bool = True
    #: The project setting (a `Config` attribute) that may turn it off.
    setting: str | None = None
    #: What refuses a value beyond the bounds (raises `ValueError`), if anything.
    check: Callable[[Any], object] | None = None

    def refusal(self, name: str, value: Any) -> str | None:
        """Why `value` is not taken (None: it is)."""
        if value is None or self.kind == "flag":
            return None
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                return str(exc)
        if self.kind == "text":
            return None
        if not math.isfinite(value):
            return f"{name} must be a finite number, not {value!r}"
        if self.low is not None and self.low_open and not value > self.low:
            return f"{name} must be above {_shown(self.low)}"
        if self.low is not None and value < self.low:
            return f"{name} must be at least {_shown(self.low)}"
        if self.high is not None and value > self.high:
            unit = f" {self.unit}" if self.unit else ""
            return f"{name} must be at most {_shown(self.high)}{unit}"
        return None


def _shown(bound: float) -> str:
    """A bound as a message says it: whole numbers without a fraction."""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def option(kind: Kind, flag: str | None = None, help: str = "", **given: Any) -> dict[str, Any]:
    """A `RunOptions` field's metadata: how it is given, checked and recorded (`Declared`)."""
    return {"option": Declared(flag, kind, help, **given)}


def declared(name: str) -> Declared:
    """The declaration of the `RunOptions` field `name`."""
    return DECLARED[name]


@dataclass(frozen=True)
class RunOptions:
    """How a run of upgrade or downgrade goes: carried from the command line to the runner.

    Each field declares how it is given on the command line, the values it
    takes and whether the history records it (`option`, `Declared`).

    """

    #: Write nothing: survey, and run the chain on a sample.
    dry_run: bool = field(
        default=False,
        metadata=option(
            "flag",
            "--dry-run",
            "Write nothing: count per model and step, and try a sample.",
            recorded=False,  # a dry run is not recorded at all
        ),
    )
    #: Documents per read and per bulk write.
    batch_size: int = field(
        default=DEFAULT_BATCH_SIZE,
        metadata=option(
            "count",
            "--batch-size",
            "Documents per read and per bulk write.",
            low=1,
            high=MAX_BATCH_SIZE,
        ),
    )
    #: Record documents whose chain fails and go on, instead of stopping.
    continue_on_error: bool = field(
        default=False,
        metadata=option(
            "flag", "--continue-on-error", "Record documents whose step fails and go on."
        ),
    )
    #: Wait for the lock if another runner holds it.
    wait: bool = field(
        default=False,
        metadata=option(
            "flag", "--wait", "Wait for the lock if another runner holds it.", recorded=False
        ),
    )
    #: Seconds a server call may keep failing transiently (a dropped
    #: connection, an election, a write-concern error) before the run stops.
    retry_for: float = field(
        default=DEFAULT_RETRY_FOR,
        metadata=option(
            "seconds",
            "--retry-for",
            "Retry server calls that fail transiently (an election, a dropped "
            "connection) for this long before the run stops (exit 7).",
            low=0,
            high=MAX_SECONDS,
            metavar="SECONDS",
        ),
    )
    #: The write concern of the run's writes: "majority", or a number of
    #: members (None: the URL's), and its timeout in milliseconds.
    write_concern: str | None = field(
        default=None,
        metadata=option(
            "text",
            "--write-concern",
            "The writes' write concern: majority, or a number of members [the URL's].",
            metavar="W",
            check=lambda w: write_concern(w, None),
        ),
    )
    wtimeout: int | None = field(
        default=None,
        metadata=option(
            "count",
            "--wtimeout",
            "How long a write waits for its write concern [the URL's].",
            low=0,
            high=MAX_WTIMEOUT,
            unit="ms",
            metavar="MS",
            recorded=False,  # recorded with the write concern
        ),
    )
    #: At most this many documents per second (None: as fast as it goes).
    max_rate: float | None = field(
        default=None,
        metadata=option(
            "number",
            "--max-rate",
            "At most this many documents per second.",
            low=0,
            low_open=True,
            metavar="DOCS_PER_S",
        ),
    )
    #: Pause while a secondary lags the primary by more than this many
    #: seconds (None: never).
    max_lag: float | None = field(
        default=None,
        metadata=option(
            "seconds",
            "--max-lag",
            "On a replica set, pause while a secondary lags the primary by more than this.",
            low=0,
            high=MAX_SECONDS,
            metavar="SECONDS",
        ),
    )
    #: Seconds one server call may go unanswered before it counts as a
    #: transient fault (``--call-timeout``).
    call_timeout: float = field(
        default=DEFAULT_CALL_TIMEOUT,
        metadata=option(
            "seconds",
            "--call-timeout",
            "A server call unanswered for this long is a transient fault: cancelled, and "
            "retried within --retry-for.",
            low=0,
            low_open=True,
            high=MAX_SECONDS,
            metavar="SECONDS",
        ),
    )
    #: With `dry_run`: how many documents to transform and restore.
    sample: int = field(
        default=DEFAULT_SAMPLE,
        metadata=option(
            "count",
            "--sample",
            "With --dry-run: documents to transform and restore.",
            low=0,
            high=INT32_MAX,
            recorded=False,
        ),
    )
    #: Only the documents the latest run with failures recorded.
    retry_failed: bool = field(
        default=False,
        metadata=option(
            "flag",
            "--retry-failed",
            "Only the documents the latest run with failures recorded (see history --failures).",
            upgrade_only=True,
            recorded=False,  # recorded as what the run was given (``only``)
        ),
    )
    #: The release's name, recorded in the history (``arguments.release``) for
    #: ``downgrade --to-release NAME``; None: the code's versions of the run's
    #: models (``app.User=3,app.Order=2``).
    release: str | None = field(
        default=None,
        metadata=option(
            "text",
            "--release",
            "Name this release in the history, for downgrade --to-release "
            "[the models' versions: app.User=3,app.Order=2].",
            metavar="NAME",
            upgrade_only=True,
        ),
    )
    #: How many workers share the run: each claims ranges of ``_id`` from the
    #: run's record and upgrades them; with several databases, how many
    #: databases run at once (1: one runner, as before).
    workers: int = field(
        default=1,
        metadata=option(
            "count",
            "--workers",
            "Workers sharing the run: ranges of _id claimed through the database; with "
            "several databases, how many run at once.",
            low=1,
            high=MAX_WORKERS,
            metavar="N",
            upgrade_only=True,
        ),
    )
    #: Join the run of workers in progress (another process's ``upgrade
    #: --workers N``) for the same models and target, instead of starting one.
    join: bool = field(
        default=False,
        metadata=option(
            "flag",
            "--join",
            "Join the run of workers in progress for the same models and target, and take "
            "its ranges with --workers workers until none is left.",
            upgrade_only=True,
            recorded=False,
        ),
    )
    #: With ``join``: seconds to wait for a run of workers to start.
    join_wait: float = field(
        default=DEFAULT_JOIN_WAIT,
        metadata=option(
            "seconds",
            "--join-wait",
            "With --join: how long to wait for a run of workers to start.",
            low=0,
            high=MAX_SECONDS,
            metavar="SECONDS",
            upgrade_only=True,
            recorded=False,
        ),
    )
    #: Run the steps made only of operations as server-side updates.
    server_side: bool = field(default=True, metadata=option("flag", recorded=False))
    #: Run consecutive server steps in one pass: one pipeline update with the
    #: stages of each step in order (False: one pass per step).
    fuse_steps: bool = field(default=True, metadata=option("flag", recorded=False))
    #: Keep the toolkit's index on ``{__version__: 1, _id: 1}`` in each
    #: collection an upgrade runs on (the ``version-index`` setting).
    version_index: bool = field(
        default=True, metadata=option("flag", recorded=False, setting="version_index")
    )
    #: Upgrading, the share of a collection pending above which the version
    #: index is dropped before the writes and built once after them (1: never).
    version_index_rebuild_at: float = field(
        default=DEFAULT_VERSION_INDEX_REBUILD_AT,
        metadata=option(
            "number",
            "--version-index-rebuild-at",
            "Above this share of a collection pending, drop the version index before "
            "the writes and build it after them (1: never).",
            low=0,
            high=1,
            upgrade_only=True,
            recorded=False,
            metavar="SHARE",
        ),
    )

    def __post_init__(self) -> None:
        for name, declaration in DECLARED.items():
            refusal = declaration.refusal(name, getattr(self, name))
            if refusal:
                raise ValueError(refusal)
        if self.write_concern is not None or self.wtimeout is not None:
            self.concern()  # refuses a bad one

    def recorded(self) -> dict[str, Any]:
        """The options the history records of a run, by name (the write concern as sent)."""
        found = {name: getattr(self, name) for name, d in DECLARED.items() if d.recorded}
        found["write_concern"] = self.written_with()
        return found

    def with_settings(self, settings: Any) -> RunOptions:
        """These options under a project's settings (a `Config`): a setting off
        turns its option off."""
        changes: dict[str, Any] = {
            name: False
            for name, d in DECLARED.items()
            if d.setting is not None and not getattr(settings, d.setting, True)
        }
        return replace(self, **changes) if changes else self

    def concern(self) -> WriteConcern | None:
        """The write concern of the run's writes (None: the URL's), made by `write_concern`."""
        if self.write_concern is None and self.wtimeout is None:
            return None
        return write_concern(self.write_concern, self.wtimeout)

    def written_with(self) -> dict[str, Any] | None:
        """The write concern asked for, as the history records it (None: the URL's)."""
        concern = self.concern()
        return None if concern is None else concern.document


#: Each `RunOptions` field's declaration, in the order of the fields.
DECLARED: dict[str, Declared] = {f.name: f.metadata["option"] for f in fields(RunOptions)}


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
