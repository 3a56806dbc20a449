"""The ``atomdb-migrate`` command: options in, one call to `command`, text out.

The group and its commands are here; each parses its options, calls the
command of `atomdb_migrate.command` and hands what it returns to `output`.
The exit codes are in `exits`, the shared options in `options`, how a
command runs (the event loop, several databases) in `running`.

"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import click

from ..commands import command
from ..commands.upgrade import DOWNGRADE, UPGRADE, Direction, RunOptions
from ..exceptions import MigrateError
from . import at_once
from .exits import EXIT_CONFIG, EXIT_DECLINED, EXIT_LOCK, CommandError
from .options import UPGRADE_OPTIONS, count, run_options, seconds
from .output import (
    Group,
    check_found_json,
    describe_run,
    history_failures_json,
    history_json,
    json_document,
    log_to_stderr,
    print_chains,
    print_failures,
    print_status,
    say_check,
    status_json,
    summarize,
    summarize_json,
)
from .progress import progress_for
from .prompts import asks_first, confirmed, describe_holder
from .releases import release_json, say_release_plan
from .revisions import say_revision
from .running import State, each_database, run_async
from .workers import describe_workers, workers_json

pass_state = click.make_pass_decorator(State)


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
    log_to_stderr(ctx.obj)


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
@click.option(
    "--model",
    "models",
    multiple=True,
    help="The model's __model__ name or class name; repeat it for a module per model.",
)
@click.option("--all", "every", is_flag=True, help="A module for every versioned model.")
@click.option(
    "--autogenerate",
    is_flag=True,
    help="Infer the step's operations from the model and the newest schema snapshot.",
)
@pass_state
@run_async
async def revision(
    state: State, message: str, models: tuple[str, ...], every: bool, autogenerate: bool
) -> None:
    """Write a new step module from the model's newest version to the next.

    With several --model (or --all), one module per model, each with MESSAGE.
    """
    if every == bool(models):
        raise click.UsageError("give --model NAME (repeatable) or --all, not both")
    names = () if every else models
    for done in command.revisions(state.workspace, message, names, autogenerate=autogenerate):
        say_revision(done, autogenerate)


#: The option of the commands that print JSON.
JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (see docs/cli.md#json)."
)


async def _run_and_summarize(
    direction: Direction,
    options: RunOptions,
    progress: bool,
    call: Callable[..., Any],
    document: dict[str, Any] | None = None,
    database: str | None = None,
) -> command.RunResult:
    """Run `call`, and print what it did: as text, or into `document` (``--json``)."""
    result = command.RunResult(direction.name, options.dry_run)
    try:
        await call(
            options=options,
            progress=progress_for(
                enabled=progress and not options.dry_run,
                as_json=document is not None,
                database=at_once.current(),
            ),
            result=result,
        )
    except BaseException:
        if document is None:
            at_once.header()
            summarize(result, stopped=True)
        else:
            summarize_json(result, document, database, stopped=True)
        raise
    if document is None:
        at_once.header()
        summarize(result)
    else:
        summarize_json(result, document, database)
    return result


def _run_document(name: str, options: RunOptions, as_json: bool) -> dict[str, Any] | None:
    """The document an upgrade or downgrade given ``--json`` prints, or None."""
    if not as_json:
        return None
    return json_document(command=name, dry_run=options.dry_run, release=None, models=[])


@main.command()
@click.argument("models", nargs=-1)
@click.option("--to", "to", help="Target version (one model only; default: the code's).")
@click.option(
    "--canary",
    metavar="DB",
    help="With several databases: upgrade this one first, and stop if it fails.",
)
@run_options(*UPGRADE_OPTIONS)
@JSON_OPTION
@pass_state
@run_async
async def upgrade(
    state: State,
    models: tuple[str, ...],
    to: str | None,
    canary: str | None,
    options: RunOptions,
    progress: bool,
    as_json: bool,
) -> None:
    """Bring stored documents to the code's versions (all models by default).

    With several databases (--database repeated, --databases), each in turn
    (--workers N: up to N at once), under its own lock, and a summary at the end.
    """

    document = _run_document("upgrade", options, as_json)
    several = state.workspace.config.several_databases
    # With several databases, --workers N is the number of databases at once:
    # each database's run has one runner.
    run = replace(options, workers=1) if several else options

    async def each(ws: command.Workspace) -> str:
        call = partial(command.upgrade, ws, models, to=to)
        database = ws.config.database_name() if as_json else None
        result = await _run_and_summarize(UPGRADE, run, progress, call, document, database)
        if options.dry_run:
            return f"{sum(r.pending for r in result.reports)} documents to upgrade (dry run)"
        return f"{sum(r.migrated for r in result.reports)} documents upgraded"

    await each_database(
        state,
        partial(command.each_database, state.workspace, each),
        canary=canary,
        headers=not as_json,
        workers=options.workers if several else 1,
        ended=None if document is None else lambda v: at_once.in_order(document["models"], v.names),
    )


@main.command()
@click.argument("model", required=False)
@click.option("--to", "to", help="The version to take MODEL's documents back to.")
@click.option(
    "--release",
    "back",
    type=click.IntRange(max=-1),
    metavar="-N",
    help="Take back the last N releases (-1: the last): each model they moved, to the "
    "version they found it at.",
)
@click.option(
    "--to-release",
    metavar="NAME",
    help="Take back every release after NAME: each model to where NAME left it.",
)
@run_options()
@JSON_OPTION
@pass_state
@run_async
async def downgrade(
    state: State,
    model: str | None,
    to: str | None,
    back: int | None,
    to_release: str | None,
    options: RunOptions,
    progress: bool,
    as_json: bool,
) -> None:
    """Take a model's documents back to a version (MODEL --to V), or every model
    back to where an earlier release left it (--release -1, --to-release NAME),
    with the downgrade functions."""
    releases = back is not None or to_release is not None
    if releases and (model is not None or to is not None):
        raise click.UsageError("--release and --to-release take no MODEL and no --to")
    if back is not None and to_release is not None:
        raise click.UsageError("give --release -N or --to-release NAME, not both")
    if not releases and (model is None or to is None):
        raise click.UsageError(
            "downgrade needs MODEL and --to VERSION, or --release -N, or --to-release NAME"
        )
    document = _run_document("downgrade", options, as_json)
    database = state.workspace.config.database_name() if as_json else None
    call: Callable[..., Any]
    if model is not None and to is not None:
        call = partial(command.downgrade, state.workspace, model, to)
    else:
        plan = await command.plan_releases(state.workspace, back=back, to_release=to_release)
        if document is not None:
            document["release"] = release_json(plan)
        else:
            say_release_plan(plan, options.dry_run)
        call = partial(command.downgrade_releases, state.workspace, plan=plan)
    await _run_and_summarize(DOWNGRADE, options, progress, call, document, database)


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
        workers = await command.run_status(ws)
        answered = True
        if as_json:
            name = ws.config.database_name()
            found.extend({**status_json(name, s), "workers": workers_json(workers)} for s in rows)
        else:
            print_status(rows)
            for line in describe_workers(workers):
                click.echo(line)
        pending = sum(s.pending for s in rows)
        return f"{pending} documents pending" if pending else "up to date"

    try:
        await each_database(
            state, partial(command.each_database, state.workspace, each), headers=not as_json
        )
    finally:
        if as_json and answered:
            click.echo(json.dumps(found, indent=2))


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
@JSON_OPTION
@pass_state
@run_async
async def history(state: State, limit: int, show_failures: bool, as_json: bool) -> None:
    """Each model's chain of steps, and the recorded runs."""
    if as_json:
        if show_failures:
            document = json_document(command="history", run=None, documents=[], retried_by=None)
        else:
            document = json_document(command="history", chains={}, runs=[])
        if show_failures:
            document.update(history_failures_json(await command.failures(state.workspace)))
        else:
            chains, runs = await command.history(state.workspace, limit)
            above = command.above_code(state.workspace, chains)
            document.update(history_json(chains, runs, above))
        return
    if show_failures:
        print_failures(await command.failures(state.workspace))
        return
    chains, runs = await command.history(state.workspace, limit)
    print_chains(chains, command.above_code(state.workspace, chains))
    if runs:
        click.echo("runs:")
    for run in runs:
        click.echo(describe_run(run))


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
@click.option(
    "--allow-newer-steps",
    is_flag=True,
    help="Accept steps above a model's version (a rollback build: the old code with the "
    "newer release's step modules), as for a model with __on_newer__ = 'downgrade'; they "
    "must still load, chain from the model's version and each have a downgrade.",
)
@JSON_OPTION
@pass_state
@run_async
async def check(
    state: State,
    pending: bool,
    checksums: bool,
    indexes: bool,
    allow_newer_steps: bool,
    as_json: bool,
) -> None:
    """Exit 0 when every chain is complete and every step module loads.

    What it asks of a database (--pending, --checksums, --indexes) it asks of
    each database given, with a summary at the end.
    """

    document = json_document(command="check", checks=[]) if as_json else None

    def found(asked: command.DatabaseCheck) -> str:
        if document is not None:
            return check_found_json(asked, document, state.url)
        return say_check(asked, state.url)

    async def visit(rules: command.Visit) -> None:
        await command.check_databases(
            state.workspace,
            found,
            pending=pending,
            checksums=checksums,
            indexes=indexes,
            visit=rules,
            allow_newer_steps=allow_newer_steps,
        )

    await each_database(state, visit, headers=not as_json)


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
        click.echo(describe_holder(found))
        if not confirmed("clear it?", yes=yes):
            raise CommandError("the lock was left as it is (give --yes to clear it)", EXIT_LOCK)
        cleared = await command.unlock(ws, force=force)
        said = "cleared the migration lock" if cleared else "the migration lock is free"
        if cleared and cleared.get("freed_ranges"):
            said += f"; {cleared['freed_ranges']} ranges of its workers are pending again"
        click.echo(said)
        return said

    await each_database(state, partial(command.each_database, state.workspace, each), load=False)


@main.command()
@click.argument("model", required=False)
@click.argument("version", required=False)
@click.option("--wait", is_flag=True, help="Wait for the lock if another runner holds it.")
@click.option("--force", is_flag=True, help="Stamp a version the model's chain does not know.")
@click.option(
    "--dry-run", is_flag=True, help="Say how many documents it would change; change none."
)
@click.option("--yes", is_flag=True, help="Do not ask before stamping (it asks on a terminal).")
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
    dry_run: bool,
    yes: bool,
    accept_checksums: bool,
) -> None:
    """Set the stored version of a model's documents without transforming them.

    On a terminal it says how many documents it would change and asks first
    (not with --yes). With --accept-checksums, record the steps' checksums
    instead, after reviewing a step that changed since it was applied.

    """
    if accept_checksums:
        if version is not None:
            raise click.UsageError("--accept-checksums takes at most a MODEL, no VERSION")
        if dry_run:
            raise click.UsageError("--dry-run is for stamp MODEL VERSION, not --accept-checksums")
        models = (model,) if model else ()

        async def each(ws: command.Workspace) -> str:
            n, changed = await command.accept_checksums(ws, models, wait=wait)
            said = f"recorded the checksums of {n} steps ({changed} changed)"
            click.echo(said)
            return said

        await each_database(state, partial(command.each_database, state.workspace, each))
        return
    if model is None or version is None:
        raise click.UsageError("stamp needs a MODEL and a VERSION (or --accept-checksums)")
    if dry_run or asks_first(yes):
        n = await command.stamp(state.workspace, model, version, force=force, dry_run=True)
        if dry_run:
            click.echo(f"would stamp {n} documents at version {version} (dry run)")
            return
        question = (
            f"stamp {n} documents of {model} at version {version}, without transforming them?"
        )
        if n and not confirmed(question, yes=False):  # (none to change: nothing to ask)
            raise CommandError(
                "no document was stamped (give --yes to stamp without asking)", EXIT_DECLINED
            )
    n = await command.stamp(state.workspace, model, version, wait=wait, force=force)
    click.echo(f"stamped {n} documents at version {version}")
