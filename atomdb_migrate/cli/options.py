"""The options shared by several commands, and the types that parse their values.

`run_options` adds the options of a run (upgrade, downgrade) and hands them
to the command as one `RunOptions` (``options``).

"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from functools import wraps
from typing import Any, TypeVar, cast

import click

from ..commands.upgrade import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_RETRY_FOR,
    DEFAULT_SAMPLE,
    INT32_MAX,
    RunOptions,
    write_concern,
)

#: The largest whole number an option takes: the server's counts and sizes
#: are 32-bit numbers.
MAX_COUNT = INT32_MAX

#: The longest time an option takes, in seconds: it becomes a time limit in
#: milliseconds, which the server takes as a 32-bit number (about 24.8 days).
MAX_SECONDS = MAX_COUNT / 1000

F = TypeVar("F", bound=Callable[..., Any])


class Finite(click.FloatRange):
    """A number in a range, refusing NaN and infinity (a usage error, exit 2)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def seconds(minimum: float, *, min_open: bool = False) -> Finite:
    """A finite number of seconds from `minimum` up to `MAX_SECONDS`."""
    return Finite(minimum, MAX_SECONDS, min_open=min_open)


def count(minimum: int) -> click.IntRange:
    """A whole number from `minimum` up to `MAX_COUNT`."""
    return click.IntRange(minimum, MAX_COUNT)


def check_write_concern(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Refuse a write concern the server would not take (a usage error, exit 2)."""
    if value is not None:
        try:
            write_concern(value, None)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


#: The options of both upgrade and downgrade; each becomes a `RunOptions` field.
RUN_OPTIONS = [
    click.option(
        "--dry-run", is_flag=True, help="Write nothing: count per model and step, and try a sample."
    ),
    click.option(
        "--batch-size",
        type=count(1),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Documents per read and per bulk write.",
    ),
    click.option(
        "--continue-on-error", is_flag=True, help="Record documents whose step fails and go on."
    ),
    click.option("--wait", is_flag=True, help="Wait for the lock if another runner holds it."),
    click.option(
        "--retry-for",
        type=seconds(0),
        default=DEFAULT_RETRY_FOR,
        show_default=True,
        metavar="SECONDS",
        help="Retry server calls that fail transiently (an election, a dropped "
        "connection) for this long before the run stops (exit 7).",
    ),
    click.option(
        "--write-concern",
        callback=check_write_concern,
        metavar="W",
        help="The writes' write concern: majority, or a number of members [the URL's].",
    ),
    click.option(
        "--wtimeout",
        type=count(0),
        metavar="MS",
        help="How long a write waits for its write concern [the URL's].",
    ),
    click.option(
        "--max-rate",
        type=Finite(0, min_open=True),
        metavar="DOCS_PER_S",
        help="At most this many documents per second.",
    ),
    click.option(
        "--max-lag",
        type=seconds(0),
        metavar="SECONDS",
        help="On a replica set, pause while a secondary lags the primary by more than this.",
    ),
    click.option(
        "--call-timeout",
        type=seconds(0, min_open=True),
        default=DEFAULT_CALL_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="A server call unanswered for this long is a transient fault: cancelled, and "
        "retried within --retry-for.",
    ),
]

#: The options of upgrade only.
UPGRADE_OPTIONS = [
    click.option(
        "--sample",
        type=count(0),
        default=DEFAULT_SAMPLE,
        show_default=True,
        help="With --dry-run: documents to transform and restore.",
    ),
    click.option(
        "--retry-failed",
        is_flag=True,
        help="Only the documents the latest run with failures recorded (see history --failures).",
    ),
]

#: How a run shows its progress (``progress``, not a `RunOptions` field).
PROGRESS = click.option(
    "--progress/--no-progress", default=True, help="A bar on a terminal, plain lines otherwise."
)


def run_options(*extra: Any) -> Callable[[F], F]:
    """Add the run options, handed to the command as one `RunOptions` (``options``)."""
    names = {f.name for f in fields(RunOptions)}

    def decorate(fn: F) -> F:
        @wraps(fn)
        def gather(*args: Any, **kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return fn(*args, options=RunOptions(**given), **kwargs)

        wrapped: Any = gather
        for option in reversed([*RUN_OPTIONS, *extra, PROGRESS]):
            wrapped = option(wrapped)
        return cast(F, wrapped)

    return decorate
