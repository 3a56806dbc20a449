"""Several databases: which databases the settings name (`databases`), and
visiting each (`each_database`), in turn or several at once, with the
canary's rules.

"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymongo.errors import OperationFailure

from ..exceptions import ConfigError, short_repr
from .errors import COMMAND_ERRORS
from .workspace import Workspace

__all__ = [
    "SYSTEM_DATABASES",
    "Visit",
    "database_exists",
    "databases",
    "each_database",
]


#: The server's own databases, which a pattern never matches.
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})


async def databases(ws: Workspace, *, canary: str | None = None) -> list[str]:
    """The databases the settings name, in the order to visit them.

    The names given (``--database`` more than once) in their order, then
    those on the server matching the pattern (``--databases``, searched
    with `re.search`: anchor it with ``^`` and ``$``), sorted; each once.
    The server's own databases (admin, config, local) match no pattern.
    With `canary`, that database comes first.

    Raises
    ------
    ConfigError
        If the settings name no database, or the canary is not among them.

    """
    config = ws.config
    if not config.several_databases:
        names = [config.database_name()]
    else:
        client = await ws.client()
        try:
            found = sorted(await client.list_database_names())
        except OperationFailure as exc:
            if config.database_pattern is not None:
                raise ConfigError(
                    f"--databases needs the server's database names, and it refused them: "
                    f"{exc.details.get('errmsg') if exc.details else exc}"
                ) from None
            found = list(config.databases)  # scoped credentials: take the names given
        missing = [n for n in config.databases if n not in found]
        if missing:
            raise ConfigError(
                f"no database {', '.join(short_repr(n) for n in missing)} on the server: "
                "a database given by name must exist (a typo would pass as nothing to do)"
            )
        names = list(config.databases)
        if config.database_pattern is not None:
            matched = [
                n
                for n in found
                if n not in SYSTEM_DATABASES and re.search(config.database_pattern, n)
            ]
            if not matched:  # a typo, even beside names that are there
                given = short_repr(config.database_pattern)
                raise ConfigError(f"no database on the server matches --databases {given}")
            names += matched
        names = list(dict.fromkeys(names))
    if canary is not None:
        if canary not in names:
            raise ConfigError(
                f"the canary database {short_repr(canary)} is not among the databases "
                f"given ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
            )
        names.remove(canary)
        names.insert(0, canary)
    return names


async def database_exists(ws: Workspace, name: str) -> bool:
    """Whether the server has the database (True when it does not let us list them)."""
    client = await ws.client()
    try:
        return name in await client.list_database_names()
    except OperationFailure:
        return True  # credentials scoped to the databases: the run will tell


@dataclass
class Visit:
    """How to visit several databases, and what the visit did, filled as it goes.

    Pass your own to `each_database` to read what happened even when the
    visit raises (a summary printed in a ``finally``, say).

    """

    #: The database to visit first; when it fails, the visit stops there and
    #: leaves the others as they are.
    canary: str | None = None
    #: Whether to load the models and step modules before the first database:
    #: a module that does not load then fails once, not in every database.
    load: bool = True
    #: The errors that fail one database and let the visit go on to the next
    #: (unless that database is the canary); any other error stops the visit.
    catch: tuple[type[BaseException], ...] = COMMAND_ERRORS
    #: Called with each database's name before it is visited.
    starting: Callable[[str], None] | None = None
    #: Called with the name of a database that failed and its error (one of
    #: `catch`); returns what `outcome` says of that database.
    failed: Callable[[str, BaseException], str] | None = None
    #: The databases to visit, in order, once listed; None while they are not,
    #: and when one database is used through the workspace as it is.
    names: list[str] | None = None
    #: What each database visited came to, a line each.
    outcomes: dict[str, str] = field(default_factory=dict)
    #: The databases that failed, in order, with their errors.
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    #: Whether the visit stopped on an interruption, or on an error not in `catch`.
    interrupted: bool = False
    #: How many databases to visit at once (``upgrade --workers N``); the
    #: canary is still visited first and alone.
    workers: int = 1
    #: The databases being visited at once (``workers`` above 1), in order of
    #: their start; those still there when the visit stopped were interrupted
    #: in the middle.
    running: list[str] = field(default_factory=list)

    def outcome(self, name: str) -> str:
        """What a database came to, or why it was not reached."""
        if name in self.outcomes:
            return self.outcomes[name]
        if name in self.running:
            return "interrupted"
        return "not reached: interrupted" if self.interrupted else "not reached: the canary failed"

    @property
    def canary_failed(self) -> bool:
        """Whether the canary failed: then no other database was visited."""
        return bool(self.failures) and self.failures[0][0] == self.canary


async def each_database(
    ws: Workspace, each: Callable[[Workspace], Awaitable[str]], visit: Visit | None = None
) -> Visit:
    """Run `each` on every database the settings name, one after the other, or
    up to ``visit.workers`` at once.

    With one database and no canary, `each` runs on the workspace as it is,
    and its errors propagate. Otherwise the databases are listed
    (`databases`, the canary first), and each gets its own workspace (one
    connection, a lock per database). `each` returns what it did, a line.
    A database that failed (an error in ``visit.catch``) is recorded in
    ``visit.failures`` and the next one goes on, except after the canary,
    which stops the visit. A database dropped since it was listed is left
    alone (not created again). Failures do not raise: read them in the
    `Visit` returned.

    With ``visit.workers`` above 1, the canary is visited first and alone,
    then up to that many databases at once, each in its own asyncio task
    with its own workspace (atom-db's manager pointed at its database for
    that task alone), taken in the order listed as each worker comes free.
    A failure lets the others go on, as in turn. An error not in
    ``visit.catch`` (or an interruption) cancels the databases still
    running, which end as an interrupted run does (their history records
    it, their locks are released; ``visit.outcome`` says "interrupted"),
    starts no other, and is raised. ``visit.failures`` is in the order
    listed, whatever the order the databases finished in.

    """
    visit = visit or Visit()
    if not ws.config.several_databases and visit.canary is None:
        await each(ws)
        return visit
    if visit.load:
        ws.load()  # a models module or step module that does not load fails once
    visit.names = await databases(ws, canary=visit.canary)
    try:
        if visit.workers > 1:
            await _visit_at_once(ws, each, visit)
        else:
            for name in visit.names:
                if not await _visit(ws, each, visit, name):
                    break
    except BaseException:
        visit.interrupted = True
        raise
    finally:
        order = {name: i for i, name in enumerate(visit.names)}
        visit.failures.sort(key=lambda failure: order[failure[0]])
    return visit


async def _visit_at_once(
    ws: Workspace, each: Callable[[Workspace], Awaitable[str]], visit: Visit
) -> None:
    """The canary alone, then up to ``visit.workers`` databases at once."""
    names = list(visit.names or [])
    if visit.canary is not None and not await _visit(ws, each, visit, names.pop(0)):
        return
    queue = iter(names)

    async def worker() -> None:
        for name in queue:  # one iterator: each worker takes the next name listed
            await _visit(ws, each, visit, name, at_once=True)

    tasks = [asyncio.create_task(worker()) for _ in range(min(visit.workers, len(names)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        # Each database still running records its interrupted run and
        # releases its lock before the error goes on.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _visit(
    ws: Workspace,
    each: Callable[[Workspace], Awaitable[str]],
    visit: Visit,
    name: str,
    *,
    at_once: bool = False,
) -> bool:
    """Visit one database; False when the visit stops there (the canary failed).

    With `at_once`, other databases may be visited at the same time, each in
    its own task (see `Workspace.for_database`).

    """
    if visit.starting is not None:
        visit.starting(name)
    if not await database_exists(ws, name):
        visit.outcomes[name] = "left alone: no longer on the server"
        return True
    sub = ws.for_database(name, at_once=at_once)
    if at_once:
        visit.running.append(name)
    try:
        visit.outcomes[name] = await each(sub)
    except visit.catch as exc:
        visit.failures.append((name, exc))
        visit.outcomes[name] = visit.failed(name, exc) if visit.failed else "failed"
        return name != visit.canary
    finally:
        if at_once and name in visit.outcomes:
            visit.running.remove(name)
        await sub.close()
    return True
