"""The server and the migration lock: no connection, a failed command, a fault
that outlasted the retries, a write concern never satisfied, the lock held or lost.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from typing import Any

from .base import MigrateError, shorten


class ConnectionFailedError(MigrateError):
    """The MongoDB server could not be reached, or refused the credentials."""


class ServerError(MigrateError):
    """The server failed a command, and retrying it would not help.

    `operation` says what the runner was doing; `code` is the server's
    error code, where it gave one.

    """

    def __init__(self, operation: str, error: BaseException, **facts: Any) -> None:
        self.operation = operation
        #: The driver's error.
        self.error = error
        self.code = getattr(error, "code", None)
        self.cause = f"{type(error).__name__}: {shorten(str(error))}"
        super().__init__(self._message(), **facts)

    def _message(self) -> str:
        return f"the server failed while {self.operation}: {self.cause}"


class ServerUnavailableError(ServerError):
    """A transient fault (a dropped connection, an election, a shutdown, a
    write-concern error) lasted past the retry window: the run stopped with
    what it wrote written, and a rerun resumes.

    `error` is the fault ridden through; `answer_lost` says whether a try of
    it went unanswered (a connection dropped or timed out), so that the
    server may still apply what it sent.

    """

    def __init__(
        self, operation: str, error: BaseException, seconds: float, *, answer_lost: bool = False
    ) -> None:
        self.seconds = seconds
        self.answer_lost = answer_lost
        super().__init__(operation, error)

    def _message(self) -> str:
        return (
            f"the server failed while {self.operation}, and kept failing for "
            f"{self.seconds:.0f} s, past the retry window (--retry-for): {self.cause}. "
            "What was written is kept; run the command again to resume"
        )


class WriteConcernRefusedError(ServerError):
    """The server can never satisfy the write concern asked for (more members
    than the deployment has, or a tag set it does not define): not retried.

    `code` is the write-concern error's code (100: UnsatisfiableWriteConcern).

    """

    def __init__(self, operation: str, error: BaseException) -> None:
        details = getattr(error, "details", None) or {}
        concern = details.get("writeConcernErrors") or [details]
        first = concern[0] if concern and isinstance(concern[0], dict) else {}
        #: The write-concern error's own message.
        self.reason = " ".join(str(first.get("errmsg") or error).split())
        super().__init__(operation, error)
        self.code = first.get("code", self.code)

    def _message(self) -> str:
        return (
            f"the server refused the write concern while {self.operation}: "
            f"{shorten(self.reason)}. It cannot be satisfied here, and retrying would not "
            "help; use a --write-concern the deployment can satisfy (a number of members it "
            "has, or majority)"
        )


class LockError(MigrateError):
    """The migration lock could not be taken or kept."""


class LockHeldError(LockError):
    """Another runner holds the migration lock.

    ``holder`` is the lock document: ``owner``, ``host``, ``pid``,
    ``command``, ``acquired_at`` and ``expires_at``.

    """

    holder: dict[str, Any]

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(
            f"the migration lock is held by {holder.get('command', '?')} on host "
            f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}) since "
            f"{holder.get('acquired_at', '?')}; its lease expires at "
            f"{holder.get('expires_at', '?')} unless renewed. Wait for it (--wait), or, "
            "if that runner is dead, clear the lock with `atomdb-migrate unlock`",
            holder=holder,
        )


class LockLostError(LockError):
    """The runner's lease expired or was taken during the run; it stopped."""


class JoinError(LockError):
    """``upgrade --join`` found no run of workers to join, or one of other code.

    ``run`` is the run record found in the lock document (None: none).

    """

    run: dict[str, Any] | None


class NoRunToJoinError(JoinError):
    """``upgrade --join``: no run of workers started within the wait (``waited``, seconds)."""

    waited: float

    def __init__(self, waited: float, holder: dict[str, Any] | None) -> None:
        held = ""
        if holder is not None and holder.get("run") is None:
            held = (
                f"; the lock is held by {holder.get('command', '?')} on host "
                f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}), a run without workers"
            )
        super().__init__(
            f"no upgrade run with workers to join started within {waited:g} s{held}; start "
            "one with `atomdb-migrate upgrade --workers N`, or wait longer (--join-wait)",
            waited=waited,
            run=None,
        )


class RunMismatchError(JoinError):
    """``upgrade --join``: the run in progress is not the one this code would run.

    ``differences`` names what differs: ``models``, ``targets``, ``checksums``
    (the steps' code), each with the run's value and ours.

    """

    differences: dict[str, tuple[Any, Any]]

    def __init__(self, run: dict[str, Any], differences: dict[str, tuple[Any, Any]]) -> None:
        said = "; ".join(
            f"{what}: the run has {theirs!r}, this code {ours!r}"
            for what, (theirs, ours) in differences.items()
        )
        super().__init__(
            f"the upgrade run in progress (started on host {run.get('host', '?')}) runs other "
            f"code than this one, so it cannot be joined ({said}); join it with the same "
            "release's code and models, or wait for it to end",
            run=run,
            differences=differences,
        )


class JoinedRunFailedError(JoinError):
    """``upgrade --join``: the run of workers joined did not succeed, whatever this
    process's own ranges did: it ended failed or interrupted (``outcome``, as its
    history record says, with its ``error``), or its starter stopped before its end
    (``outcome`` ``"stopped"``: its lease ran out, the record left in the lock)."""

    outcome: str
    error: str | None

    def __init__(self, run: dict[str, Any], outcome: str, error: str | None) -> None:
        why = f": {error}" if error else ""
        advice = (
            "run `atomdb-migrate upgrade --workers N` again to carry it on"
            if outcome == "stopped"
            else "see `atomdb-migrate history`"
        )
        super().__init__(
            f"the run of workers joined ended {outcome} (started on host "
            f"{run.get('host', '?')}, pid {run.get('pid', '?')}){why}; {advice}",
            run=run,
            outcome=outcome,
            error=error,
        )


class LockAliveError(LockHeldError):
    """`unlock` refused: the holder's lease is still being renewed, so it is alive."""

    def __init__(self, holder: dict[str, Any], age: float | None) -> None:
        renewed = (
            f"its lease was renewed {age:.1f} s ago"
            if age is not None
            else f"its lease runs until {holder.get('expires_at', '?')}"
        )
        LockError.__init__(
            self,
            f"the migration lock is held by {holder.get('command', '?')} on host "
            f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}), and {renewed}: that "
            "runner is alive. Stop it, or give --force to clear the lock anyway (two "
            "runners may then write at once)",
            holder=holder,
        )
