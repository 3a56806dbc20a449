"""``stamp MODEL VERSION`` asks first: ``--dry-run`` says how many documents it
would change, and on a terminal it asks before changing them (not with
``--yes``), as ``unlock`` does.

"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli import prompts as output
from atomdb_migrate.cli.exits import EXIT_CONFIG, EXIT_DECLINED, EXIT_USAGE
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.steps.registry import MigrationRegistry

from .project import CUSTOMER, STEPS, Project
from .test_downgrade_newer import workspace_url

#: Examples of the property test; raise it with STAMP_EXAMPLES.
STAMP_EXAMPLES = int(os.environ.get("STAMP_EXAMPLES", "25"))

HISTORY = "atomdb_migrate_history"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's input is a terminal: someone is there to answer."""
    monkeypatch.setattr(output, "on_terminal", lambda: True)


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------
def test_a_dry_run_says_how_many_documents_it_would_change(project: Project) -> None:
    project.seed(4)
    project.seed(3, version=None)
    result = project.invoke("stamp", "Customer", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output == "would stamp 3 documents at version 1 (dry run)\n"
    assert project.versions() == {"1": 4, "0": 3}, "nothing written"
    assert project.db[HISTORY].count_documents({}) == 0, "nor recorded"
    # Refused as the stamp itself is: a version the chain does not know.
    refused = project.invoke("stamp", "Customer", "9", "--dry-run")
    assert refused.exit_code == EXIT_CONFIG and "does not know version 9" in refused.output
    usage = project.invoke("stamp", "--accept-checksums", "--dry-run")
    assert usage.exit_code == EXIT_USAGE


def test_on_a_terminal_it_asks_first(project: Project, terminal: None) -> None:
    project.seed(2, version=None)
    declined = project.invoke("stamp", "Customer", "1", input="n\n")
    assert declined.exit_code == EXIT_DECLINED, declined.output
    assert "stamp 2 documents of Customer at version 1, without transforming them?" in (
        declined.output
    )
    assert "no document was stamped (give --yes to stamp without asking)" in declined.output
    assert project.versions() == {"0": 2} and project.db[HISTORY].count_documents({}) == 0

    unanswered = project.invoke("stamp", "Customer", "1", input="")
    assert unanswered.exit_code == EXIT_DECLINED and project.versions() == {"0": 2}

    agreed = project.invoke("stamp", "Customer", "1", input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert "stamped 2 documents at version 1" in agreed.output
    assert project.versions() == {"1": 2}

    told = project.invoke("stamp", "Customer", "0", "--yes")
    assert told.exit_code == 0 and "[y/N]" not in told.output
    assert project.versions() == {"0": 2}


def test_off_a_terminal_it_does_not_ask(project: Project) -> None:
    project.seed(2, version=None)
    result = project.invoke("stamp", "Customer", "1")
    assert result.exit_code == 0 and "[y/N]" not in result.output
    assert project.versions() == {"1": 2}


def test_unlock_asks_the_same_way(project: Project, terminal: None) -> None:
    project.db["atomdb_migrate_lock"].insert_one({"_id": "atomdb-migrate", "owner": "x"})
    kept = project.invoke("unlock", input="n\n")
    assert "clear it? [y/N]" in kept.output and kept.exit_code != 0
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 1


# ---------------------------------------------------------------------------
# From Python: the dry run's count is what the stamp changes
# ---------------------------------------------------------------------------
#: A version stored in its forms: the string, and numbers of each BSON type.
FORMS: list[Any] = ["1", 1, Int64(1), 1.0, "1.0", Decimal128("1"), "2", "3", 2, None]


async def stamped(url: str, stored: list[Any], version: str) -> tuple[int, int, set[Any], int]:
    """Seed `stored` versions; the dry run's count, the stamp's, what is stored after
    the stamp, and the history's records after the dry run."""
    config = load_config(url=url, models=["tests.clidemo"], migrations=STEPS, start=STEPS)
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            docs = [
                {"_id": ObjectId(), "__model__": CUSTOMER}
                | ({} if v is None else {"__version__": v})
                for v in stored
            ]
            if docs:
                await database[CUSTOMER].insert_many(docs)
            would = await command.stamp(ws, "Customer", version, dry_run=True)
            records = await database[HISTORY].count_documents({})
            done = await command.stamp(ws, "Customer", version)
            after = {d.get("__version__") async for d in database[CUSTOMER].find()}
        finally:
            await database.client.drop_database(database.name)
    return would, done, after, records


@settings(
    max_examples=STAMP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(stored=st.lists(st.sampled_from(FORMS), max_size=8), version=st.sampled_from(["1", "3"]))
def test_the_dry_run_counts_what_the_stamp_changes(
    backend: str,
    request: pytest.FixtureRequest,
    demo_registry: MigrationRegistry,
    stored: list[Any],
    version: str,
) -> None:
    url = workspace_url(backend, request, f"stamp_{uuid.uuid4().hex[:12]}")
    would, done, after, records = asyncio.run(stamped(url, stored, version))
    assert records == 0, "a dry run records nothing"
    assert would == done == sum(1 for v in stored if v != version)
    assert after <= {version}
