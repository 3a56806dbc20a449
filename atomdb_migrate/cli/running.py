"""How a command of the group runs: its `State` (the settings, and a workspace
made when first needed), the event loop (`run_async`, with Ctrl-C
handled), its errors turned into exit codes, and several databases visited
in turn (`each_database`).

"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial, update_wrapper
from typing import Any

import click

from ..commands.config import load_config
from ..commands.errors import COMMAND_ERRORS
from ..commands.several import Visit
from ..commands.workspace import Workspace
from ..exceptions import MigrateError
from . import at_once
from .exits import EXIT_INTERRUPTED, CommandError, command_error
from .output import say_database_failed, say_visit, visit_failure


class State:
    """What the group hands its commands: the settings and, lazily, a workspace."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._workspace: Workspace | None = None

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = Workspace(load_config(**self.options))
        return self._workspace

    @property
    def url(self) -> str | None:
        try:
            return self.workspace.config.url
        except MigrateError:
            return self.options.get("url")


pass_state = click.make_pass_decorator(State)


def run_interruptibly(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main`; the first Ctrl-C cancels it, and later ones wait for it to finish.

    A cancelled run still writes its history record and releases its lock:
    asyncio's own handler would raise `KeyboardInterrupt` on a second
    Ctrl-C in the middle of that, leaving the record "running" and the
    lock held until its lease runs out. Raises `asyncio.CancelledError`
    when interrupted.

    """
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(main)
    with asyncio.Runner() as runner:
        task: asyncio.Task[Any] | None = None
        interrupted = False

        def on_interrupt(signum: int, frame: Any) -> None:
            nonlocal interrupted
            if task is None:
                raise KeyboardInterrupt
            if interrupted:
                click.echo(
                    "still recording the interrupted run and releasing the lock; "
                    "a moment please (SIGKILL to stop at once)",
                    err=True,
                )
                return
            interrupted = True
            runner.get_loop().call_soon_threadsafe(task.cancel)

        async def wrapped() -> Any:
            nonlocal task
            task = asyncio.current_task()
            return await main

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            return runner.run(wrapped())
        finally:
            # Interrupted, the process exits: a later Ctrl-C would only break
            # the driver's shutdown with a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN if interrupted else previous)


def run_async(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async command, close its connection, and turn errors into exit codes."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().find_object(State)
        assert state is not None

        async def main() -> Any:
            try:
                return await fn(*args, **kwargs)
            finally:
                if state._workspace is not None:
                    await state._workspace.close()

        try:
            return run_interruptibly(main())
        except COMMAND_ERRORS as exc:
            raise command_error(exc, state.url) from None
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise CommandError(
                "interrupted; what was written is recorded in the history, "
                "and the next run carries on",
                EXIT_INTERRUPTED,
            ) from None

    return update_wrapper(wrapper, fn)


async def each_database(
    state: State,
    visit: Callable[[Visit], Awaitable[Any]],
    *,
    canary: str | None = None,
    headers: bool = True,
    load: bool = True,
    workers: int = 1,
    ended: Callable[[Visit], None] | None = None,
) -> None:
    """Call `visit` (`command.each_database`, say) with the rules of a visit of
    several databases, and say how it went.

    Each database's errors are reported as they happen, and the visit goes
    on (the canary excepted: see `command.each_database`). With `headers`,
    a line names each database as it starts, and a summary line per
    database ends the visit, even an interrupted one. The command fails with
    the first failure's exit code. Without `load`, the models and step
    modules are not loaded first (`unlock` needs none of them).

    With `workers` above 1, up to that many databases run at once (the
    canary first and alone): each database's lines name it, and its
    ``database NAME:`` line comes with its summary, when it ends (see
    `at_once`). `ended`, if given, is called with the visit when it ends,
    however it ends, before the summary.

    """
    rules = Visit(
        canary=canary,
        load=load,
        catch=(*COMMAND_ERRORS, click.ClickException),
        starting=(lambda name: click.echo(f"database {at_once.shown(name)}:")) if headers else None,
        failed=partial(_failed, state),
        workers=workers,
    )
    if workers > 1:
        rules.starting = at_once.starting
    try:
        await visit(rules)
    finally:
        at_once.stopped()
        if ended is not None:
            ended(rules)
        if headers and rules.names is not None:
            say_visit(rules)
    if rules.failures:
        _, first = rules.failures[0]
        code = command_error(first, state.url).exit_code
        raise CommandError(visit_failure(rules), code)


def _failed(state: State, name: str, exc: BaseException) -> str:
    """Report a database's error; what its summary line says."""
    error = command_error(exc, state.url)
    say_database_failed(name, exc, error)
    return f"failed (exit {error.exit_code})"
