"""A downgrade that leaves documents newer than the code running it does not pass
as a success: its own exit code, the code to run it from, from the command
line and from Python, dry or not.

The demo models' code is at version 3 (tests/clidemo.py); documents stored at
4 and 5 stand for what a newer release wrote: the code running the downgrade
does not know their version.

"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import click
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import EXIT_CODES, EXIT_NEWER, command_error
from atomdb_migrate.cli.output import summarize
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.upgrade import RunOptions
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.driver.mongo import MEMORY_SCHEME
from atomdb_migrate.exceptions import DowngradeLeftNewerError, MigrateError
from atomdb_migrate.steps.registry import MigrationRegistry

from .conftest import server_url
from .project import CUSTOMER, STEPS, Project

#: Examples of the property test; raise it with DOWNGRADE_NEWER_EXAMPLES.
DOWNGRADE_NEWER_EXAMPLES = int(os.environ.get("DOWNGRADE_NEWER_EXAMPLES", "25"))

#: The versions documents are seeded at: the code knows 1 to 3.
VERSIONS = ["1", "2", "3", "4", "5"]


def customer(version: str, i: int) -> dict[str, Any]:
    """A demo customer in the shape of `version` (4 and 5: a newer release's)."""
    doc: dict[str, Any] = {"_id": ObjectId(), "__model__": CUSTOMER, "__version__": version}
    if version == "1":
        doc["name"] = f"Ada {i}"
    else:
        doc.update(first="Ada", last=str(i))
    if version != "2":
        doc["tier"] = "basic"
    return doc


def seeds(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [customer(v, i) for v, n in counts.items() for i in range(n)]


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------
def test_a_downgrade_that_leaves_newer_documents_exits_with_its_own_code(
    project: Project,
) -> None:
    project.db[CUSTOMER].insert_many(seeds({"3": 3, "4": 4}))
    before = {d["_id"]: d for d in project.db[CUSTOMER].find({"__version__": "4"})}

    result = project.invoke("downgrade", "Customer", "--to", "2", "--dry-run")
    assert result.exit_code == EXIT_NEWER, result.output
    assert "4 documents newer than the code would be left alone (stored at 4: 4)" in result.output
    assert "would be left as they are" in result.output
    assert project.versions() == {"3": 3, "4": 4}, "a dry run writes nothing"

    result = project.invoke("downgrade", "Customer", "--to", "2", "--no-progress")
    assert result.exit_code == EXIT_NEWER, result.output
    assert "3 downgraded to 2" in result.output
    assert (
        "4 documents (stored at 4) are newer than this code's version 3 and were left"
        in result.output
    )
    assert "`atomdb-migrate downgrade clidemo.Customer --to 2`" in result.output
    assert "the release whose model is at version 4 or later" in result.output
    assert project.versions() == {"2": 3, "4": 4}
    assert {d["_id"]: d for d in project.db[CUSTOMER].find({"__version__": "4"})} == before
    run = project.db["atomdb_migrate_history"].find_one({"command": "downgrade"})
    assert run is not None and run["outcome"] == "failed"
    assert "newer than this code's version 3" in run["error"]
    history = project.invoke("history")
    assert "downgrade failed" in history.output and "newer 4" in history.output

    # With nothing newer left, the same downgrade passes.
    project.db[CUSTOMER].delete_many({"__version__": "4"})
    result = project.invoke("downgrade", "Customer", "--to", "1", "--no-progress")
    assert result.exit_code == 0, result.output


def test_an_upgrade_still_only_warns_of_newer_documents(project: Project) -> None:
    project.db[CUSTOMER].insert_many(seeds({"1": 2, "4": 1}))
    result = project.invoke("upgrade", "Customer", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "warning: 1 documents are newer than this code" in result.output


def test_the_exit_code_comes_from_the_one_table() -> None:
    error = DowngradeLeftNewerError(CUSTOMER, 2, ["4"], "3", "2")
    assert (DowngradeLeftNewerError, EXIT_NEWER) in EXIT_CODES
    assert command_error(error, None).exit_code == EXIT_NEWER
    assert isinstance(error, MigrateError)
    assert (error.model, error.newer, error.versions, error.needed) == (CUSTOMER, 2, ["4"], "4")
    assert error.code_version == "3" and error.target == "2" and not error.dry_run


def test_the_needed_version_is_compared_as_a_version() -> None:
    error = DowngradeLeftNewerError(CUSTOMER, 2, ["9", "10"], "3", "2")
    assert error.needed == "10" and "version 10 or later" in str(error)
    unknown = DowngradeLeftNewerError(CUSTOMER, 1, [], "3", "2")
    assert unknown.needed == "" and "past version 3" in str(unknown)


# ---------------------------------------------------------------------------
# From Python: a property over stored versions, targets, dry or not
# ---------------------------------------------------------------------------
def workspace_url(backend: str, request: pytest.FixtureRequest, name: str) -> str:
    if backend == "mongomock":
        return f"{MEMORY_SCHEME}testing/{name}"
    if backend != "secantus-pymongo":
        pytest.skip("the workspace opens its own PyMongo client: one server backend is enough")
    return f"{server_url(backend, request)}/{name}"


async def downgraded(
    url: str, counts: dict[str, int], to: str, dry: bool
) -> tuple[command.RunResult, dict[str, int], list[dict[str, Any]]]:
    """Seed, downgrade from Python; the result, the versions after, the history."""
    config = load_config(url=url, models=["tests.clidemo"], migrations=STEPS, start=STEPS)
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            docs = seeds(counts)
            if docs:
                await database[CUSTOMER].insert_many(docs)
            result = await command.downgrade(ws, "Customer", to, options=RunOptions(dry_run=dry))
            after: dict[str, int] = {}
            async for d in database[CUSTOMER].find({}, {"__version__": 1}):
                after[d["__version__"]] = after.get(d["__version__"], 0) + 1
            runs = await database["atomdb_migrate_history"].find().to_list(None)
        finally:
            await database.client.drop_database(database.name)
    return result, after, runs


@settings(
    max_examples=DOWNGRADE_NEWER_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    counts=st.fixed_dictionaries({v: st.integers(0, 3) for v in VERSIONS}),
    to=st.sampled_from(["1", "2"]),
    dry=st.booleans(),
)
def test_the_result_says_what_was_left_newer(
    backend: str,
    request: pytest.FixtureRequest,
    demo_registry: MigrationRegistry,
    counts: dict[str, int],
    to: str,
    dry: bool,
) -> None:
    url = workspace_url(backend, request, f"newer_{uuid.uuid4().hex[:12]}")
    result, after, runs = asyncio.run(downgraded(url, counts, to, dry))

    newer = {v: n for v, n in counts.items() if int(v) > 3 and n}
    left = result.left_newer
    assert bool(left) == bool(newer)
    if newer:
        (error,) = left
        assert error.newer == sum(newer.values())
        assert sorted(error.versions) == sorted(newer)
        assert error.needed == max(newer, key=int)
        assert (error.code_version, error.target, error.dry_run) == ("3", to, dry)
    # The documents newer than the code are never touched; the others go to `to`.
    for v, n in newer.items():
        assert after.get(v) == n
    if dry:
        assert after == {v: n for v, n in counts.items() if n}
        assert runs == []
    else:
        taken = sum(n for v, n in counts.items() if int(to) <= int(v) <= 3)
        assert after.get(to, 0) == taken
        (run,) = runs
        assert run["outcome"] == ("failed" if newer else "succeeded")
    # The command line ends such a run with the table's code, and only such a run.
    try:
        summarize(result)
    except click.ClickException as exc:
        assert newer and exc.exit_code == EXIT_NEWER
    else:
        assert not newer
