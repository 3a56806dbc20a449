"""The exit codes of the ``atomdb-migrate`` command, and the table from errors
to exit codes.

==  ==========================================================
0   success
1   ``check`` found a problem (or documents pending, with ``--pending``);
    ``stamp`` was answered no
2   usage: unknown option, missing argument
3   configuration: settings, models, step modules, broken chains
4   connection: the server cannot be reached, or refuses the credentials
5   lock: another runner holds it, or the lease was lost
6   step failed: a step raised or returned something wrong, or
    documents failed with --continue-on-error; ``upgrade --join``: the
    run joined did not succeed
7   the server kept failing transiently for longer than --retry-for
8   ``check``: a step applied to the database changed since
9   a unique index cannot be built: stored documents share a key
10  ``downgrade`` left documents newer than the code running it (or, with
    --dry-run, would): run it from the code that knows their version
130 interrupted (Ctrl-C): what was written is recorded in the history
==  ==========================================================

With several databases, the code of the first database that failed.

"""

from __future__ import annotations

import click

from ..commands.errors import error_line, is_transient
from ..exceptions import (
    ChainError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    DowngradeLeftNewerError,
    InvalidVersionError,
    JoinedRunFailedError,
    LockError,
    MigrateError,
    NewerDocumentError,
    ServerError,
    ServerUnavailableError,
    StepError,
    UniqueIndexError,
    UnknownModelError,
    WriteConcernRefusedError,
)

EXIT_CHECK = 1
EXIT_DECLINED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_CONNECTION = 4
EXIT_LOCK = 5
EXIT_STEP = 6
EXIT_UNAVAILABLE = 7
EXIT_CHECKSUM = 8
EXIT_DUPLICATE = 9
EXIT_NEWER = 10
EXIT_INTERRUPTED = 130

#: Which exit code each kind of error gives; the first match wins.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (UniqueIndexError, EXIT_DUPLICATE),
    (DowngradeLeftNewerError, EXIT_NEWER),
    (ConnectionFailedError, EXIT_CONNECTION),
    (ServerUnavailableError, EXIT_UNAVAILABLE),
    (WriteConcernRefusedError, EXIT_CONFIG),
    (ServerError, EXIT_CONNECTION),
    (JoinedRunFailedError, EXIT_STEP),
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


class CommandError(click.ClickException):
    """A domain error, shown as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


def command_error(exc: BaseException, url: str | None) -> click.ClickException:
    """The error a command ends with, and its exit code, for what it raised."""
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, MigrateError):
        code = next(c for kind, c in EXIT_CODES if isinstance(exc, kind))
    else:
        # A server error the commands did not expect: never a traceback.
        code = EXIT_UNAVAILABLE if is_transient(exc) else EXIT_CONNECTION
    return CommandError(error_line(exc, url), code)
