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

from ..commands.upgrade import DECLARED, INT32_MAX, Declared, RunOptions

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


def _checked(declared: Declared) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback refusing what the declaration's check refuses (a usage error, exit 2)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and declared.check is not None:
            try:
                declared.check(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return callback


_TYPES: dict[str, Callable[[Declared], Any]] = {
    "count": lambda d: click.IntRange(
        None if d.low is None else int(d.low),
        None if d.high is None else int(d.high),
        min_open=d.low_open,
    ),
}
_TYPES["seconds"] = _TYPES["number"] = lambda d: Finite(d.low, d.high, min_open=d.low_open)


def run_option(name: str, declared: Declared, default: Any) -> Callable[[F], F]:
    """The click option of the `RunOptions` field `name`, from its declaration."""
    assert declared.flag is not None
    given: dict[str, Any] = {"help": declared.help, "metavar": declared.metavar}
    if declared.kind == "flag":
        return click.option(declared.flag, name, is_flag=True, help=declared.help)
    if declared.kind != "text":
        given["type"] = _TYPES[declared.kind](declared)
    if declared.check is not None:
        given["callback"] = _checked(declared)
    if default is not None:
        given.update(default=default, show_default=True)
    return click.option(declared.flag, name, **given)


def _declared_options(*, upgrade_only: bool) -> list[Callable[[F], F]]:
    defaults = {f.name: f.default for f in fields(RunOptions)}
    return [
        run_option(name, declared, defaults[name])
        for name, declared in DECLARED.items()
        if declared.flag is not None and declared.upgrade_only == upgrade_only
    ]


#: The options of both upgrade and downgrade; each becomes a `RunOptions` field
#: (declared there: `RunOptions`' ``option`` metadata).
RUN_OPTIONS = _declared_options(upgrade_only=False)

#: The options of upgrade only.
UPGRADE_OPTIONS = _declared_options(upgrade_only=True)

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
