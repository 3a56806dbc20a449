"""A rollback build on the command line: code whose ``__version__`` is below
documents a newer release stored, shipping that release's steps.

The demo customer's code is at version 3 (tests/clidemo.py); the test adds
a step 3 -> 4 of the newer release, and the model reads newer documents
through its downgrades (``__on_newer__ = "downgrade"``).

"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from atomdb_migrate.cli.exits import EXIT_STEP
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.upgrade import RunOptions
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.steps.registry import MigrationRegistry
from tests.clidemo import Customer

from .project import CUSTOMER, STEPS, Project
from .test_downgrade_newer import workspace_url

#: Examples of the progress property; raise it with ROLLBACK_PROGRESS_EXAMPLES.
PROGRESS_EXAMPLES = int(os.environ.get("ROLLBACK_PROGRESS_EXAMPLES", "20"))
#: Examples of the downgrade sample property; raise it with ROLLBACK_SAMPLE_EXAMPLES.
SAMPLE_EXAMPLES = int(os.environ.get("ROLLBACK_SAMPLE_EXAMPLES", "20"))
#: The tiers a customer at 3 or 4 has: the fragile downgrade fails gold and bad.
TIERS = ["basic", "gold", "bad"]

#: The newer release's step, shipped by the rollback build.
STEP_4 = '''"""Rank every customer."""

model = "clidemo.Customer"
from_version = "3"
to_version = "4"


def upgrade(doc):
    doc["rank"] = len(doc.get("last", ""))


def downgrade(doc):
    doc.pop("rank", None)
'''


def customer(version: str, i: int) -> dict[str, Any]:
    """A demo customer in the shape of `version` (1 to 4)."""
    doc: dict[str, Any] = {"_id": ObjectId(), "__model__": CUSTOMER, "__version__": version}
    if version == "1":
        doc["name"] = f"Ada {i}"
    else:
        doc.update(first="Ada", last=str(i))
    if version in ("3", "4"):
        doc["tier"] = "basic"
    if version == "4":
        doc["rank"] = len(str(i))
    return doc


@pytest.fixture
def rollback(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project as a rollback build: the step 3 -> 4 shipped, newer documents read."""
    (project.path / "migrations" / "0004_rank.py").write_text(STEP_4)
    monkeypatch.setattr(Customer, "__on_newer__", "downgrade")
    return project


def seed(project: Project, counts: dict[str, int]) -> None:
    project.db[CUSTOMER].insert_many([customer(v, i) for v, n in counts.items() for i in range(n)])


# ---------------------------------------------------------------------------
# Upgrade's progress counts only the documents it migrates
# ---------------------------------------------------------------------------
def test_upgrade_progress_leaves_out_newer_documents(rollback: Project) -> None:
    seed(rollback, {"4": 3})
    result = rollback.invoke("upgrade", "Customer")
    assert result.exit_code == 0, result.output
    assert "3 newer than the code" in result.output
    assert "3 documents to migrate" not in result.output
    assert "3/3" not in result.output


def test_upgrade_progress_counts_the_documents_it_migrates(rollback: Project) -> None:
    seed(rollback, {"1": 2, "3": 1, "4": 3})
    result = rollback.invoke("upgrade", "Customer")
    assert result.exit_code == 0, result.output
    assert "2 upgraded to 3" in result.output and "3 newer than the code" in result.output
    assert "clidemo.Customer: 2 documents to migrate" in result.output
    assert "clidemo.Customer: 2/2 documents" in result.output


class Recorder:
    """A `Progress` that keeps what it is told: each start, and the documents advanced."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []  # [total, done] a start

    def start(self, model: str, total: int) -> None:
        self.runs.append([total, 0])

    def advance(self, count: int) -> None:
        self.runs[-1][1] += count

    def finish(self) -> None:
        pass


async def upgraded(
    url: str, folder: Path, counts: dict[str, int], direction: str, to: str | None
) -> tuple[command.RunResult, Recorder]:
    """Seed, upgrade or downgrade from Python with a recording progress."""
    config = load_config(url=url, models=["tests.clidemo"], migrations=folder, start=folder)
    recorder = Recorder()
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            docs = [customer(v, i) for v, n in counts.items() for i in range(n)]
            if docs:
                await database[CUSTOMER].insert_many(docs)
            if to is None:
                result = await command.upgrade(ws, ["Customer"], progress=recorder)
            else:
                result = await command.downgrade(ws, "Customer", to, progress=recorder)
        finally:
            await database.client.drop_database(database.name)
    return result, recorder


@pytest.fixture(scope="module")
def rollback_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo steps and the newer release's (one folder: the registry loads it once)."""
    folder = tmp_path_factory.mktemp("steps")
    shutil.copytree(STEPS, folder, dirs_exist_ok=True)
    (folder / "0004_rank.py").write_text(STEP_4)
    return folder


@settings(
    max_examples=PROGRESS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    counts=st.fixed_dictionaries({v: st.integers(0, 3) for v in ("0", "1", "2", "3", "4")}),
    way=st.sampled_from([("upgrade", None), ("downgrade", "1"), ("downgrade", "2")]),
)
def test_progress_counts_only_what_the_run_migrates(
    backend: str,
    request: pytest.FixtureRequest,
    demo_registry: MigrationRegistry,
    rollback_steps: Path,
    monkeypatch: pytest.MonkeyPatch,
    counts: dict[str, int],
    way: tuple[str, str | None],
) -> None:
    folder = rollback_steps
    monkeypatch.setattr(Customer, "__on_newer__", "downgrade")
    url = workspace_url(backend, request, f"progress_{uuid.uuid4().hex[:12]}")
    direction, to = way
    if direction == "upgrade":
        counts = {**counts, "0": 0}  # the demo chain starts at 1
    result, recorder = asyncio.run(upgraded(url, folder, counts, direction, to))

    (report,) = result.reports
    moved = report.migrated + report.failed
    newer = counts["4"]
    assert report.newer == newer
    # Every count the progress gave is of documents the run migrated.
    assert sum(total for total, _ in recorder.runs) == moved
    assert sum(done for _, done in recorder.runs) == moved
    for total, done in recorder.runs:
        assert done == total


# ---------------------------------------------------------------------------
# history marks the steps above the code's version
# ---------------------------------------------------------------------------
def test_history_marks_the_steps_above_the_code(rollback: Project) -> None:
    result = rollback.invoke("history")
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines()}
    assert "(above the code's version 3)" in lines["3 -> 4"]
    for below in ("1 -> 2", "2 -> 3"):
        assert "above the code" not in lines[below]

    result = rollback.invoke("history", "--json")
    assert result.exit_code == 0, result.output
    chain = json.loads(result.stdout)["chains"][CUSTOMER]
    assert [(s["from"], s["to"], s["above_code"]) for s in chain] == [
        ("1", "2", False),
        ("2", "3", False),
        ("3", "4", True),
    ]


#: Examples of the history property; raise it with ROLLBACK_HISTORY_EXAMPLES.
HISTORY_EXAMPLES = int(os.environ.get("ROLLBACK_HISTORY_EXAMPLES", "8"))


@settings(
    max_examples=HISTORY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(code=st.sampled_from(["1", "2", "3", "4"]), as_json=st.booleans())
def test_history_marks_exactly_the_steps_above_the_code(
    rollback: Project, monkeypatch: pytest.MonkeyPatch, code: str, as_json: bool
) -> None:
    """Whatever the code's version, the steps marked are those that go above it."""
    monkeypatch.setattr(Customer, "__version__", code)
    monkeypatch.setattr(Customer, "__parsed_version__", Version(code))
    result = rollback.invoke("history", *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    expected = {f"{n} -> {n + 1}": n + 1 > int(code) for n in (1, 2, 3)}
    if as_json:
        chain = json.loads(result.stdout)["chains"][CUSTOMER]
        marked = {f"{s['from']} -> {s['to']}": s["above_code"] for s in chain}
    else:
        customer_lines = result.output.split(f"{CUSTOMER}:\n", 1)[1].split(":\n", 1)[0]
        marked = {
            line.strip().split("  ")[0]: f"(above the code's version {code})" in line
            for line in customer_lines.splitlines()
            if " -> " in line
        }
    assert marked == expected


# ---------------------------------------------------------------------------
# downgrade --dry-run tries a sample
# ---------------------------------------------------------------------------
#: The demo's step 2 -> 3, its downgrade failing for a gold customer, and giving
#: a tier the model cannot restore (a number) for a "bad" one.
FRAGILE_TIER = '''"""Give every customer a tier."""

model = "clidemo.Customer"
from_version = "2"
to_version = "3"


async def upgrade(doc):
    doc.setdefault("tier", "basic")


def downgrade(doc):
    tier = doc.pop("tier", None)
    if tier == "gold":
        raise ValueError("a gold tier cannot go back")
    if tier == "bad":
        doc["tier"] = 5
'''


def test_downgrade_dry_run_tries_a_sample(project: Project) -> None:
    seed(project, {"3": 3})
    result = project.invoke("downgrade", "Customer", "--to", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "sample of 3 documents (stored at 3: 3): all restore" in result.output
    assert project.versions() == {"3": 3}, "a dry run writes nothing"


def test_downgrade_dry_run_says_the_sampled_documents_that_fail(project: Project) -> None:
    (project.path / "migrations" / "0002_add_tier.py").write_text(FRAGILE_TIER)
    docs = [customer("3", i) for i in range(3)]
    docs[1]["tier"], docs[2]["tier"] = "gold", "bad"
    project.db[CUSTOMER].insert_many(docs)
    result = project.invoke("downgrade", "Customer", "--to", "2", "--dry-run", "--json")
    assert result.exit_code == EXIT_STEP, result.output
    (model,) = json.loads(result.stdout)["models"]
    samples = {s["_id"]: s for s in model["samples"]}
    assert [samples[str(d["_id"])]["ok"] for d in docs] == [True, False, False]
    assert "a gold tier cannot go back" in samples[str(docs[1]["_id"])]["error"]
    assert "tier" in samples[str(docs[2]["_id"])]["error"]

    result = project.invoke("downgrade", "Customer", "--to", "2", "--dry-run")
    assert result.exit_code == EXIT_STEP, result.output
    assert "sample of 3 documents (stored at 3: 3): 1 restore, 2 fail" in result.output
    assert f"sample _id={docs[1]['_id']!r} from 3: FAILS:" in result.output
    assert "some sampled documents do not downgrade cleanly" in result.output
    assert project.versions() == {"3": 3}


@pytest.fixture(scope="module")
def fragile_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo steps, the step 2 -> 3's downgrade failing for some tiers."""
    folder = tmp_path_factory.mktemp("fragile")
    shutil.copytree(STEPS, folder, dirs_exist_ok=True)
    (folder / "0002_add_tier.py").write_text(FRAGILE_TIER)
    return folder


async def sampled(
    url: str, folder: Path, docs: list[dict[str, Any]], to: str, sample: int
) -> command.RunResult:
    """Seed `docs`, dry-run a downgrade to `to` from Python."""
    config = load_config(url=url, models=["tests.clidemo"], migrations=folder, start=folder)
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            await database[CUSTOMER].insert_many(docs)
            options = RunOptions(dry_run=True, sample=sample)
            result = await command.downgrade(ws, "Customer", to, options=options)
            assert await database[CUSTOMER].count_documents({}) == len(docs)
            for doc in docs:
                assert await database[CUSTOMER].find_one({"_id": doc["_id"]}) == doc
        finally:
            await database.client.drop_database(database.name)
    return result


@settings(
    max_examples=SAMPLE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    stored=st.lists(
        st.tuples(st.sampled_from(["1", "2", "3", "4"]), st.sampled_from(TIERS)),
        min_size=1,
        max_size=8,
    ),
    to=st.sampled_from(["1", "2"]),
    sample=st.integers(0, 5),
)
def test_a_downgrade_sample_fails_exactly_the_documents_that_do_not_go_back(
    backend: str,
    request: pytest.FixtureRequest,
    demo_registry: MigrationRegistry,
    fragile_steps: Path,
    stored: list[tuple[str, str]],
    to: str,
    sample: int,
) -> None:
    """The sample is the first documents (by ``_id``) the downgrade takes; one fails
    when its downgrade raises, or gives what the code's model cannot restore."""
    docs = []
    for i, (version, tier) in enumerate(stored):
        doc = customer(version, i)
        if version in ("3", "4"):
            doc["tier"] = tier
        docs.append(doc)
    url = workspace_url(backend, request, f"sample_{uuid.uuid4().hex[:12]}")
    result = asyncio.run(sampled(url, fragile_steps, docs, to, sample))

    (report,) = result.reports
    taken = [d for d in docs if int(to) < int(d["__version__"]) <= 3][:sample]
    assert [s["_id"] for s in report.samples] == [d["_id"] for d in taken]
    for s, doc in zip(report.samples, taken, strict=True):
        fails = doc["__version__"] == "3" and doc["tier"] in ("gold", "bad")
        assert s["ok"] is not fails, (s, doc)
        assert s["from"] == doc["__version__"]
