"""The ``atomdb-migrate`` command: options in, one call to `command`, text out.

Exit codes:

==  ==========================================================
0   success
1   ``check`` found a problem (or documents pending, with ``--pending``)
2   usage: unknown option, missing argument
3   configuration: settings, models, step modules, broken chains
4   connection: the server cannot be reached, or refuses the credentials
5   lock: another runner holds it, or the lease was lost
6   step failed: a step raised or returned something wrong, or
    documents failed with --continue-on-error
7   the server kept failing transiently for longer than --retry-for
8   ``check``: a step applied to the database changed since
9   a unique index cannot be built: stored documents share a key
130 interrupted (Ctrl-C): what was written is recorded in the history
==  ==========================================================

With several databases, the code of the first database that failed.

"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shlex
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from functools import partial, update_wrapper, wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from pymongo.errors import PyMongoError

from ..commands import command
from ..commands.command import RunResult
from ..commands.config import load_config
from ..core.masking import mask
from ..core.storage import VERSION_INDEX
from ..driver.retry import DEFAULT_CALL_TIMEOUT, DEFAULT_RETRY_FOR, describe, is_transient
from ..engine.renames import RenameReport
from ..engine.runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLE,
    DOWNGRADE,
    UPGRADE,
    Direction,
    ModelReport,
    RunOptions,
    write_concern,
)
from ..exceptions import (
    ChainError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    InvalidVersionError,
    LockAliveError,
    LockError,
    LockHeldError,
    MigrateError,
    NewerDocumentError,
    ServerError,
    ServerUnavailableError,
    StepError,
    UniqueIndexError,
    UnknownModelError,
    WriteConcernRefusedError,
    short_repr,
    shorten,
)
from .progress import progress_for

EXIT_CHECK = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_CONNECTION = 4
EXIT_LOCK = 5
EXIT_STEP = 6
EXIT_UNAVAILABLE = 7
EXIT_CHECKSUM = 8
EXIT_DUPLICATE = 9
EXIT_INTERRUPTED = 130

#: Which exit code each kind of error gives; the first match wins.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (UniqueIndexError, EXIT_DUPLICATE),
    (ConnectionFailedError, EXIT_CONNECTION),
    (ServerUnavailableError, EXIT_UNAVAILABLE),
    (WriteConcernRefusedError, EXIT_CONFIG),
    (ServerError, EXIT_CONNECTION),
    (LockError, EXIT_LOCK),
    (StepError, EXIT_STEP),
    (NewerDocumentError, EXIT_STEP),
    (ConflictError, EXIT_STEP),
    (ConfigError, EXIT_CONFIG),
    (UnknownModelError, EXIT_CONFIG),
    (ChainError, EXIT_CONFIG),
    (InvalidVersionError, EXIT_CONFIG),
    (MigrateError, EXIT_CONFIG),
]


#: The largest whole number an option takes: the server's counts and sizes
#: are 32-bit numbers.
MAX_COUNT = 2**31 - 1

#: The longest time an option takes, in seconds: it becomes a time limit in
#: milliseconds, which the server takes as a 32-bit number (about 24.8 days).
MAX_SECONDS = MAX_COUNT / 1000


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


class CommandError(click.ClickException):
    """A domain error, shown as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


# ----------------------------------------------------------------------
# --json: errors as JSON too
# ----------------------------------------------------------------------
#: The key of click's context meta set when the command was given ``--json``:
#: its errors and log lines come out as JSON objects, one a line, on stderr.
JSON_ERRORS = "atomdb_migrate.json_errors"


def _json_asked() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(JSON_ERRORS))


def _error_json(error: click.ClickException, **facts: Any) -> str:
    return json.dumps({"error": error.format_message(), "exit": error.exit_code, **facts})


def echo_error(error: click.ClickException, **facts: Any) -> None:
    """An error that does not end the command, on stderr: ``Error: ...``, or with
    ``--json`` a JSON object with `facts` (a database, say)."""
    if _json_asked():
        click.echo(_error_json(error, **facts), err=True)
    else:
        click.echo(f"Error: {error.format_message()}", err=True)


class JsonError(click.ClickException):
    """The error a command given ``--json`` ends with: ``{"error": ..., "exit": N}``
    on stderr, with the error's own exit code."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self.error = error
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(_error_json(self.error), err=True)


class Group(click.Group):
    """The command group: a command given ``--json`` (any command that takes it)
    reports its errors as JSON too, usage errors included, even those of the
    group's own options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if self._asks_json(args):
            ctx.meta[JSON_ERRORS] = True
        with _as_json(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _as_json(ctx):
            return super().invoke(ctx)

    def _asks_json(self, args: list[str]) -> bool:
        """Whether the arguments name a command that takes ``--json``, and give it
        (before a ``--``)."""
        given = args[: args.index("--")] if "--" in args else args
        for i, arg in enumerate(given):
            cmd = self.commands.get(arg)
            takes = cmd is not None and any("--json" in getattr(p, "opts", ()) for p in cmd.params)
            if takes and "--json" in given[i + 1 :]:
                return True  # (an option's value may spell a command's name: look on)
        return False


@contextmanager
def _as_json(ctx: click.Context) -> Iterator[None]:
    """Errors raised in the block come out as JSON when ``--json`` was given."""
    try:
        yield
    except click.ClickException as exc:
        if ctx.meta.get(JSON_ERRORS) and not isinstance(exc, JsonError):
            raise JsonError(exc) from None
        raise


class _LogFormat(logging.Formatter):
    """``LEVEL: message``; with ``--json``, a JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        if _json_asked():
            return json.dumps({"log": record.levelname.lower(), "message": record.getMessage()})
        return f"{record.levelname}: {record.getMessage()}"


class _Masking(logging.Filter):
    """Removes the URL's password (wherever the URL came from) from every log record."""

    def __init__(self, state: State) -> None:
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage(), self.state.url)
        record.args = ()
        return True


class State:
    """What the group hands its commands: the settings and, lazily, a workspace."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._workspace: command.Workspace | None = None

    @property
    def workspace(self) -> command.Workspace:
        if self._workspace is None:
            self._workspace = command.Workspace(load_config(**self.options))
        return self._workspace

    @property
    def url(self) -> str | None:
        try:
            return self.workspace.config.url
        except MigrateError:
            return self.options.get("url")


pass_state = click.make_pass_decorator(State)


def _run_interruptibly(main: Coroutine[Any, Any, Any]) -> Any:
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


F = TypeVar("F", bound=Callable[..., Any])


def _command_error(exc: Exception, url: str | None) -> click.ClickException:
    """The error a command ends with, and its exit code, for what it raised."""
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, MigrateError):
        code = next(c for kind, c in EXIT_CODES if isinstance(exc, kind))
        return CommandError(shorten(mask(str(exc), url), 2000), code)
    # A server error the commands did not expect: never a traceback.
    code = EXIT_UNAVAILABLE if is_transient(exc) else EXIT_CONNECTION
    return CommandError(shorten(mask(f"the server failed: {describe(exc)}", url), 2000), code)


async def _each_database(
    state: State,
    each: Callable[[command.Workspace], Awaitable[str]],
    *,
    canary: str | None = None,
    headers: bool = True,
    load: bool = True,
) -> None:
    """Run `each` on every database the settings name, one after the other.

    With one database, `each` runs on the workspace as it is. With several,
    each gets its own workspace (one connection, a lock per database); a
    failure is reported and the next database goes on, except for the
    canary, which stops the run. A summary line per database ends it (what
    `each` returned, or the error), and the command fails with the first
    failure's exit code. Without `load`, the models and step modules are not
    loaded first (`unlock` needs none of them).

    """
    ws = state.workspace
    if not ws.config.several_databases and canary is None:
        await each(ws)
        return
    if load:
        ws.load()  # a models module or step module that does not load fails once
    names = await command.databases(ws, canary=canary)
    outcomes: dict[str, str] = {}
    failures: list[tuple[str, click.ClickException]] = []
    left = "not reached: the canary failed"
    try:
        for name in names:
            if headers:
                click.echo(f"database {name}:")
            if not await command.database_exists(ws, name):
                outcomes[name] = "left alone: no longer on the server"
                continue
            sub = ws.for_database(name)
            try:
                outcomes[name] = await each(sub)
            except (MigrateError, PyMongoError, click.ClickException) as exc:
                error = _command_error(exc, state.url)
                hint = _database_hint(exc, error, name)
                echo_error(error, database=name, **({"hint": hint.strip()} if hint else {}))
                if hint and not _json_asked():
                    click.echo(hint, err=True)
                outcomes[name] = f"failed (exit {error.exit_code})"
                failures.append((name, error))
                if name == canary:
                    break
            finally:
                await sub.close()
    except BaseException:
        left = "not reached: interrupted"
        raise
    finally:
        if headers:
            click.echo(f"{_count(len(names), 'database')}:")
            for name in names:
                click.echo(f"  {name}: {outcomes.get(name, left)}")
    if not failures:
        return
    first, error = failures[0]
    if first == canary:
        others = _count(len(names) - 1, "other database")
        message = f"the canary database {first} failed; {others} left as they were"
    else:
        message = f"{len(failures)} of {_count(len(names), 'database')} failed: " + ", ".join(
            name for name, _ in failures
        )
    raise CommandError(message, error.exit_code)


def _database_hint(exc: BaseException, error: click.ClickException, name: str) -> str:
    """The command that clears a stale lock, or accepts changed checksums, in this
    database alone (the error names the command without a database)."""
    if isinstance(exc, LockHeldError) and not isinstance(exc, LockAliveError):
        what, args = "if that runner is dead, clear this database's lock with", "unlock"
    elif error.exit_code == EXIT_CHECKSUM:
        what, args = "after review, record them in this database with", "stamp --accept-checksums"
    else:
        return ""
    return f"  {what} `atomdb-migrate --database {shlex.quote(name)} {args}`"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


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
            return _run_interruptibly(main())
        except (MigrateError, PyMongoError) as exc:
            raise _command_error(exc, state.url) from None
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise CommandError(
                "interrupted; what was written is recorded in the history, "
                "and the next run carries on",
                EXIT_INTERRUPTED,
            ) from None

    return update_wrapper(wrapper, fn)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", help="MongoDB URL. Env: ATOMDB_MIGRATE_URL, then MONGO_URL.")
@click.option(
    "--database",
    "database",
    multiple=True,
    help="Database name (default: the one in the URL); repeat it for several databases.",
)
@click.option(
    "--databases",
    "databases",
    metavar="REGEX",
    help="Every database on the server whose name matches (re.search; not admin, config, local).",
)
@click.option(
    "--models",
    "models",
    multiple=True,
    metavar="MODULE",
    help="Module to import so its models register (repeatable).",
)
@click.option("--migrations", type=click.Path(path_type=Path), help="The migrations directory.")
@click.option("--timeout", type=seconds(0.1), help="Seconds to reach the server [10].")
@click.version_option(package_name="atomdb-migrate")
@click.pass_context
def main(
    ctx: click.Context,
    url: str | None,
    database: tuple[str, ...],
    databases: str | None,
    models: tuple[str, ...],
    migrations: Path | None,
    timeout: float | None,
) -> None:
    """Versioned schema migrations for MongoDB data stored by atom-db.

    Every option can also be set in [tool.atomdb-migrate] in pyproject.toml.
    """
    ctx.obj = State(
        url=url,
        database=database or None,
        databases=databases,
        models=models,
        migrations=migrations,
        timeout=timeout,
    )
    handler = logging.StreamHandler()
    handler.addFilter(_Masking(ctx.obj))
    handler.setFormatter(_LogFormat())
    logger = logging.getLogger("atomdb_migrate")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


@main.command()
@click.option(
    "--migrations",
    "folder",
    default="migrations",
    show_default=True,
    help="The directory to create, relative to the working directory.",
)
def init(folder: str) -> None:
    """Create the migrations directory and the [tool.atomdb-migrate] table."""
    try:
        done = command.init(Path.cwd(), folder)
    except MigrateError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None
    for line in done:
        click.echo(line)


@main.command()
@click.option("-m", "--message", required=True, help="What the step does (its docstring).")
@click.option("--model", required=True, help="The model's __model__ name or class name.")
@click.option(
    "--autogenerate",
    is_flag=True,
    help="Infer the step's operations from the model and the newest schema snapshot.",
)
@pass_state
@run_async
async def revision(state: State, message: str, model: str, autogenerate: bool) -> None:
    """Write a new step module from the model's newest version to the next."""
    done = command.revision(state.workspace, message, model, autogenerate=autogenerate)
    click.echo(f"wrote {done.path} ({done.model} {done.from_version} -> {done.to_version})")
    if autogenerate and done.diff is None:
        click.echo("  no earlier step records a schema: write the fields' operations by hand")
    elif done.diff is not None:
        click.echo(f"  {done.diff.describe() or 'no change to the fields since the snapshot'}")
    for line in done.indexes:
        click.echo(f"  {line} (__indexes__)")
    if done.moved_from:
        click.echo(
            f"  the model's steps were written under {done.moved_from}: "
            + (
                "the step starts with ops.rename_model"
                if autogenerate
                else f"add ops.rename_model({done.moved_from!r}, {done.model!r}) to it"
            )
        )
    for hint in done.hints:
        click.echo(f"  {hint}")
    if done.bump:
        click.echo(f'  then set __version__ = "{done.to_version}" on the model')


#: The options of both upgrade and downgrade; each becomes a `RunOptions` field.
def _check_write_concern(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        try:
            write_concern(value, None)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


_RUN_OPTIONS = [
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
        callback=_check_write_concern,
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
_UPGRADE_OPTIONS = [
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

_PROGRESS = click.option(
    "--progress/--no-progress", default=True, help="A bar on a terminal, plain lines otherwise."
)


def _run_options(*extra: Any) -> Callable[[F], F]:
    """Add the run options, handed to the command as one `RunOptions` (``options``)."""
    names = {f.name for f in fields(RunOptions)}

    def decorate(fn: F) -> F:
        @wraps(fn)
        def gather(*args: Any, **kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return fn(*args, options=RunOptions(**given), **kwargs)

        wrapped: Any = gather
        for option in reversed([*_RUN_OPTIONS, *extra, _PROGRESS]):
            wrapped = option(wrapped)
        return cast(F, wrapped)

    return decorate


async def _run_and_summarize(
    direction: Direction, options: RunOptions, progress: bool, call: Callable[..., Any]
) -> RunResult:
    result = RunResult(direction.name, options.dry_run)
    try:
        await call(
            options=options,
            progress=progress_for(enabled=progress and not options.dry_run),
            result=result,
        )
    except BaseException:
        _summarize(result, stopped=True)
        raise
    _summarize(result)
    return result


@main.command()
@click.argument("models", nargs=-1)
@click.option("--to", "to", help="Target version (one model only; default: the code's).")
@click.option(
    "--canary",
    metavar="DB",
    help="With several databases: upgrade this one first, and stop if it fails.",
)
@_run_options(*_UPGRADE_OPTIONS)
@pass_state
@run_async
async def upgrade(
    state: State,
    models: tuple[str, ...],
    to: str | None,
    canary: str | None,
    options: RunOptions,
    progress: bool,
) -> None:
    """Bring stored documents to the code's versions (all models by default).

    With several databases (--database repeated, --databases), each in turn,
    under its own lock, and a summary at the end.
    """

    async def each(ws: command.Workspace) -> str:
        call = partial(command.upgrade, ws, models, to=to)
        result = await _run_and_summarize(UPGRADE, options, progress, call)
        if options.dry_run:
            return f"{sum(r.pending for r in result.reports)} documents to upgrade (dry run)"
        return f"{sum(r.migrated for r in result.reports)} documents upgraded"

    await _each_database(state, each, canary=canary)


@main.command()
@click.argument("model")
@click.option("--to", "to", required=True, help="The version to take documents back to.")
@_run_options()
@pass_state
@run_async
async def downgrade(state: State, model: str, to: str, options: RunOptions, progress: bool) -> None:
    """Take a model's documents back to a version, with the downgrade functions."""
    await _run_and_summarize(
        DOWNGRADE, options, progress, partial(command.downgrade, state.workspace, model, to)
    )


def _summarize(result: RunResult, *, stopped: bool = False) -> None:
    """A line per model (and its steps, renames, failures); with `stopped`, what a run
    that stopped on an error did before it stopped: its collections' changes too."""
    verb = (DOWNGRADE if result.command == "downgrade" else UPGRADE).verb
    if stopped:
        for r in result.reports:
            _say_collection_changes(r, result.dry_run)
        if not result.dry_run and any(r.migrated or r.unconfirmed for r in result.reports):
            for r in result.reports:
                click.echo(f"{r.model}: {r.migrated} {verb} to {r.target} before the run stopped")
                if r.unconfirmed:
                    click.echo(f"  {_unconfirmed(r.unconfirmed)}")
        return
    for r in result.reports:
        _say_collection_changes(r, result.dry_run)
        if result.dry_run:
            click.echo(f"{r.model}: {r.pending} documents not at version {r.target} (dry run)")
            for label, n in r.steps.items():
                where = " (on the server)" if label in r.server_steps else ""
                failing = r.would_refuse.get(label)
                if failing:
                    where += (
                        f"; it would refuse {failing} of those stored at its version "
                        "(they would stay there, failed)"
                    )
                click.echo(f"  step {label}: {n} documents{where}")
            for s in r.samples:
                verdict = "restores" if s.get("ok") else f"FAILS: {s.get('error')}"
                click.echo(f"  sample _id={s['_id']!r} from {s['from']}: {verdict}")
            continue
        click.echo(
            f"{r.model}: {r.migrated} {verb} to {r.target}, {r.skipped} skipped "
            f"(changed meanwhile), {r.failed} failed, {r.newer} newer than the code"
        )
        if r.redone:
            click.echo(
                f"  {r.redone} documents written again: the server lost writes it had "
                "acknowledged (a restart or a rollback); use --write-concern majority"
            )
        if r.newer:
            click.echo(
                f"  warning: {r.newer} documents are newer than this code and were left "
                "alone; `check --pending` fails until they are at its version"
            )
        for label, n in r.server_steps.items():
            click.echo(f"  step {label} ran on the server: {n} documents")
        for f in r.failures[:10]:
            click.echo(f"  failed _id={f['_id']!r}: {f['error']}")
    if not result.dry_run and any(r.failed for r in result.reports):
        failed = sum(r.failed for r in result.reports)
        shown = len(result.failures)
        if result.command == "downgrade":
            again = "fix the downgrade functions and run the downgrade again"
        elif shown < failed:
            again = (
                f"`upgrade --retry-failed` retries those {shown}; `upgrade "
                "--continue-on-error` takes all of them again"
            )
        else:
            again = "`upgrade --retry-failed` retries them"
        raise CommandError(
            f"{failed} documents failed; `atomdb-migrate history --failures` shows "
            f"{'the first ' if shown < failed else ''}{shown}, and {again}",
            EXIT_STEP,
        )
    refused = [e for r in result.reports for e in r.refused]
    if refused:
        raise CommandError(
            f"{len(refused)} unique {'index' if len(refused) == 1 else 'indexes'} cannot be "
            "built: " + "; ".join(f"{e.model}: {e.index}: {e.shared}" for e in refused),
            EXIT_DUPLICATE,
        )
    if result.dry_run and any(not s.get("ok") for r in result.reports for s in r.samples):
        raise CommandError("some sampled documents do not upgrade cleanly", EXIT_STEP)
    if result.dry_run and any(r.would_refuse for r in result.reports):
        failing = sum(n for r in result.reports for n in r.would_refuse.values())
        raise CommandError(f"{failing} documents would fail a step on the server", EXIT_STEP)


def _unconfirmed(n: int) -> str:
    """What a run that stopped says of the writes whose answer it never had."""
    return (
        f"and up to {n} more: their write was sent, but its answer never came and they "
        "were not at the new version when read back (the server may still apply it); "
        "`status` tells, and a rerun takes those still behind"
    )


def _say_collection_changes(r: ModelReport, dry_run: bool) -> None:
    """What a run did (dry, would do) to a model's collections: renames, indexes,
    the validator, the toolkit's version index."""
    for rename in r.renames:
        click.echo(_describe_rename(rename, dry_run))
    for line in r.indexes:
        click.echo(f"{r.model}: {line}")
    if r.respelled:
        click.echo(
            f"{r.model}: {r.respelled} documents at version {r.target} stored it in another "
            f"form (a number, or another spelling): {'to be ' if dry_run else ''}rewritten "
            f"as {r.target!r}, the form a validator and the queries take"
        )
    if r.version_index:
        click.echo(
            f"{r.model}: {'created' if r.version_index == 'created' else 'would create'} "
            f"the index {VERSION_INDEX} on {{__version__: 1, _id: 1}}, which status, check "
            "and upgrade read through (version-index = false in [tool.atomdb-migrate] to "
            "go without)"
        )


def _when(started: Any) -> str:
    return f"{started:%Y-%m-%d %H:%M:%S}" if isinstance(started, datetime) else "?"


def _describe_run(run: dict[str, Any]) -> str:
    """One line for a recorded run; fields a record lacks (or holds oddly) show as '?'."""
    models = run.get("models")
    counts = "; ".join(
        f"{m}: "
        + ", ".join(
            f"{k} {v}"
            for k, v in c.items()
            if k not in ("steps", "target", "server_steps", "renames", "collection") and v
        )
        + "".join(f", {line}" for line in _collection_lines(c))
        for m, c in (models.items() if isinstance(models, dict) else ())
        if isinstance(c, dict)
    )
    when = _when(run.get("started_at"))
    line = (
        f"  {when} {run.get('command', '?')} {run.get('outcome', '?')}"
        f" {run.get('duration_s', '?')}s {counts}"
    )
    return "  " + shorten(" ".join(line.split()), 500)


def _collection_lines(counts: dict[str, Any]) -> list[str]:
    """What a recorded run did to a model's collection (a line each, as printed)."""
    found = counts.get("collection")
    return [str(line) for line in found] if isinstance(found, list) else []


def _describe_rename(rename: RenameReport, dry_run: bool) -> str:
    if dry_run:
        how = {"merge": "would merge collection", "rename": "would rename collection"}.get(
            rename.collection, "would rewrite the references to"
        )
        return f"{how} {rename.old} into {rename.new}"
    if rename.collection == "renamed":
        done = f"renamed collection {rename.old} to {rename.new}"
    elif rename.collection == "merged":
        done = f"merged collection {rename.old} into {rename.new} ({rename.moved} documents moved"
        if rename.replaced:
            done += f", {rename.replaced} replaced by the copy at a higher version"
        if rename.discarded:
            done += (
                f", {rename.discarded} copies under {rename.old} dropped: {rename.new} held "
                "them at the same or a higher version"
            )
        done += ")"
    else:
        done = f"{rename.old} is now {rename.new}"
    return f"{done}; {rename.references} documents' references rewritten"


@main.command()
@click.argument("models", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
@run_async
async def status(state: State, models: tuple[str, ...], as_json: bool) -> None:
    """Per model: the code's version and the stored documents at each version.

    With several databases, each in turn, and a summary at the end.
    """
    found: list[dict[str, Any]] = []
    answered = False

    async def each(ws: command.Workspace) -> str:
        nonlocal answered
        rows = await command.status(ws, models)
        answered = True
        if as_json:
            found.extend(_status_json(ws.config.database_name(), s) for s in rows)
        else:
            _print_status(rows)
        pending = sum(s.pending for s in rows)
        return f"{pending} documents pending" if pending else "up to date"

    try:
        await _each_database(state, each, headers=not as_json)
    finally:
        if as_json and answered:
            click.echo(json.dumps(found, indent=2))


def _status_json(database: str, s: command.ModelStatus) -> dict[str, Any]:
    return {
        "database": database,
        "model": s.model,
        "version": s.version,
        "stored": s.stored,
        "total": s.total,
        "pending": s.pending,
        "newer": s.newer,
        "invalid": s.invalid,
        "former": s.former,
        "unversioned_since": (s.unversioned_since.isoformat() if s.unversioned_since else None),
    }


def _print_status(rows: list[command.ModelStatus]) -> None:
    if not rows:
        click.echo("no versioned models: give --models or set `models` in pyproject.toml")
    for s in rows:
        stored = ", ".join(f"{v}: {n}" for v, n in s.stored.items()) or "no documents"
        extra = "".join(
            f", {n} {what}"
            for what, n in (("newer than the code", s.newer), ("invalid", s.invalid))
            if n
        )
        extra += "".join(
            f", {n} still under former name {old} (moved by upgrade)" for old, n in s.former.items()
        )
        if s.unversioned_since is not None:
            extra += (
                f"; {s.unversioned} saved without a version since the upgrade of "
                f"{s.unversioned_since:%Y-%m-%d %H:%M}: code that does not version this "
                "model still writes it"
            )
        click.echo(f"{s.model}: code at {s.version}; stored {stored}; {s.pending} pending{extra}")


@main.command()
@click.option(
    "--limit",
    type=count(1),
    default=20,
    show_default=True,
    help="How many recorded runs to show.",
)
@click.option(
    "--failures",
    "show_failures",
    is_flag=True,
    help="The documents the latest run with failures recorded: _id, step and error.",
)
@pass_state
@run_async
async def history(state: State, limit: int, show_failures: bool) -> None:
    """Each model's chain of steps, and the recorded runs."""
    if show_failures:
        found = await command.failures(state.workspace)
        if found is None:
            click.echo("no recorded run has failed documents")
            return
        click.echo(_describe_run(found.run).strip())
        for f in found.failures:
            step = " ".join(str(f.get("step") or "?").splitlines())
            click.echo(f"  {f.get('model', '?')} _id={short_repr(f.get('_id'))} step {step}")
            click.echo(f"    {' '.join(str(f.get('error', '?')).splitlines())}")
        if found.retried_by is not None:
            click.echo(
                "retried by the run started "
                f"{_when(found.retried_by.get('started_at'))}, which succeeded"
            )
        elif found.run.get("command") == "downgrade":
            click.echo("fix the downgrade functions, then run the downgrade again")
        else:
            click.echo("retry them with: atomdb-migrate upgrade --retry-failed")
        return
    chains, runs = await command.history(state.workspace, limit)
    for name, steps in sorted(chains.items()):
        click.echo(f"{name}:")
        if not steps:
            click.echo("  (no steps)")
        for s in steps:
            down = "" if s.downgrade_fn else " [no downgrade]"
            click.echo(f"  {s.from_version} -> {s.to_version}  {s.message}{down}  ({s.source})")
    if runs:
        click.echo("runs:")
    for run in runs:
        click.echo(_describe_run(run))


@main.command()
@click.option("--pending", is_flag=True, help="Also fail while stored documents are behind.")
@click.option(
    "--checksums",
    is_flag=True,
    help="Also fail when a step applied to the database changed since (implied by --pending).",
)
@click.option(
    "--indexes",
    is_flag=True,
    help="Also fail when a collection's indexes are not its model's __indexes__ "
    "(implied by --pending).",
)
@pass_state
@run_async
async def check(state: State, pending: bool, checksums: bool, indexes: bool) -> None:
    """Exit 0 when every chain is complete and every step module loads.

    What it asks of a database (--pending, --checksums, --indexes) it asks of
    each database given, with a summary at the end.
    """

    async def each(ws: command.Workspace, static: bool = True) -> str:
        problems = await command.check(ws, pending=pending, indexes=indexes, static=static)
        changed: list[str] = []
        if pending or checksums:
            changed = await command.changed_steps(ws)
        for p in problems + changed:
            click.echo(mask(p, state.url), err=True)
        if pending:
            for note in await command.advice(ws):
                click.echo(f"note: {mask(note, state.url)}", err=True)
        if changed:
            raise CommandError(
                f"{len(problems) + len(changed)} problem(s) found, "
                f"{len(changed)} of them an applied step that changed",
                EXIT_CHECKSUM,
            )
        if problems:
            raise CommandError(f"{len(problems)} problem(s) found", EXIT_CHECK)
        click.echo("ok")
        return "ok"

    if not (pending or checksums or indexes):
        await each(state.workspace)
        return
    if state.workspace.config.several_databases:
        # What does not depend on the database is said once, and stops the
        # check: a broken chain or step module says nothing of the databases.
        problems = await command.check(state.workspace)
        for p in problems:
            click.echo(mask(p, state.url), err=True)
        if problems:
            raise CommandError(f"{len(problems)} problem(s) found", EXIT_CHECK)
        await _each_database(state, partial(each, static=False))
        return
    await _each_database(state, each)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask before clearing the lock.")
@click.option(
    "--force", is_flag=True, help="Clear the lock even while its holder renews its lease."
)
@pass_state
@run_async
async def unlock(state: State, yes: bool, force: bool) -> None:
    """Clear the migration lock that a killed runner left behind.

    With several databases, each database's lock in turn, and a summary at the end.
    """

    async def each(ws: command.Workspace) -> str:
        found = await command.holder(ws)
        if found is None:
            click.echo("the migration lock is free")
            return "the migration lock is free"
        click.echo(
            f"held by {found.get('command', '?')} on host {found.get('host', '?')} "
            f"(pid {found.get('pid', '?')}) since {found.get('acquired_at', '?')}; last "
            f"renewed {found.get('renewed_at', '?')}; lease until {found.get('expires_at', '?')}"
        )
        try:
            agreed = yes or click.confirm("clear it?", default=False)
        except click.Abort:  # no answer (no terminal, end of input)
            agreed = False
        if not agreed:
            raise CommandError("the lock was left as it is (give --yes to clear it)", EXIT_LOCK)
        cleared = await command.unlock(ws, force=force)
        said = "cleared the migration lock" if cleared else "the migration lock is free"
        click.echo(said)
        return said

    await _each_database(state, each, load=False)


@main.command()
@click.argument("model", required=False)
@click.argument("version", required=False)
@click.option("--wait", is_flag=True, help="Wait for the lock if another runner holds it.")
@click.option("--force", is_flag=True, help="Stamp a version the model's chain does not know.")
@click.option(
    "--accept-checksums",
    is_flag=True,
    help="Record the checksums of the steps as they are now (of MODEL, or of every model).",
)
@pass_state
@run_async
async def stamp(
    state: State,
    model: str | None,
    version: str | None,
    wait: bool,
    force: bool,
    accept_checksums: bool,
) -> None:
    """Set the stored version of a model's documents without transforming them.

    With --accept-checksums, record the steps' checksums instead, after
    reviewing a step that changed since it was applied.

    """
    if accept_checksums:
        if version is not None:
            raise click.UsageError("--accept-checksums takes at most a MODEL, no VERSION")
        models = (model,) if model else ()

        async def each(ws: command.Workspace) -> str:
            n, changed = await command.accept_checksums(ws, models, wait=wait)
            said = f"recorded the checksums of {n} steps ({changed} changed)"
            click.echo(said)
            return said

        await _each_database(state, each)
        return
    if model is None or version is None:
        raise click.UsageError("stamp needs a MODEL and a VERSION (or --accept-checksums)")
    n = await command.stamp(state.workspace, model, version, wait=wait, force=force)
    click.echo(f"stamped {n} documents at version {version}")
