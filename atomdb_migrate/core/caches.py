"""State modules keep between calls, reset in one call.

A few modules keep state at module level: the filters `version_filter`
translated, the stored versions counted per collection (the surveys of
`find`), the messages logged once, the listeners of the registry's former
names. Each module registers, when it is imported, how its state is reset
(`resettable`); `reset` resets them all, as between two tests (the pytest
plugin of `atomdb_migrate.testing` calls it before each test).

Imports nothing: every subpackage may register.

"""

from __future__ import annotations

from collections.abc import Callable

#: How each module's state is reset, by name (the module's, a dot, the state's).
_RESETS: dict[str, Callable[[], None]] = {}


def resettable(name: str, reset: Callable[[], None]) -> None:
    """Register how a module's state is reset (`reset` calls it).

    Parameters
    ----------
    name: str
        The state's name, ``module.NAME``; registering a name again replaces
        what it resets with.
    reset: callable
        Takes no argument; empties a cache, forgets what was said once.

    """
    _RESETS[name] = reset


def reset() -> None:
    """Reset the state every module registered: caches emptied, messages said once
    said again, listeners that are not the package's own dropped."""
    for reset_one in list(_RESETS.values()):
        reset_one()


def registered() -> list[str]:
    """The names of the states `reset` resets, in the order they were registered."""
    return list(_RESETS)


class SaidOnce:
    """Messages said once each per process, however many runs say them.

    Registered with `resettable` under `name`: `reset` forgets what was said.

    Parameters
    ----------
    name: str
        The state's name, ``module.NAME``.
    say: callable
        How a message is said the first time (a logger's ``info``, ``warning``).

    """

    def __init__(self, name: str, say: Callable[[str], None]) -> None:
        #: How a message is said.
        self.say = say
        #: The messages said so far.
        self.said: set[str] = set()
        resettable(name, self.reset)

    def __call__(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            self.say(message)

    def __len__(self) -> int:
        return len(self.said)

    def reset(self) -> None:
        """Forget what was said."""
        self.said.clear()
