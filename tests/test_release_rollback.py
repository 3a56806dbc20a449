"""``downgrade --release -N`` and ``--to-release NAME``: every model back to
where an earlier release left it, from the history.

From the command line on the demo project (SecantusDB), and from Python: a
property over generated sequences of releases (upgrades of random subsets
of models, each raising their code's versions), after which taking back the
last release leaves every stored document exactly as it was before it, and
going back to a named release leaves them as that release left them.

"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import EXIT_CONFIG, EXIT_NEWER
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.upgrade import RunOptions
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.exceptions import ReleaseNotFoundError
from atomdb_migrate.steps.registry import MigrationRegistry
from atomdb_migrate.steps.versions import parse_version

from .project import CUSTOMER, ORDER, Project
from .releasedemo import Account, Invoice, Note
from .test_downgrade_newer import workspace_url
from .test_json_output import run_document

#: Examples of the property test; raise it with RELEASE_ROLLBACK_EXAMPLES.
RELEASE_ROLLBACK_EXAMPLES = int(os.environ.get("RELEASE_ROLLBACK_EXAMPLES", "15"))

HISTORY = "atomdb_migrate_history"


# ---------------------------------------------------------------------------
# The command line, on the demo models (Customer 1 -> 2 -> 3, Order 0 -> 1
# without a downgrade)
# ---------------------------------------------------------------------------
def two_releases(project: Project) -> None:
    """Release r1 takes the customers from 1 to 2, r2 from 2 to 3."""
    project.seed(4)
    assert project.invoke("upgrade", "Customer", "--to", "2", "--release", "r1").exit_code == 0
    assert project.invoke("upgrade", "--release", "r2", "--no-progress").exit_code == 0
    assert project.versions() == {"3": 4}


def test_the_last_release_is_taken_back_then_the_one_before(project: Project) -> None:
    two_releases(project)
    runs = list(project.db[HISTORY].find({"command": "upgrade"}).sort("started_at", 1))
    assert [r["arguments"]["release"] for r in runs] == ["r1", "r2"]
    assert runs[1]["models"][CUSTOMER]["by_version"] == {"2": 4}

    dry = project.invoke("downgrade", "--release", "-1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would take back release r2 (it moved clidemo.Customer from 2)" in dry.output
    assert "would take clidemo.Customer back to 2" in dry.output
    assert project.versions() == {"3": 4}, "a dry run writes nothing"

    done = project.invoke("downgrade", "--release", "-1", "--no-progress")
    assert done.exit_code == 0, done.output
    assert "clidemo.Customer: 4 downgraded to 2" in done.output
    assert project.versions() == {"2": 4}
    (run,) = project.db[HISTORY].find({"command": "downgrade"})
    assert run["outcome"] == "succeeded"
    assert run["arguments"]["release"] == "-1"
    assert [u["release"] for u in run["arguments"]["undone"]] == ["r2"]
    assert run["arguments"]["to"] == {CUSTOMER: "2"}

    history = project.invoke("history")
    assert "release -1 (took back r2)" in history.output and "release r1" in history.output
    assert "by_version" not in history.output

    # r2 is taken back: -1 now means r1.
    again = project.invoke("downgrade", "--release", "-1", "--no-progress")
    assert again.exit_code == 0, again.output
    assert "taking back release r1" in again.output
    assert project.versions() == {"1": 4}

    none = project.invoke("downgrade", "--release", "-1")
    assert none.exit_code == EXIT_CONFIG, none.output
    assert "the history holds 0 to take back" in none.output


def test_a_release_taken_back_model_by_model_is_taken_back(project: Project) -> None:
    two_releases(project)
    # r2 taken back by hand, one model at a time: -1 is r1 now.
    done = project.invoke("downgrade", "Customer", "--to", "2", "--no-progress")
    assert done.exit_code == 0, done.output
    dry = project.invoke("downgrade", "--release", "-1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would take back release r1" in dry.output and "r2" not in dry.output

    # A downgrade not as far back as where the release found them: r3 stays.
    assert project.invoke("upgrade", "--release", "r3", "--no-progress").exit_code == 0
    partly = project.invoke("downgrade", "Customer", "--to", "3", "--no-progress")
    assert partly.exit_code == 0, partly.output
    dry = project.invoke("downgrade", "--release", "-1", "--dry-run")
    assert "would take back release r3" in dry.output, dry.output


def test_to_release_goes_back_to_where_it_left_the_models(project: Project) -> None:
    two_releases(project)
    project.db[CUSTOMER].insert_one(
        {
            "_id": ObjectId(),
            "first": "Bo",
            "last": "X",
            "tier": "gold",
            "__model__": CUSTOMER,
            "__version__": "3",
        }
    )
    done = project.invoke("downgrade", "--to-release", "r1", "--no-progress")
    assert done.exit_code == 0, done.output
    assert project.versions() == {"2": 5}

    unknown = project.invoke("downgrade", "--to-release", "nope")
    assert unknown.exit_code == EXIT_CONFIG
    assert "no release named 'nope' to go back to" in unknown.output
    assert "newest first: r1" in unknown.output


def test_the_default_name_is_the_code_versions(project: Project) -> None:
    project.seed(2)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    (run,) = project.db[HISTORY].find({"command": "upgrade"})
    assert run["arguments"]["release"] == f"{CUSTOMER}=3,{ORDER}=1"
    done = project.invoke("downgrade", "--to-release", f"{CUSTOMER}=3,{ORDER}=1")
    assert done.exit_code == 0 and "nothing to do" in done.output, done.output
    assert project.versions() == {"3": 2}


def test_a_model_without_a_downgrade_refuses_the_whole_plan(project: Project) -> None:
    project.seed(3)
    project.db[ORDER].insert_many(
        [{"_id": ObjectId(), "__model__": ORDER, "total": "1.5"} for _ in range(2)]
    )
    assert project.invoke("upgrade", "--release", "r1", "--no-progress").exit_code == 0
    records = project.db[HISTORY].count_documents({})

    for flags in (["--dry-run"], ["--no-progress"]):
        refused = project.invoke("downgrade", "--release", "-1", *flags)
        assert refused.exit_code == EXIT_CONFIG, refused.output
        assert "downgrade" in refused.output and ORDER in refused.output
    assert project.versions() == {"3": 3}, "nothing was written"
    assert project.versions(ORDER) == {"1": 2}
    assert project.db[HISTORY].count_documents({}) == records


def test_documents_newer_than_the_code_exit_10_per_model(project: Project) -> None:
    two_releases(project)
    newer = {
        "_id": ObjectId(),
        "first": "N",
        "last": "W",
        "__model__": CUSTOMER,
        "__version__": "4",
    }
    project.db[CUSTOMER].insert_one(newer)
    for flags in (["--dry-run"], ["--no-progress"]):
        done = project.invoke("downgrade", "--release", "-1", *flags)
        assert done.exit_code == EXIT_NEWER, done.output
        # The command to run from the newer image is the one asked, not each
        # model's `downgrade MODEL --to V` (which would not record r2 as taken back).
        assert "Run `atomdb-migrate downgrade --release -1` from the image" in done.output
        assert f"downgrade {CUSTOMER} --to" not in done.output
    assert project.versions() == {"2": 4, "4": 1}
    (run,) = project.db[HISTORY].find({"command": "downgrade"})
    assert run["outcome"] == "failed"
    assert "Run `atomdb-migrate downgrade --release -1` from the image" in run["error"]
    history = project.invoke("history")
    assert "release -1 (to take back r2)" in history.output, history.output
    assert "took back" not in history.output

    to_release = project.invoke("downgrade", "--to-release", "r1", "--no-progress")
    assert to_release.exit_code == EXIT_NEWER, to_release.output
    assert "Run `atomdb-migrate downgrade --to-release r1` from the image" in to_release.output
    assert "to release r1 (to take back r2)" in project.invoke("history").output


def test_history_names_a_downgrade_to_a_release(project: Project) -> None:
    two_releases(project)
    done = project.invoke("downgrade", "--to-release", "r1", "--no-progress")
    assert done.exit_code == 0, done.output
    history = project.invoke("history")
    assert "to release r1 (took back r2)" in history.output, history.output


def test_json_gives_the_plan_and_each_model(project: Project) -> None:
    two_releases(project)
    out = project.invoke("downgrade", "--release", "-1", "--json", "--no-progress")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    run_document(doc)  # exactly the fields docs/cli.md documents, at every level
    assert doc["exit"] == 0 and doc["error"] is None
    release = doc["release"]
    assert release["asked"] == "-1"
    assert [u["release"] for u in release["undone"]] == ["r2"]
    assert release["undone"][0]["moved"] == {CUSTOMER: "2"}
    assert release["plan"] == [{"model": CUSTOMER, "to": "2"}]
    assert [(m["model"], m["target"], m["migrated"]) for m in doc["models"]] == [(CUSTOMER, "2", 4)]


def test_usage_errors(project: Project) -> None:
    for args in (
        ["downgrade"],
        ["downgrade", "Customer"],
        ["downgrade", "Customer", "--release", "-1"],
        ["downgrade", "--release", "-1", "--to-release", "r1"],
        ["downgrade", "--release", "0"],
        ["downgrade", "--release", "1"],
    ):
        assert project.invoke(*args).exit_code == 2, args


# ---------------------------------------------------------------------------
# From Python: generated sequences of releases
# ---------------------------------------------------------------------------
MODELS = (Account, Invoice, Note)
TOP = 5


def write_steps(folder: Path) -> None:
    """Steps 1 -> ... -> 5 of each model, each adding ``vN``, its downgrade removing it."""
    folder.mkdir(exist_ok=True)
    for m, cls in enumerate(MODELS):
        for v in range(1, TOP):
            (folder / f"{m:02d}{v:02d}_{cls.__name__.lower()}_{v + 1}.py").write_text(
                f'"""Add v{v + 1}."""\n\nmodel = "{cls.__model__}"\n'
                f'from_version = "{v}"\nto_version = "{v + 1}"\n\n\n'
                f"def upgrade(doc):\n    doc['v{v + 1}'] = {v + 1}\n\n\n"
                f"def downgrade(doc):\n    doc.pop('v{v + 1}')\n"
            )


def set_code_version(cls: type, version: int) -> None:
    cls.__version__ = str(version)  # type: ignore[attr-defined]
    cls.__parsed_version__ = parse_version(str(version))  # type: ignore[attr-defined]


@pytest.fixture
def release_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[MigrationRegistry]:
    """A registry of the release models alone; their code versions restored after."""
    registry = MigrationRegistry()
    for cls in MODELS:
        registry.register_model(cls)
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    yield registry
    for cls in MODELS:
        set_code_version(cls, TOP)


async def snapshot(database: Any) -> dict[str, list[dict[str, Any]]]:
    """Every stored document of each model, by ``_id``."""
    return {
        cls.__model__: await database[cls.__model__].find().sort("_id", 1).to_list(None)
        for cls in MODELS
    }


#: A release: for each model, how many versions it raises it by (0: not in it).
RELEASES = st.lists(
    st.fixed_dictionaries({cls.__model__: st.integers(0, 2) for cls in MODELS}),
    min_size=1,
    max_size=4,
)


async def releases_then_back(
    url: str, folder: Path, releases: list[dict[str, int]], seeds: list[int], back_to: int | None
) -> tuple[list[Any], Any, command.RunResult | ReleaseNotFoundError, list[dict[str, Any]]]:
    """Seed at 1, run the releases, then take back the last (`back_to` None)
    or go back to release `back_to`: the snapshots after each release (the
    first before any), the one after the downgrade, the result, the history."""
    config = load_config(url=url, models=["tests.releasedemo"], migrations=folder, start=folder)
    versions = {cls.__model__: 1 for cls in MODELS}
    for cls in MODELS:
        set_code_version(cls, 1)
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            for cls, n in zip(MODELS, seeds, strict=True):
                docs = [
                    {"_id": ObjectId(), "__model__": cls.__model__, "__version__": "1", "n": i}
                    for i in range(n)
                ]
                await database[cls.__model__].insert_many(docs)
            states = [await snapshot(database)]
            done = 0
            for raised in releases:
                chosen = [c for c in MODELS if raised[c.__model__] and versions[c.__model__] < TOP]
                if not chosen:
                    continue
                for cls in chosen:
                    versions[cls.__model__] = min(
                        TOP, versions[cls.__model__] + raised[cls.__model__]
                    )
                    set_code_version(cls, versions[cls.__model__])
                names = [c.__model__ for c in chosen]
                await command.upgrade(ws, names, options=RunOptions(release=f"r{done}"))
                done += 1
                states.append(await snapshot(database))
            outcome: command.RunResult | ReleaseNotFoundError
            try:
                if back_to is None:
                    _, outcome = await command.downgrade_releases(ws, back=-1)
                else:
                    _, outcome = await command.downgrade_releases(ws, to_release=f"r{back_to}")
            except ReleaseNotFoundError as exc:
                outcome = exc
            after = await snapshot(database)
            runs = await database[config.history_collection].find().to_list(None)
        finally:
            await database.client.drop_database(database.name)
    return states, after, outcome, runs


@settings(
    max_examples=RELEASE_ROLLBACK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    releases=RELEASES,
    seeds=st.lists(st.integers(1, 4), min_size=len(MODELS), max_size=len(MODELS)),
    back=st.one_of(st.none(), st.integers(0, 3)),
)
def test_taking_back_releases_restores_the_documents(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    release_registry: MigrationRegistry,
    releases: list[dict[str, int]],
    seeds: list[int],
    back: int | None,
) -> None:
    folder = tmp_path / "migrations"
    write_steps(folder)
    url = workspace_url(backend, request, f"releases_{uuid.uuid4().hex[:12]}")
    states, after, outcome, runs = asyncio.run(
        releases_then_back(url, folder, releases, seeds, back)
    )
    released = len(states) - 1
    event(f"{released} releases, taking back {'the last' if back is None else 'to r' + str(back)}")
    downgrades = [r for r in runs if r["command"] == "downgrade"]
    if isinstance(outcome, ReleaseNotFoundError):
        # Only when fewer releases ran than asked for (a release raising
        # only models at the top is no release): nothing was written.
        assert (back is None and released == 0) or (back is not None and back >= released)
        assert after == states[-1] and downgrades == []
        return
    assert (back is None and released >= 1) or (back is not None and back < released)
    if back is None:
        assert after == states[-2], "every document as it was before the last release"
    else:
        assert after == states[back + 1], "every document as the release left it"
    assert not outcome.left_newer and not outcome.failures
    if outcome.reports:
        (run,) = downgrades
        assert run["outcome"] == "succeeded"
        assert run["arguments"]["release"] == ("-1" if back is None else f"r{back}")
    else:
        assert downgrades == [], "nothing to take back: nothing recorded"


async def ordered_releases(url: str, folder: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Two releases, the second upgrading Note then Account, some Notes already
    ahead; the plans of -1 and -2, what -1 ran, the census after -1 then -1."""
    config = load_config(url=url, models=["tests.releasedemo"], migrations=folder, start=folder)
    for cls in MODELS:
        set_code_version(cls, 2)
    async with Workspace(config) as ws:
        await ws.connect()
        database = ws.database
        try:
            for cls in MODELS:
                doc = {"__model__": cls.__model__, "__version__": "1", "n": 0}
                await database[cls.__model__].insert_one(doc)
            await command.upgrade(ws, options=RunOptions(release="first"))
            await database[Note.__model__].insert_one(
                {"__model__": Note.__model__, "__version__": "3", "v2": 2, "v3": 3, "n": 1}
            )
            set_code_version(Note, 4)
            set_code_version(Account, 3)
            names = [Note.__model__, Account.__model__]
            await command.upgrade(ws, names, options=RunOptions(release="second"))
            last = await command.plan_releases(ws, back=-1)
            both = await command.plan_releases(ws, back=-2)
            plan, result = await command.downgrade_releases(ws, back=-1)
            census = {}
            for cls in MODELS:
                rows = await database[cls.__model__].find().to_list(None)
                census[cls.__model__] = sorted(d["__version__"] for d in rows)
            _, again = await command.downgrade_releases(ws, back=-1)
            for cls in MODELS:
                rows = await database[cls.__model__].find().to_list(None)
                census[f"{cls.__model__} after"] = sorted(d["__version__"] for d in rows)
        finally:
            await database.client.drop_database(database.name)
    return (last, both), plan, (result, again), census


def test_the_order_is_the_reverse_of_the_upgrade_and_the_lowest_version_wins(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    release_registry: MigrationRegistry,
) -> None:
    if backend != "mongomock":
        pytest.skip("one backend is enough: the plan is read from the history")
    folder = tmp_path / "migrations"
    write_steps(folder)
    url = workspace_url(backend, request, f"order_{uuid.uuid4().hex[:12]}")
    (last, both), plan, (result, again), census = asyncio.run(ordered_releases(url, folder))
    # The second release found the notes at 2 and 3: back to the lowest.
    assert [r.name for r in last.undone] == ["second"]
    assert list(last.targets.items()) == [(Account.__model__, "2"), (Note.__model__, "2")]
    # Two releases back: the newest first, each in reverse; the oldest's versions.
    assert [r.name for r in both.undone] == ["second", "first"]
    assert list(both.targets.items()) == [
        (Account.__model__, "1"),
        (Note.__model__, "1"),
        (Invoice.__model__, "1"),
    ]
    assert plan.targets == last.targets, "the plan run is the plan made before"
    assert [r.model for r in result.reports] == [Account.__model__, Note.__model__]
    assert census[Note.__model__] == ["2", "2"] and census[Account.__model__] == ["2"]
    # The second -1 takes back the first release: every model at 1.
    assert [r.model for r in again.reports] == [m.__model__ for m in reversed(MODELS)]
    for cls in MODELS:
        assert set(census[f"{cls.__model__} after"]) == {"1"}
