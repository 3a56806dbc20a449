"""The models and the configuration: an unknown model, a wrong configuration, a
step module that does not load.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from .base import MigrateError


class UnknownModelError(MigrateError, LookupError):
    """No versioned model is registered under that ``__model__`` name."""

    known: list[str]

    def __init__(self, model: str, known: list[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown model {model!r}; known versioned models: {names}", known=known)
        self.model = model


class ConfigError(MigrateError):
    """The configuration is missing or wrong (options, pyproject table, models)."""


class StepModuleError(ConfigError):
    """One or more step modules do not load; nothing was registered.

    ``problems`` holds a ``(path, line, message)`` tuple per problem.

    """

    problems: list[tuple[str, int, str]]

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        lines = [f"{path}:{line}: {message}" for path, line, message in problems]
        super().__init__("; ".join(lines), problems=problems)


class ReleaseNotFoundError(ConfigError):
    """``downgrade --release -N`` or ``--to-release NAME`` names no release the
    history recorded (``asked``; ``known``: the names of the releases it holds,
    newest first)."""

    asked: str
    known: list[str]

    def __init__(self, asked: str, known: list[str], why: str) -> None:
        names = ", ".join(known[:10]) or "none"
        more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
        super().__init__(
            f"{why}; the releases the history holds, newest first: {names}{more}",
            asked=asked,
            known=known,
        )
