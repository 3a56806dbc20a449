"""The rules of several databases and of the gate, called from Python.

The command line only formats what `commands.each_database` and
`commands.check_databases` decide: the canary's rules, and which checks run
once and which in each database.

"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.driver.mongo import MEMORY_SCHEME, memory_client
from atomdb_migrate.exceptions import ConfigError

from .project import CUSTOMER, Project

#: Examples of the property test of the visit; raise it with VISIT_EXAMPLES.
VISIT_EXAMPLES = int(os.environ.get("VISIT_EXAMPLES", "100"))

URL = f"{MEMORY_SCHEME}testing"


class Stop(BaseException):
    """Stands for Ctrl-C in the middle of a database."""


async def visit(
    names: list[str], failing: set[str], canary: str | None, stop: str | None
) -> tuple[command.Visit, list[str], bool]:
    """Visit the in-memory databases `names` (by pattern); `each` fails in
    `failing` and is interrupted in `stop`. Returns the visit, the databases
    `each` ran in, and whether the visit raised the interruption."""
    client = memory_client(URL)
    for name in names:
        await client[name]["things"].insert_one({"n": 1})
    prefix = names[0].rsplit("_", 1)[0]
    seen: list[str] = []

    async def each(ws: Workspace) -> str:
        name = ws.config.database_name()
        seen.append(name)
        if name == stop:
            raise Stop
        if name in failing:
            raise ConfigError(f"{name} failed")
        return f"did {name}"

    rules = command.Visit(canary=canary, load=False)
    config = load_config(url=URL, databases=f"^{prefix}_")
    stopped = False
    try:
        async with Workspace(config) as ws:
            await command.each_database(ws, each, rules)
    except Stop:
        stopped = True
    finally:
        for name in names:
            await client.drop_database(name)
    return rules, seen, stopped


@settings(max_examples=VISIT_EXAMPLES, deadline=None)
@given(
    n=st.integers(1, 5),
    failing=st.sets(st.integers(0, 4)),
    canary=st.none() | st.integers(0, 4),
    stop=st.none() | st.integers(0, 4),
)
def test_the_visit_follows_the_canary_rules(
    n: int, failing: set[int], canary: int | None, stop: int | None
) -> None:
    prefix = f"visit{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{i}" for i in range(n)]
    fails = {names[i] for i in failing if i < n}
    first = names[canary] if canary is not None and canary < n else None
    halt = names[stop] if stop is not None and stop < n else None
    rules, seen, stopped = asyncio.run(visit(names, fails, first, halt))

    # The model of the rules: the canary first, then the others in order; a
    # failure goes on to the next database, but a failing canary stops the
    # visit, and so does an interruption.
    order = names if first is None else [first, *(x for x in names if x != first)]
    expected: list[str] = []
    for name in order:
        expected.append(name)
        if name == halt or (name == first and name in fails):
            break
    assert rules.names == order
    assert seen == expected
    assert stopped == (halt is not None and halt in expected)
    assert rules.interrupted == stopped
    done = [x for x in expected if x != halt]
    assert [x for x, _ in rules.failures] == [x for x in done if x in fails]
    assert all(isinstance(e, ConfigError) for _, e in rules.failures)
    assert rules.canary_failed == (first is not None and first in fails and first != halt)
    for name in order:
        if name in done and name in fails:
            assert rules.outcome(name) == "failed"
        elif name in done:
            assert rules.outcome(name) == f"did {name}"
        elif stopped:
            assert rules.outcome(name) == "not reached: interrupted"
        else:
            assert rules.outcome(name) == "not reached: the canary failed"


@pytest.fixture
def tenants(project: Project) -> Iterator[list[str]]:
    """Two tenant databases holding a customer at version 1, dropped afterwards."""
    names = [f"{project.dbname}_t{i}" for i in range(2)]
    for name in names:
        project.client[name][CUSTOMER].insert_one({"name": "Ada", "__version__": "1"})
    yield names
    for name in names:
        project.client.drop_database(name)


async def gate(project: Project, **asked: bool) -> tuple[list[command.DatabaseCheck], list[str]]:
    """`check_databases` over the tenants: the checks handed over, and the
    databases each was made in (None: once, before the databases)."""
    config = load_config(url=project.url, databases=f"^{project.dbname}_t")
    found: list[command.DatabaseCheck] = []
    where: list[str] = []
    async with Workspace(config) as ws:

        def seen(check: command.DatabaseCheck) -> str:
            found.append(check)
            return "checked"

        rules = command.Visit(starting=where.append)
        await command.check_databases(ws, seen, visit=rules, **asked)
    return found, where


async def test_the_code_is_checked_once_and_the_data_in_each_database(
    project: Project, tenants: list[str]
) -> None:
    found, where = await gate(project, pending=True)
    assert where == tenants
    assert [c.once for c in found] == [True, False, False]
    assert found[0].problems == []
    for check in found[1:]:
        assert check.problems == [f"model {CUSTOMER!r}: 1 stored document is behind version 3"], (
            check.problems
        )

    # Nothing asked of the databases: the code alone, once, in no database.
    found, where = await gate(project)
    assert where == [] and [c.once for c in found] == [False]


async def test_a_problem_of_the_code_stops_the_check_before_the_databases(
    project: Project, tenants: list[str]
) -> None:
    (project.path / "migrations" / "0009_broken.py").write_text("this is not python\n")
    found, where = await gate(project, pending=True)
    assert where == []
    (once,) = found
    assert once.once and len(once.problems) == 1 and "0009_broken.py" in once.problems[0]
