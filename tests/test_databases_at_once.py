"""Several databases at once: ``upgrade --workers N`` with ``--databases`` or a
repeated ``--database``.

Up to N databases run at the same time, each under its own lock; the canary
still runs first and alone; the summary (text and ``--json``) lists the
databases in the order given, whatever order they finished in; a failing
database lets the others go on; atom-db's manager is pointed at each
database for its own task alone, so a step that looks a document up sees its
own tenant's.

"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from atomdb.nosql import NoSQLModelManager
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.at_once import shown
from atomdb_migrate.cli.exits import EXIT_LOCK, EXIT_STEP
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.driver.mongo import MEMORY_SCHEME, memory_client
from atomdb_migrate.engine.lock import LOCK_ID
from atomdb_migrate.engine.options import RunOptions
from atomdb_migrate.exceptions import ConfigError

from . import test_databases as databases
from .clidemo import Customer
from .project import CUSTOMER, Project
from .test_databases import versions

#: Examples of the property test of the visit at once; raise it with VISIT_EXAMPLES.
VISIT_EXAMPLES = int(os.environ.get("VISIT_EXAMPLES", "60"))

#: Examples of the property test of a name as a line shows it; raise it with SHOWN_EXAMPLES.
SHOWN_EXAMPLES = int(os.environ.get("SHOWN_EXAMPLES", "300"))

MEMORY = f"{MEMORY_SCHEME}testing"

#: A 2 -> 3 step that looks its own document up through atom-db (``Model.objects``),
#: after giving the other databases' tasks a turn: it finds it only in its
#: own tenant's database.
LOOKUP_STEP = '''"""Give every customer a tier: the name its stored document had."""

import asyncio

from tests.clidemo import Customer

model = "clidemo.Customer"
from_version = "2"
to_version = "3"


async def upgrade(doc):
    await asyncio.sleep(0.01)
    found = await Customer.objects.find_one({"_id": doc["_id"]})
    if found is None:
        raise LookupError(f"{doc['_id']} is not in the database atom-db points at")
    doc["tier"] = found["name"]


def downgrade(doc):
    doc.pop("tier", None)
'''


@pytest.fixture
def tenants(project: Project) -> Iterator[list[str]]:
    """Four tenant databases beside the project's own, dropped afterwards."""
    names = [f"{project.dbname}_t{i}" for i in range(4)]
    yield names
    for name in names:
        project.client.drop_database(name)


def seed(project: Project, database: str, names: list[str]) -> None:
    """One customer at version 1 per name, in `database`."""
    databases.seed(project, database, len(names), names=names)


def blocks(output: str, names: list[str]) -> dict[str, list[str]]:
    """Each database's block of lines: from its ``database NAME:`` line to the next
    block's, or to the visit's summary."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("database ") and line.endswith(":") and line[9:-1] in names:
            current = found.setdefault(line[9:-1], [])
        elif line.endswith("databases:"):
            current = None
        elif current is not None:
            current.append(line)
    return found


def test_databases_at_once_each_under_its_lock(project: Project, tenants: list[str]) -> None:
    for i, name in enumerate(tenants):
        seed(project, name, [f"Ada {i} {k}" for k in range(3 + i)])
    pattern = f"^{project.dbname}_t"
    result = project.invoke("--databases", pattern, "upgrade", "--workers", "3")
    assert result.exit_code == 0, result.output
    # The summary lists the databases in the order given, each once.
    summary = result.output[result.output.index("4 databases:") :].splitlines()[1:5]
    assert summary == [f"  {name}: {3 + i} documents upgraded" for i, name in enumerate(tenants)]
    # Each database's lines come as one block under its name; its progress
    # lines name it.
    found = blocks(result.output, tenants)
    assert sorted(found) == sorted(tenants)
    for i, name in enumerate(tenants):
        assert f"{CUSTOMER}: {3 + i} upgraded to 3, 0 skipped" in "\n".join(found[name]), found
        assert f"{name}: {CUSTOMER}: {3 + i} documents to migrate" in result.output
    for i, name in enumerate(tenants):
        assert versions(project, name) == {"3": 3 + i}
        assert project.client[name]["atomdb_migrate_history"].count_documents({}) == 1
        assert project.client[name]["atomdb_migrate_lock"].count_documents({}) == 0
        (run,) = project.client[name]["atomdb_migrate_history"].find()
        assert run["outcome"] == "succeeded"


def test_a_step_looking_documents_up_sees_its_own_database(
    project: Project, tenants: list[str]
) -> None:
    (project.path / "migrations" / "0002_add_tier.py").write_text(LOOKUP_STEP)
    for i, name in enumerate(tenants):
        seed(project, name, [f"Tenant{i} {k}" for k in range(5)])
    before = (
        NoSQLModelManager.instance().get_member("database").get_slot(NoSQLModelManager.instance())
    )
    pattern = f"^{project.dbname}_t"
    result = project.invoke("--databases", pattern, "upgrade", "--workers", "4")
    assert result.exit_code == 0, result.output
    for i, name in enumerate(tenants):
        tiers = {d["tier"] for d in project.client[name][CUSTOMER].find()}
        assert tiers == {f"Tenant{i} {k}" for k in range(5)}, (name, tiers)
    # atom-db's manager is as it was found.
    manager = NoSQLModelManager.instance()
    assert manager.get_member("database").get_slot(manager) is before


def test_a_failing_database_lets_the_others_finish(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], ["Ada Lovelace"])
    seed(project, tenants[1], ["Ada Lovelace", "BOOM"])
    seed(project, tenants[2], ["Ada Lovelace", "Alan Turing"])
    seed(project, tenants[3], ["Ada Lovelace", "BOOM"])
    args = [f"--database={name}" for name in tenants]
    result = project.invoke(*args, "upgrade", "--workers", "4")
    assert result.exit_code == EXIT_STEP, result.output
    assert f"2 of 4 databases failed: {tenants[1]}, {tenants[3]}" in result.output
    summary = result.output[result.output.index("4 databases:") :].splitlines()[1:5]
    assert summary == [
        f"  {tenants[0]}: 1 documents upgraded",
        f"  {tenants[1]}: failed (exit {EXIT_STEP})",
        f"  {tenants[2]}: 2 documents upgraded",
        f"  {tenants[3]}: failed (exit {EXIT_STEP})",
    ]
    # The error line names its database.
    assert f"Error: database {tenants[1]}: " in result.output
    assert versions(project, tenants[0]) == {"3": 1}
    assert versions(project, tenants[2]) == {"3": 2}
    # The failing ones did what they could, and said what failed.
    assert versions(project, tenants[1]) == {"3": 1, "1": 1}


def test_a_held_lock_fails_that_database_alone(project: Project, tenants: list[str]) -> None:
    for name in tenants[:3]:
        seed(project, name, ["Ada Lovelace"])
    project.client[tenants[1]]["atomdb_migrate_lock"].insert_one(
        {"_id": LOCK_ID, "owner": "elsewhere", "command": "upgrade", "expires_at": _later()}
    )
    args = [f"--database={name}" for name in tenants[:3]]
    result = project.invoke(*args, "upgrade", "--workers", "2")
    assert result.exit_code == EXIT_LOCK, result.output
    assert f"`atomdb-migrate --database {tenants[1]} unlock`" in result.output
    assert versions(project, tenants[0]) == {"3": 1}
    assert versions(project, tenants[1]) == {"1": 1}
    assert versions(project, tenants[2]) == {"3": 1}


def _later() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)


def test_the_canary_first_and_alone(project: Project, tenants: list[str]) -> None:
    for name in tenants:
        seed(project, name, ["Ada Lovelace"])
    seed(project, tenants[2], ["BOOM"])
    pattern = f"^{project.dbname}_t"
    result = project.invoke(
        "--databases", pattern, "upgrade", "--workers", "4", "--canary", tenants[2]
    )
    assert result.exit_code == EXIT_STEP, result.output
    assert f"the canary database {tenants[2]} failed; 3 other databases left" in result.output
    for name in (tenants[0], tenants[1], tenants[3]):
        assert f"  {name}: not reached: the canary failed" in result.output
        assert versions(project, name) == {"1": 1}
        assert project.client[name]["atomdb_migrate_history"].count_documents({}) == 0

    # A canary that passes comes first: its run ended before any other began.
    project.client[tenants[2]][CUSTOMER].delete_many({"name": "BOOM"})
    result = project.invoke(
        "--databases", pattern, "upgrade", "--workers", "4", "--canary", tenants[2]
    )
    assert result.exit_code == 0, result.output
    ended = project.client[tenants[2]]["atomdb_migrate_history"].find_one({"outcome": "succeeded"})
    assert ended is not None
    for name in (tenants[0], tenants[1], tenants[3]):
        (run,) = project.client[name]["atomdb_migrate_history"].find()
        assert run["started_at"] >= ended["finished_at"], (run, ended)
        assert versions(project, name) == {"3": 1}
    summary = result.output[result.output.index("4 databases:") :].splitlines()[1:5]
    assert [line.split(":")[0].strip() for line in summary] == [
        tenants[2],
        tenants[0],
        tenants[1],
        tenants[3],
    ]


def test_json_lists_the_databases_in_the_order_given(project: Project, tenants: list[str]) -> None:
    # The first database has the most to do: it ends last.
    seed(project, tenants[0], [f"Ada {k}" for k in range(300)])
    for name in tenants[1:]:
        seed(project, name, ["Ada Lovelace"])
    args = [f"--database={name}" for name in tenants]
    result = project.invoke(*args, "upgrade", "--workers", "4", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # one document, nothing else
    assert [m["database"] for m in document["models"] if m["model"] == CUSTOMER] == tenants
    # Progress objects name their database.
    lines = result.stderr.splitlines()
    progress = [json.loads(line) for line in lines if line.startswith('{"progress"')]
    assert {p["database"] for p in progress if p["progress"] == CUSTOMER} == set(tenants)


# ----------------------------------------------------------------------
# From Python: command.each_database with Visit(workers=N)
# ----------------------------------------------------------------------
async def test_upgrade_from_python_several_at_once(project: Project, tenants: list[str]) -> None:
    for i, name in enumerate(tenants):
        seed(project, name, [f"Ada {i} {k}" for k in range(2 + i)])
    seed(project, tenants[1], ["BOOM"])
    config = load_config(url=project.url, databases=f"^{project.dbname}_t")
    at_once = 0
    most = 0

    async def each(ws: command.Workspace) -> str:
        nonlocal at_once, most
        at_once += 1
        most = max(most, at_once)
        try:
            result = await command.upgrade(ws, options=RunOptions())
        finally:
            at_once -= 1
        return f"{sum(r.migrated for r in result.reports)} upgraded"

    visit = command.Visit(workers=3)
    async with Workspace(config) as ws:
        await command.each_database(ws, each, visit)
    assert visit.names == tenants
    assert most == 3  # three databases ran at the same time
    assert [name for name, _ in visit.failures] == [tenants[1]]
    assert [visit.outcome(name) for name in tenants] == [
        "2 upgraded",
        "failed",
        "4 upgraded",
        "5 upgraded",
    ]
    for name in tenants:
        assert project.client[name]["atomdb_migrate_lock"].count_documents({}) == 0


async def test_an_error_outside_the_rules_cancels_the_running_ones(
    project: Project, tenants: list[str]
) -> None:
    """An error the visit does not catch: the databases running are cancelled, and
    end as an interrupted run does (recorded, their locks released)."""
    for name in tenants:
        seed(project, name, [f"Ada {k}" for k in range(3)])
    config = load_config(url=project.url, databases=f"^{project.dbname}_t")
    started = asyncio.Event()

    class Broken(Exception):
        """Not among the errors a visit catches."""

    async def each(ws: command.Workspace) -> str:
        name = ws.config.database_name()
        if name == tenants[1]:
            await started.wait()
            raise Broken(name)
        await ws.connect()
        async with ws.lock("upgrade"):
            started.set()
            await asyncio.sleep(30)  # cancelled long before
        return "done"

    visit = command.Visit(workers=2, catch=(ConfigError,))
    async with Workspace(config) as ws:
        with pytest.raises(Broken):
            await command.each_database(ws, each, visit)
    assert visit.interrupted
    assert visit.outcome(tenants[0]) == "interrupted"
    assert visit.outcome(tenants[2]) == "not reached: interrupted"
    assert visit.outcome(tenants[3]) == "not reached: interrupted"
    assert project.client[tenants[0]]["atomdb_migrate_lock"].count_documents({}) == 0


async def test_each_task_sees_its_own_database_through_atomdb(
    project: Project, tenants: list[str]
) -> None:
    """The same _id in two databases: each task finds and restores its own."""
    same = ObjectId()
    for i, name in enumerate(tenants[:3]):
        project.client[name][CUSTOMER].insert_one(
            {"_id": same, "first": f"T{i}", "__model__": CUSTOMER, "__version__": "3"}
        )
    config = load_config(url=project.url, database=tenants[:3])
    seen: dict[str, tuple[str, str]] = {}

    async def each(ws: command.Workspace) -> str:
        await ws.connect()
        await asyncio.sleep(0.01)  # the other tasks connect meanwhile
        doc = await Customer.objects.find_one({"_id": same})
        await asyncio.sleep(0.01)
        obj = await Customer.restore(doc)
        seen[ws.config.database_name()] = (doc["first"], obj.first)
        return "looked"

    async with Workspace(config) as ws:
        visit = await command.each_database(ws, each, command.Visit(workers=3, load=False))
    assert not visit.failures, visit.failures
    assert seen == {name: (f"T{i}", f"T{i}") for i, name in enumerate(tenants[:3])}


class Stop(BaseException):
    """Stands for Ctrl-C in the middle of a database."""


async def _visit_in_memory(
    names: list[str], failing: set[str], canary: str | None, workers: int, turns: dict[str, int]
) -> tuple[command.Visit, list[str], list[str]]:
    """Visit in-memory databases `names`, `workers` at once; each database takes
    `turns` of the event loop. Returns the visit, the databases in the order
    they started, and in the order they ended."""
    client = memory_client(MEMORY)
    for name in names:
        await client[name]["things"].insert_one({"n": 1})
    prefix = names[0].rsplit("_", 1)[0]
    started: list[str] = []
    ended: list[str] = []

    async def each(ws: Workspace) -> str:
        name = ws.config.database_name()
        started.append(name)
        for _ in range(turns.get(name, 0)):
            await asyncio.sleep(0)
        ended.append(name)
        if name in failing:
            raise ConfigError(f"{name} failed")
        return f"did {name}"

    rules = command.Visit(canary=canary, load=False, workers=workers)
    config = load_config(url=MEMORY, databases=f"^{prefix}_")
    try:
        async with Workspace(config) as ws:
            await command.each_database(ws, each, rules)
    finally:
        for name in names:
            await client.drop_database(name)
    return rules, started, ended


@settings(max_examples=VISIT_EXAMPLES, deadline=None)
@given(
    n=st.integers(1, 6),
    workers=st.integers(2, 4),
    failing=st.sets(st.integers(0, 5)),
    canary=st.none() | st.integers(0, 5),
    turns=st.lists(st.integers(0, 8), min_size=6, max_size=6),
)
def test_the_visit_at_once_keeps_the_rules_and_the_order(
    n: int, workers: int, failing: set[int], canary: int | None, turns: list[int]
) -> None:
    prefix = f"once{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{i}" for i in range(n)]
    fails = {names[i] for i in failing if i < n}
    first = names[canary] if canary is not None and canary < n else None
    delays = {name: turns[i] for i, name in enumerate(names)}
    rules, started, ended = asyncio.run(_visit_in_memory(names, fails, first, workers, delays))

    order = names if first is None else [first, *(x for x in names if x != first)]
    assert rules.names == order
    if first is not None:
        # The canary alone: it ended before any other started.
        assert started[0] == first and ended[0] == first
    if first is not None and first in fails:
        assert started == [first]
        assert rules.canary_failed
    else:
        # Every database, started in the order listed.
        assert started == order
    assert not rules.interrupted
    done = set(started)
    # Failures and outcomes in the order listed, whatever the order they ended in.
    assert [x for x, _ in rules.failures] == [x for x in order if x in fails and x in done]
    for name in order:
        if name in done:
            assert rules.outcome(name) == ("failed" if name in fails else f"did {name}")
        else:
            assert rules.outcome(name) == "not reached: the canary failed"


#: Database names a server accepts that would drive a terminal, or forge a line:
#: a newline, a carriage return, an escape sequence, a right-to-left override.
HOSTILE = ["\nError-forged", "\rX", "\x1b[2J", "\u202egnp"]


def test_hostile_database_names_are_printed_escaped(project: Project) -> None:
    """A database's name is data: in every line that names it (its block, its
    progress and error lines, the summary), each character that is not printable
    shows as its escape, so that a name cannot forge a line nor drive the terminal;
    ``--json`` keeps the name as it is."""
    names = [f"{project.dbname}_h{i}{tail}" for i, tail in enumerate(HOSTILE)]
    try:
        for name in names:
            seed(project, name, ["Ada Lovelace", "BOOM"])
        args = [f"--database={name}" for name in names]
        for command in (["status"], ["upgrade", "--workers", "2"], ["upgrade"]):
            result = project.invoke(*args, *command, color=True)
            for line in result.output.splitlines():
                assert line.isprintable(), (command, line)
            for i, tail in enumerate(HOSTILE):
                shown = tail.encode("unicode_escape").decode()
                assert f"{project.dbname}_h{i}{shown}" in result.output, (command, result.output)
        rows = json.loads(project.invoke(*args, "status", "--json").output)
        assert {row["database"] for row in rows} == set(names)
    finally:
        for name in names:
            project.client.drop_database(name)


@settings(max_examples=SHOWN_EXAMPLES, deadline=None)
@given(text=st.text())
def test_shown_is_printable_and_leaves_printable_text_alone(text: str) -> None:
    """Whatever a name holds, the line that shows it is one printable line."""
    said = shown(text)
    assert said.isprintable()
    if text.isprintable():
        assert said == text
    else:
        assert len(said) > len(text)
