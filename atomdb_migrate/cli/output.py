"""What the ``atomdb-migrate`` command prints: errors (as JSON with ``--json``),
log lines (the URL's password masked), and what each command found or did.

"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import click

from ..commands.check import DatabaseCheck
from ..commands.errors import mask
from ..commands.history import Failures, Step
from ..commands.several import Visit
from ..commands.status import ModelStatus
from ..commands.upgrade import (
    DOWNGRADE,
    UPGRADE,
    ModelReport,
    RenameReport,
    RunResult,
)
from ..exceptions import LockAliveError, LockHeldError, short_repr, shorten
from . import at_once
from .documents import (
    chain_step_json,
    check_json,
    dumps,
    failures_json,
    model_run_json,
    pass_lines,
    run_json,
    version_index_line,
)
from .exits import (
    EXIT_CHECK,
    EXIT_CHECKSUM,
    EXIT_DUPLICATE,
    EXIT_STEP,
    CommandError,
    command_error,
)
from .releases import release_label
from .workers import describe_owner


class HasUrl(Protocol):
    """Where the URL the command uses can be read (with its password)."""

    @property
    def url(self) -> str | None: ...


# ----------------------------------------------------------------------
# --json: errors as JSON too
# ----------------------------------------------------------------------
#: The key of click's context meta set when the command was given ``--json``:
#: its errors and log lines come out as JSON objects, one a line, on stderr.
JSON_ERRORS = "atomdb_migrate.json_errors"


def json_asked() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(JSON_ERRORS))


def _error_json(error: click.ClickException, **facts: Any) -> str:
    return json.dumps({"error": error.format_message(), "exit": error.exit_code, **facts})


def echo_error(error: click.ClickException, **facts: Any) -> None:
    """An error that does not end the command, on stderr: ``Error: ...``, or with
    ``--json`` a JSON object with `facts` (a database, say)."""
    if json_asked():
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
        code, error = 0, None
        try:
            with _as_json(ctx):
                return super().invoke(ctx)
        except click.ClickException as exc:
            code, error = exc.exit_code, exc.format_message()
            raise
        except click.exceptions.Exit as exc:
            code = exc.exit_code
            raise
        except BaseException as exc:  # (a bug: Python's traceback, exit 1)
            code, error = 1, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _print_document(ctx, code, error)

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


#: The key of click's context meta holding the document a command given
#: ``--json`` prints on standard output when it ends, however it ends.
JSON_DOCUMENT = "atomdb_migrate.json_document"


def json_document(**fields: Any) -> dict[str, Any]:
    """The document the running command prints when it ends (with its `error`,
    None on success, and its `exit` code, the process's): fill it as it goes."""
    document = dict(fields)
    click.get_current_context().meta[JSON_DOCUMENT] = document
    return document


def _print_document(ctx: click.Context, code: int, error: str | None) -> None:
    document = ctx.meta.pop(JSON_DOCUMENT, None)
    if document is not None:
        click.echo(dumps({**document, "error": error, "exit": code}))


@contextmanager
def _as_json(ctx: click.Context) -> Iterator[None]:
    """Errors raised in the block come out as JSON when ``--json`` was given."""
    try:
        yield
    except click.ClickException as exc:
        if ctx.meta.get(JSON_ERRORS) and not isinstance(exc, JsonError):
            raise JsonError(exc) from None
        raise


class LogFormat(logging.Formatter):
    """``LEVEL: message``; with ``--json``, a JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        database = at_once.current()
        if json_asked():
            line = {"log": record.levelname.lower(), "message": record.getMessage()}
            return json.dumps(line if database is None else {**line, "database": database})
        return f"{record.levelname}: {at_once.prefix(record.getMessage())}"


class Masking(logging.Filter):
    """Removes the URL's password (wherever the URL came from) from every log record."""

    def __init__(self, state: HasUrl) -> None:
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage(), self.state.url)
        record.args = ()
        return True


def log_to_stderr(source: HasUrl) -> None:
    """The toolkit's log lines (warnings and up) on stderr, one a line, masked."""
    handler = logging.StreamHandler()
    handler.addFilter(Masking(source))
    handler.setFormatter(LogFormat())
    logger = logging.getLogger("atomdb_migrate")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def plural(n: int, what: str) -> str:
    """``1 database``, ``2 databases``."""
    return f"{n} {what}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------
# Several databases
# ----------------------------------------------------------------------
def say_database_failed(name: str, exc: BaseException, error: click.ClickException) -> None:
    """A database's error, with the command that clears it in that database alone
    (while several databases run at once, the line names the database)."""
    hint = _database_hint(exc, error, name)
    if at_once.current() is not None and not json_asked():
        said = f"database {at_once.shown(name)}: {error.format_message()}"
        error = CommandError(said, error.exit_code)
    echo_error(error, database=name, **({"hint": hint.strip()} if hint else {}))
    if hint and not json_asked():
        click.echo(hint, err=True)


def _database_hint(exc: BaseException, error: click.ClickException, name: str) -> str:
    """The command that clears a stale lock, or accepts changed checksums, in this
    database alone (the error names the command without a database)."""
    if isinstance(exc, LockHeldError) and not isinstance(exc, LockAliveError):
        what, args = "if that runner is dead, clear this database's lock with", "unlock"
    elif error.exit_code == EXIT_CHECKSUM:
        what, args = "after review, record them in this database with", "stamp --accept-checksums"
    else:
        return ""
    return f"  {what} `atomdb-migrate --database {at_once.shown(shlex.quote(name))} {args}`"


def say_visit(visit: Visit) -> None:
    """The summary of several databases: what each came to, a line each."""
    names = visit.names or []
    click.echo(f"{plural(len(names), 'database')}:")
    for name in names:
        click.echo(f"  {at_once.shown(name)}: {visit.outcome(name)}")


def visit_failure(visit: Visit) -> str:
    """What a visit of several databases with failures ends with."""
    names = visit.names or []
    if visit.canary_failed:
        others = plural(len(names) - 1, "other database")
        canary = at_once.shown(visit.canary)
        return f"the canary database {canary} failed; {others} left as they were"
    return f"{len(visit.failures)} of {plural(len(names), 'database')} failed: " + ", ".join(
        at_once.shown(name) for name, _ in visit.failures
    )


# ----------------------------------------------------------------------
# upgrade, downgrade
# ----------------------------------------------------------------------
def summarize(result: RunResult, *, stopped: bool = False) -> None:
    """A line per model (and its steps, renames, failures); with `stopped`, what a run
    that stopped on an error did before it stopped: its collections' changes too.

    Raises the run's error when documents failed, a unique index cannot be
    built, or (dry run) a sample or a server step would fail.

    """
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
            _say_dry_run(r)
        else:
            _say_run(r, verb)
    error = _run_error(result)
    if error is not None:
        raise error


def summarize_json(
    result: RunResult, document: dict[str, Any], database: str | None, *, stopped: bool = False
) -> None:
    """`summarize` for ``--json``: each model's report into `document`'s
    ``models``; raises the run's error as `summarize` does."""
    document["models"].extend(model_run_json(database, r, result.dry_run) for r in result.reports)
    error = None if stopped else _run_error(result)
    if error is not None:
        raise error


def _say_dry_run(r: ModelReport) -> None:
    """What a dry run found of a model: its steps, the documents it would leave,
    and its samples (summed up, each failure on its own line)."""
    click.echo(f"{r.model}: {r.pending} documents not at version {r.target} (dry run)")
    for line in step_lines(r, dry_run=True):
        click.echo(f"  {line}")
    if r.newer:
        stored = ", ".join(f"{v}: {n}" for v, n in r.newer_versions.items())
        click.echo(
            f"  {r.newer} documents newer than the code would be left alone (stored at {stored})"
        )
    _say_samples(r.samples)


def _say_samples(samples: list[dict[str, Any]]) -> None:
    """A dry run's sample: how many documents, from which versions, how many restore;
    then each one that fails."""
    if not samples:
        return
    versions: dict[str, int] = {}
    for s in samples:
        versions[str(s["from"])] = versions.get(str(s["from"]), 0) + 1
    failing = [s for s in samples if not s.get("ok")]
    stored = ", ".join(f"{v}: {n}" for v, n in versions.items())
    verdict = (
        "all restore"
        if not failing
        else f"{len(samples) - len(failing)} restore, {len(failing)} fail"
    )
    click.echo(f"  sample of {plural(len(samples), 'document')} (stored at {stored}): {verdict}")
    for s in failing:
        click.echo(f"  sample _id={s['_id']!r} from {s['from']}: FAILS: {s.get('error')}")


def step_name(label: str, direction: str) -> str:
    """A step as a run in `direction` takes it: ``1 -> 2``, and taken back by a
    downgrade, ``2 -> 1 (downgrade)`` (reports and the history name a step by its
    versions, ``"1 -> 2"``, whichever way it is taken)."""
    if direction != "downgrade":
        return label
    older, _, newer = label.partition(" -> ")
    return f"{newer} -> {older} (downgrade)" if newer else f"{label} (downgrade)"


def step_lines(r: ModelReport, *, dry_run: bool) -> list[str]:
    """A line per step of the model's plan, in the order taken, named in the run's
    direction, with the documents found at its version or before (upgrading; after,
    downgrading) when the run started; the steps that ran on the server with
    the documents they changed (dry run: would change)."""
    lines = []
    for label in [*r.steps, *(s for s in r.server_steps if s not in r.steps)]:
        n = r.steps.get(label, 0)
        where = ""
        if label in r.server_steps:
            if not dry_run:
                n = r.server_steps[label]
            where = " (on the server)"
        failing = r.would_refuse.get(label)
        if failing:
            where += (
                f"; it would refuse {failing} of those stored at its version "
                "(they would stay there, failed)"
            )
        lines.append(f"step {step_name(label, r.direction)}: {n} documents{where}")
    return lines + pass_lines(r, partial(step_name, direction=r.direction), dry_run=dry_run)


def _say_run(r: ModelReport, verb: str) -> None:
    """What a run did to a model's documents, and each step it took."""
    click.echo(
        f"{r.model}: {r.migrated} {verb} to {r.target}, {r.skipped} skipped "
        f"(changed meanwhile), {r.failed} failed, {r.newer} newer than the code"
    )
    if r.redone:
        click.echo(
            f"  {r.redone} documents written again: the server lost writes it had "
            "acknowledged (a restart or a rollback); use --write-concern majority"
        )
    if r.newer and r.left_newer is None:
        click.echo(
            f"  warning: {r.newer} documents are newer than this code and were left "
            "alone; `check --pending` fails until they are at its version"
        )
    for line in step_lines(r, dry_run=False):
        click.echo(f"  {line}")
    for f in r.failures[:10]:
        click.echo(f"  failed _id={f['_id']!r}: {f['error']}")


def _run_error(result: RunResult) -> click.ClickException | None:
    """The error a run that finished ends with, if it does."""
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
        return CommandError(
            f"{failed} documents failed; `atomdb-migrate history --failures` shows "
            f"{'the first ' if shown < failed else ''}{shown}, and {again}",
            EXIT_STEP,
        )
    refused = [e for r in result.reports for e in r.refused]
    if refused:
        return CommandError(
            f"{len(refused)} unique {'index' if len(refused) == 1 else 'indexes'} cannot be "
            "built: " + "; ".join(f"{e.model}: {e.index}: {e.shared}" for e in refused),
            EXIT_DUPLICATE,
        )
    left = result.left_newer
    if left:  # a downgrade (dry: would) left documents newer than the code: its exit
        return command_error(left[0], None)
    if result.dry_run and any(not s.get("ok") for r in result.reports for s in r.samples):
        verb = result.reports[0].direction  # upgrade or downgrade: one way a run
        return CommandError(f"some sampled documents do not {verb} cleanly", EXIT_STEP)
    if result.dry_run and any(r.would_refuse for r in result.reports):
        failing = sum(n for r in result.reports for n in r.would_refuse.values())
        return CommandError(f"{failing} documents would fail a step on the server", EXIT_STEP)
    return None


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
        click.echo(f"{r.model}: {version_index_line(r.version_index)}")


def timestamp(started: Any) -> str:
    """When a run started, to the second ('?' if its record holds no date)."""
    return f"{started:%Y-%m-%d %H:%M:%S}" if isinstance(started, datetime) else "?"


def describe_run(run: dict[str, Any]) -> str:
    """One line for a recorded run; fields a record lacks (or holds oddly) show as '?'.
    A run of workers adds what each did (`describe_owner`)."""
    when = timestamp(run.get("started_at"))
    line = (
        f"  {when} {run.get('command', '?')} {run.get('outcome', '?')}"
        f" {run.get('duration_s', '?')}s{release_label(run)} {_run_detail(run)}"
    )
    workers = run.get("workers")
    said = "  " + shorten(at_once.shown(" ".join(line.split())), 500)
    if isinstance(workers, dict):  # a run of workers
        said += "".join(f"\n      {describe_owner(k, w)}" for k, w in workers.items())
    return said


#: What a run's counts hold besides the numbers `describe_run` shows.
_NOT_COUNTS = (
    "steps",
    "target",
    "server_steps",
    "server_passes",
    "renames",
    "collection",
    "by_version",
)


def _run_detail(run: dict[str, Any]) -> str:
    """What a recorded run did: per model, its counts (or that it had nothing to do);
    for ``stamp --accept-checksums``, the checksums it recorded."""
    arguments = run.get("arguments")
    if isinstance(arguments, dict) and arguments.get("accept_checksums"):
        sums = run.get("checksums")
        names = arguments.get("models")
        of = f" of {', '.join(map(str, names))}" if isinstance(names, list) and names else ""
        return f"recorded the checksums of {len(sums) if isinstance(sums, list) else '?'} steps{of}"
    models = run.get("models")
    verb = "downgraded" if run.get("command") == "downgrade" else "upgraded"
    return "; ".join(
        f"{m}: {_model_counts(c, verb)}"
        for m, c in (models.items() if isinstance(models, dict) else ())
        if isinstance(c, dict)
    )


def _model_counts(counts: dict[str, Any], verb: str) -> str:
    """A model's counts in a recorded run: those that are not zero, and what it did to
    the collection; "nothing to do" when it had none."""
    shown = [
        f"{k} {v}" + (f" at {counts.get('target', '?')}" if k == "stamped" else "")
        for k, v in counts.items()
        if k not in _NOT_COUNTS and v
    ]
    shown += _collection_lines(counts)
    if shown:
        return ", ".join(shown)
    planned = counts.get("steps")
    if isinstance(planned, dict) and any(planned.values()):
        return f"{verb} 0"  # it had documents to take, and took none
    if "stamped" in counts:
        return f"stamped 0 at {counts.get('target', '?')}"
    return "nothing to do"


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


# ----------------------------------------------------------------------
# status, history, check, unlock, revision
# ----------------------------------------------------------------------
def status_json(database: str, s: ModelStatus) -> dict[str, Any]:
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


def print_status(rows: list[ModelStatus]) -> None:
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
        line = f"{s.model}: code at {s.version}; stored {stored}; {s.pending} pending{extra}"
        click.echo(at_once.shown(line))


def print_chains(chains: dict[str, list[Step]], above: Mapping[Step, str]) -> None:
    """Each model's chain, a line a step; those `above` the code's version say so."""
    for name, steps in sorted(chains.items()):
        click.echo(f"{name}:")
        if not steps:
            click.echo("  (no steps)")
        for s in steps:
            down = "" if s.downgrade_fn else " [no downgrade]"
            mark = f" (above the code's version {above[s]})" if s in above else ""
            line = f"  {s.from_version} -> {s.to_version}  {s.message}{down}{mark}"
            click.echo(f"{line}  ({s.source})")


def history_json(
    chains: dict[str, list[Step]], runs: list[dict[str, Any]], above: Mapping[Step, str]
) -> dict[str, Any]:
    """What ``history --json`` prints besides its error and exit: each model's chain
    (the steps `above` the code's version marked), and the recorded runs."""
    return {
        "chains": {
            name: [chain_step_json(s, above=s in above) for s in steps]
            for name, steps in sorted(chains.items())
        },
        "runs": [run_json(run, _run_detail(run)) for run in runs],
    }


def history_failures_json(found: Failures | None) -> dict[str, Any]:
    """What ``history --failures --json`` prints besides its error and exit."""
    return failures_json(found, _run_detail(found.run) if found is not None else "")


def print_failures(found: Failures | None) -> None:
    """The documents the latest run with failures recorded, and what to do next."""
    if found is None:
        click.echo("no recorded run has failed documents")
        return
    click.echo(describe_run(found.run).strip())
    for f in found.failures:
        step = " ".join(str(f.get("step") or "?").splitlines())
        click.echo(f"  {f.get('model', '?')} _id={short_repr(f.get('_id'))} step {step}")
        click.echo(f"    {' '.join(str(f.get('error', '?')).splitlines())}")
    if found.retried_by is not None:
        click.echo(
            "retried by the run started "
            f"{timestamp(found.retried_by.get('started_at'))}, which succeeded"
        )
    elif found.run.get("command") == "downgrade":
        click.echo("fix the downgrade functions, then run the downgrade again")
    else:
        click.echo("retry them with: atomdb-migrate upgrade --retry-failed")


def say_check(found: DatabaseCheck, url: str | None, *, quiet: bool = False) -> str:
    """What a check found, on stderr (not `quiet`); raises when it found a problem."""
    if not quiet:
        for p in found.problems + found.changed:
            click.echo(mask(p, url), err=True)
        for note in found.notes:
            click.echo(f"note: {mask(note, url)}", err=True)
    if found.changed:
        raise CommandError(
            f"{len(found.problems) + len(found.changed)} problem(s) found, "
            f"{len(found.changed)} of them an applied step that changed",
            EXIT_CHECKSUM,
        )
    if found.problems:
        raise CommandError(f"{len(found.problems)} problem(s) found", EXIT_CHECK)
    if found.once:
        return ""  # the databases are still to check
    if not quiet:
        click.echo("ok")
    return "ok"


def check_found_json(found: DatabaseCheck, document: dict[str, Any], url: str | None) -> str:
    """`say_check` for ``--json``: what a check found into `document`'s
    ``checks`` (the URL's password masked); raises as `say_check` does."""
    found_json = check_json(found)
    for key in ("problems", "changed", "notes"):
        found_json[key] = [mask(line, url) for line in found_json[key]]
    document["checks"].append(found_json)
    return say_check(found, None, quiet=True)
