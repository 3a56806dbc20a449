"""`upgrade` and `downgrade`: a run of the engine, under the lock, recorded in
the history.

Also re-exported here, for the callers of the commands (the command line
among them): what a run takes (`RunOptions`, its defaults, `Progress`; its
numbers are 32-bit, up to `INT32_MAX`) and what it gives (`ModelReport`,
`RenameReport`), from the engine and the core.

"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

from bson import ObjectId

from ..core.bson_rules import INT32_MAX
from ..core.masking import mask
from ..core.storage import VERSION_INDEX
from ..driver.retry import DEFAULT_CALL_TIMEOUT, DEFAULT_RETRY_FOR, Retry
from ..engine.history import History, Outcome
from ..engine.lock import LeaseLock
from ..engine.options import (
    DECLARED,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLE,
    DOWNGRADE,
    UPGRADE,
    Declared,
    Direction,
    RunOptions,
    write_concern,
)
from ..engine.ranges import ranges_collection
from ..engine.renames import RenameReport
from ..engine.report import ModelReport, Progress
from ..engine.runner import Runner
from ..exceptions import ConfigError, DowngradeLeftNewerError, MigrateError, shorten
from ..model.versioned import VersionedModel
from ..steps.versions import parse_version
from . import checksums as step_checksums
from .history import failures
from .join import announce, join, run_record, split_for, workers_done
from .workspace import Workspace

__all__ = [
    "DECLARED",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_RETRY_FOR",
    "DEFAULT_SAMPLE",
    "DOWNGRADE",
    "FINISH_RETRY",
    "INT32_MAX",
    "UPGRADE",
    "VERSION_INDEX",
    "Declared",
    "Direction",
    "ModelReport",
    "Progress",
    "RenameReport",
    "RunOptions",
    "RunResult",
    "applied_checksums",
    "downgrade",
    "release_name",
    "upgrade",
    "write_concern",
]

#: Seconds to keep trying to record how a failed run ended, each try bounded
#: by it too: the record fits just past the --retry-for window.
FINISH_RETRY = 2.0


@dataclass
class RunResult:
    """What a run of upgrade or downgrade did, per model.

    Filled as the run goes: a run that stopped on an error (or was
    interrupted) holds the report of every model it started, with the
    documents written before it stopped.

    """

    command: Literal["upgrade", "downgrade"]
    dry_run: bool
    reports: list[ModelReport] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for r in self.reports for f in r.failures]

    @property
    def left_newer(self) -> list[DowngradeLeftNewerError]:
        """Downgrading: per model whose documents newer than the code were left
        (a dry run: would be), why, and which code to run the downgrade from.

        A downgrade that left any did not do its work: the command line
        exits with `DowngradeLeftNewerError`'s code, and the history records
        the run as failed.

        """
        return [r.left_newer for r in self.reports if r.left_newer is not None]


async def upgrade(
    ws: Workspace,
    models: tuple[str, ...] | list[str] = (),
    *,
    to: str | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Bring stored documents to the code's versions (or `to`, for one model).

    Pass `result` to see what was done even when the run raises. With
    ``options.retry_failed``, only the documents the latest run with
    failures recorded (see `failures`) are taken.

    """
    options = options or RunOptions()
    if options.join and (options.dry_run or options.retry_failed):
        given = "--dry-run" if options.dry_run else "--retry-failed"
        raise ConfigError(f"--join takes ranges of a run in progress: not with {given}")
    only: dict[str, list[Any]] | None = None
    classes = ws.models(models)
    if options.retry_failed:
        found = await failures(ws)
        if found is None or not found.ids():
            raise ConfigError("no recorded run has failed documents to retry")
        # Failures recorded under a former name are the model's now.
        only = {}
        for name, ids in found.ids().items():
            only.setdefault(ws.registry.resolve(name), []).extend(ids)
        if models:
            missing = [c.__model__ for c in classes if c.__model__ not in only]
            if missing:
                raise ConfigError(
                    f"no recorded failure of {', '.join(missing)} to retry "
                    f"(the latest run with failures recorded: {', '.join(sorted(only))})"
                )
        else:
            classes = [c for c in classes if c.__model__ in only]
            if not classes:
                raise ConfigError(
                    f"the recorded failures are of models the code does not have: "
                    f"{', '.join(sorted(only))}"
                )
    if to is not None and len(classes) != 1:
        raise ConfigError("--to needs exactly one model")
    if options.release is None:
        options = replace(options, release=release_name(classes, to))
    if options.join:
        result = result or RunResult("upgrade", options.dry_run)
        sums = applied_checksums(ws, classes, to)
        await join(
            ws, classes, sums, to=to, options=options, progress=progress, reports=result.reports
        )
        return result
    return await _run(ws, UPGRADE, classes, to, options, progress, result, only)


def release_name(classes: list[type[VersionedModel]], to: str | None = None) -> str:
    """The name an upgrade records for its release when it is given none: each
    model's ``__model__`` name and the version it takes it to, ``app.User=3,app.Order=2``."""
    return ",".join(f"{c.__model__}={to if to is not None else c.__version__}" for c in classes)


async def downgrade(
    ws: Workspace,
    model: str,
    to: str,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Take one model's documents back to `to` through the downgrade functions.

    Documents newer than the code running it are left as they are (a dry
    run: would be): the result's `RunResult.left_newer` says so, and which
    code to run the downgrade from; the history records such a run as
    failed.

    """
    options = options or RunOptions()
    return await _run(ws, DOWNGRADE, [ws.model(model)], to, options, progress, result, None)


async def _run(
    ws: Workspace,
    direction: Direction,
    classes: list[type[VersionedModel]],
    to: str | dict[str, str] | None,
    options: RunOptions,
    progress: Progress | None,
    result: RunResult | None,
    only: dict[str, list[Any]] | None,
    recorded: dict[str, Any] | None = None,
    newer_command: str | None = None,
) -> RunResult:
    """One run over `classes`, in their order, under one lock, recorded once.

    `to` is the target of every model, or each model's by ``__model__`` name;
    `recorded` adds to the history's record of the run's arguments;
    `newer_command`, the command that documents left newer than the code
    name as the one to run from newer code (each model's ``downgrade MODEL
    --to V`` by default).

    """
    result = result or RunResult(direction.name, options.dry_run)
    options = options.with_settings(ws.config)
    await ws.connect()
    runner = Runner(
        ws.database,
        options,
        progress=progress,
        registry=ws.registry,
        skip_collections=(*ws.internal_collections, ranges_collection(ws.config.lock_collection)),
        only=only,
        redact=lambda text: mask(text, ws.config.url),
    )
    result.reports = runner.reports
    if options.dry_run:  # writes nothing: no lock, no history
        for cls in classes:
            await runner.run(cls, _target(to, cls), direction)
        _name_command(result, newer_command)
        return result
    # Refuse a broken chain before taking the lock: then nothing at all is
    # written, not even a history record. The runs use these surveys.
    surveys = {cls: await runner.survey(cls, _target(to, cls), direction) for cls in classes}
    arguments = {**_arguments(classes, to, options, only), **(recorded or {})}
    retry = runner.retry
    sums = None
    if direction is UPGRADE and not isinstance(to, dict):
        sums = applied_checksums(ws, classes, to)
    # A run of workers (upgrade --workers N): its record in the lock document.
    split = None
    if sums is not None and options.workers > 1 and only is None:
        target = to if isinstance(to, str) else None
        split = run_record(classes, target, sums, options.workers, options)
    async with ws.lock(direction.name, wait=options.wait, retry=retry) as lock:
        runner.lock = lock
        if split is not None:
            await retry.call("recording the run in the lock", partial(announce, lock, split))
            runner.split = split_for(ws, runner, split, options.workers)
        history = History(runner.database[ws.config.history_collection])
        record = await _Record.start(history, retry, direction, arguments, lock, sums)
        try:
            for cls in classes:
                await runner.run(cls, _target(to, cls), direction, surveys[cls])
        except BaseException as exc:
            await record.stopped(result, exc, retry, lock, ws.config.url)
            raise
        outcome: Outcome = "failed" if any(r.failed for r in result.reports) else "succeeded"
        _name_command(result, newer_command)
        left = result.left_newer
        why = shorten(mask(str(left[0]), ws.config.url)) if left else None
        await record.finish(result, retry, "failed" if left else outcome, why)
        if runner.split is not None:
            done = partial(workers_done, ws, runner.split, record.record)
            await retry.call("recording the workers' counts", done)
    return result


def _name_command(result: RunResult, command: str | None) -> None:
    """Documents left newer than the code: name `command` as the one to run
    from the newer code (nothing to do without one)."""
    if command is None:
        return
    for report in result.reports:
        if report.left_newer is not None:
            report.left_newer = report.left_newer.naming(command)


def _target(to: str | dict[str, str] | None, cls: type[VersionedModel]) -> str | None:
    """A model's target in a run given one target, or one per model."""
    return to.get(cls.__model__) if isinstance(to, dict) else to


def _arguments(
    classes: list[type[VersionedModel]],
    to: str | dict[str, str] | None,
    options: RunOptions,
    only: dict[str, list[Any]] | None,
) -> dict[str, Any]:
    """What the history records of a run's arguments."""
    return {
        "models": [c.__model__ for c in classes],
        "to": to,
        **options.recorded(),
        "retry_failed": only is not None,
    }


@dataclass
class _Record:
    """A run's record in the history: started under the lock, finished however
    the run ends."""

    history: History
    #: The record's ``_id``.
    record: Any

    @classmethod
    async def start(
        cls,
        history: History,
        retry: Retry,
        direction: Direction,
        arguments: dict[str, Any],
        lock: LeaseLock,
        sums: list[dict[str, Any]] | None,
    ) -> _Record:
        """Record the run the lock's last holder left, then the start of this one."""
        await retry.call(
            "recording the run the lock's last holder left",
            partial(history.abandon_holder, lock.replaced),
        )
        record = await retry.call(
            "recording the start of the run",
            partial(
                history.start,
                direction.name,
                arguments,
                lock.owner,
                checksums=sums,
                record_id=ObjectId(),
            ),
        )
        return cls(history, record)

    def finish(
        self, result: RunResult, policy: Retry, outcome: Outcome, error: str | None = None
    ) -> Any:
        """Record how the run ended, with its counts and failures, retried by `policy`."""
        counts = {r.model: r.counts() for r in result.reports}
        done = partial(self.history.finish, self.record, outcome, counts, failures=result.failures)
        return policy.call("recording how the run ended", partial(done, error=error))

    async def stopped(
        self, result: RunResult, exc: BaseException, retry: Retry, lock: LeaseLock, url: str | None
    ) -> None:
        """Record a run that stopped on `exc`, failed or interrupted."""
        stopped: Outcome = "failed" if isinstance(exc, Exception) else "interrupted"
        # Briefly: the server may be the reason the run stopped. A record
        # left "running" is marked abandoned by the next run.
        try:
            why = shorten(mask(str(exc), url)) or type(exc).__name__
            brief = Retry(min(retry.seconds, FINISH_RETRY), call_timeout=FINISH_RETRY)
            await self.finish(result, brief, stopped, why)
        except MigrateError:
            # Not recorded: the lock keeps the counts for the next run to
            # copy into the record (see `LeaseLock.keep_progress`).
            lock.keep_progress({r.model: r.counts() for r in result.reports})


def applied_checksums(
    ws: Workspace, classes: list[type[VersionedModel]], to: str | None
) -> list[dict[str, Any]]:
    """The checksums of the steps an upgrade takes the models' documents through.

    Every step of each chain up to the target: documents at any version
    below it are taken through the steps above theirs.

    """
    found = []
    for cls in classes:
        target = parse_version(to) if to is not None else cls.__parsed_version__
        found += [step_checksums.step_record(s) for s in ws.registry.graph(cls).steps_to(target)]
    return found
