"""Several databases: ``--database`` repeated, ``--databases REGEX``, ``--canary``.

One database per tenant is common; each database is upgraded, surveyed and
checked in turn, under its own lock, and the command ends with a summary.

"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId

from atomdb_migrate.cli.exits import EXIT_CHECK, EXIT_CHECKSUM, EXIT_CONFIG, EXIT_LOCK, EXIT_STEP
from atomdb_migrate.commands import several as command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.engine.lock import LOCK_ID

from .project import CUSTOMER, Project


@pytest.fixture
def tenants(project: Project) -> Iterator[list[str]]:
    """Three tenant databases beside the project's own, dropped afterwards."""
    names = [f"{project.dbname}_t{i}" for i in range(3)]
    yield names
    for name in names:
        project.client.drop_database(name)


def seed(project: Project, database: str, n: int, *, names: list[str] | None = None) -> None:
    docs: list[dict[str, Any]] = [
        {"_id": ObjectId(), "name": name, "__model__": CUSTOMER, "__version__": "1"}
        for name in (names or [f"Ada {i}" for i in range(n)])
    ]
    project.client[database][CUSTOMER].insert_many(docs)


def versions(project: Project, database: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in project.client[database][CUSTOMER].find({}, {"__version__": 1}):
        out[d["__version__"]] = out.get(d["__version__"], 0) + 1
    return out


def test_database_repeated_upgrades_each_with_a_summary(
    project: Project, tenants: list[str]
) -> None:
    for i, name in enumerate(tenants[:2]):
        seed(project, name, 5 + i)
    args = ["--database", tenants[0], "--database", tenants[1]]
    result = project.invoke(*args, "upgrade")
    assert result.exit_code == 0, result.output
    assert f"database {tenants[0]}:" in result.output
    assert f"database {tenants[1]}:" in result.output
    assert "2 databases:" in result.output
    assert f"  {tenants[0]}: 5 documents upgraded" in result.output
    assert f"  {tenants[1]}: 6 documents upgraded" in result.output
    assert versions(project, tenants[0]) == {"3": 5}
    assert versions(project, tenants[1]) == {"3": 6}
    # The database in the URL is not one of them: left alone.
    assert project.client[project.dbname][CUSTOMER].count_documents({}) == 0
    # Each database keeps its own lock and its own history.
    for name in tenants[:2]:
        assert project.client[name]["atomdb_migrate_history"].count_documents({}) == 1
        assert project.client[name]["atomdb_migrate_lock"].count_documents({}) == 0


def test_a_pattern_matches_the_servers_databases(project: Project, tenants: list[str]) -> None:
    for name in tenants:
        seed(project, name, 3)
    pattern = f"^{project.dbname}_t[0-9]$"
    result = project.invoke("--databases", pattern, "status", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["database"], r["model"], r["pending"]) for r in rows] == [
        (name, model, n) for name in tenants for model, n in ((CUSTOMER, 3), ("clidemo.Order", 0))
    ]

    code, out = project.run("--databases", pattern, "check", "--pending")
    assert code == EXIT_CHECK, out
    assert out.count("3 stored documents are behind version 3") == 3
    assert "3 of 3 databases failed" in out

    code, out = project.run("--databases", pattern, "upgrade")
    assert code == 0, out
    assert "3 databases:" in out
    result = project.invoke("--databases", pattern, "check", "--pending")
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") >= 3
    result = project.invoke("--databases", pattern, "status")
    assert result.exit_code == 0, result.output
    assert f"  {tenants[2]}: up to date" in result.output


async def test_the_servers_own_databases_match_no_pattern(
    project: Project, tenants: list[str]
) -> None:
    for name in tenants:
        seed(project, name, 1)
    config = load_config(url=project.url, databases=f"^(admin|config|local)$|^{project.dbname}_t")
    async with command.Workspace(config) as ws:
        assert await command.databases(ws) == sorted(tenants)
        # Named ones come first, in their order, each once.
        ws.config.databases = [tenants[2], tenants[2]]
        assert await command.databases(ws) == [tenants[2], tenants[0], tenants[1]]
        assert await command.databases(ws, canary=tenants[1]) == [
            tenants[1],
            tenants[2],
            tenants[0],
        ]
        # The tenants' workspaces share one client and the loaded steps.
        first = ws.for_database(tenants[0])
        await first.connect()
        assert first.database.name == tenants[0]
        assert await first.client() is await ws.client()
        await first.close()
        # Closing a tenant's workspace leaves the shared client open.
        async with ws.for_database(tenants[1]) as second:
            assert await second.database[CUSTOMER].count_documents({}) == 1


def test_a_failing_database_does_not_stop_the_others(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 0, names=["Ada Lovelace", "BOOM"])
    seed(project, tenants[1], 4)
    args = ["--database", tenants[0], "--database", tenants[1]]
    result = project.invoke(*args, "upgrade")
    assert result.exit_code == EXIT_STEP, result.output
    assert f"  {tenants[0]}: failed (exit {EXIT_STEP})" in result.output
    assert f"  {tenants[1]}: 4 documents upgraded" in result.output
    assert f"1 of 2 databases failed: {tenants[0]}" in result.output
    assert versions(project, tenants[1]) == {"3": 4}


def test_a_failing_canary_stops_the_run(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 3)
    seed(project, tenants[1], 0, names=["Ada Lovelace", "BOOM"])
    seed(project, tenants[2], 3)
    pattern = f"^{project.dbname}_t"
    code, out = project.run("--databases", pattern, "upgrade", "--canary", tenants[1])
    assert code == EXIT_STEP, out
    assert out.index(f"database {tenants[1]}:") < out.index("3 databases:")
    assert f"database {tenants[0]}:" not in out
    assert f"  {tenants[0]}: not reached: the canary failed" in out
    assert f"the canary database {tenants[1]} failed; 2 other databases left as they were" in out
    assert versions(project, tenants[0]) == {"1": 3}
    assert versions(project, tenants[2]) == {"1": 3}

    # A canary that passes goes first, then the others.
    project.client[tenants[1]][CUSTOMER].delete_many({"name": "BOOM"})
    code, out = project.run("--databases", pattern, "upgrade", "--canary", tenants[1])
    assert code == 0, out
    order = [out.index(f"database {name}:") for name in (tenants[1], tenants[0], tenants[2])]
    assert order == sorted(order)
    for name in tenants:
        assert set(versions(project, name)) == {"3"}


def test_one_lock_per_database(project: Project, tenants: list[str]) -> None:
    for name in tenants[:2]:
        seed(project, name, 2)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    project.client[tenants[0]]["atomdb_migrate_lock"].insert_one(
        {"_id": LOCK_ID, "owner": "elsewhere", "command": "upgrade", "expires_at": until}
    )
    args = ["--database", tenants[0], "--database", tenants[1]]
    result = project.invoke(*args, "upgrade")
    assert result.exit_code == EXIT_LOCK, result.output
    assert f"  {tenants[0]}: failed (exit {EXIT_LOCK})" in result.output
    # The command that clears that database's lock alone, were its runner dead.
    assert f"`atomdb-migrate --database {tenants[0]} unlock`" in result.output
    assert f"--database {tenants[1]} unlock" not in result.output
    assert versions(project, tenants[0]) == {"1": 2}
    assert versions(project, tenants[1]) == {"3": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--databases", "^nothing-is-named-so$", "status"], "no database on the server matches"),
        (["--database", "no-such-db", "--databases", "^x", "status"], "no database 'no-such-db'"),
        (["--databases", "^nothing-is-named-so$", "upgrade"], "no database on the server matches"),
        (["--database", "my db", "status"], "which MongoDB refuses in a database name"),
        (["--database", "a.b", "upgrade"], "'.'"),
        (["--database", "a$b", "upgrade"], "'$'"),
        (["--database", "a/b", "--database", "c", "status"], "'/'"),
        (["--database", "x" * 64, "status"], "longer than MongoDB takes"),
        (["--databases", "(", "status"], "is not a regular expression"),
        (["--databases", "", "status"], "not an empty one"),
        (["--database", "", "status"], "cannot be empty"),
        (["--database", "a", "--database", "b", "downgrade", "Customer", "--to", "1"], "one"),
        (["--database", "a", "--database", "b", "stamp", "Customer", "1"], "one database"),
        (["--database", "a", "--database", "b", "history"], "one database at a time"),
        (["--database", "a", "upgrade", "--canary", "b"], "is not among the databases"),
    ],
)
def test_settings_that_name_no_database_to_work_on(
    project: Project, args: list[str], message: str
) -> None:
    result = project.invoke(*args)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert message in result.output


def test_pyproject_names_databases_by_pattern(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 2)
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'databases = "^{project.dbname}_t0$"\n')
    result = project.invoke("status")
    assert result.exit_code == 0, result.output
    assert f"database {tenants[0]}:" in result.output
    # One --database on the command line replaces the pattern.
    result = project.invoke("--database", tenants[1], "status")
    assert "database " not in result.output, result.output
    pyproject.write_text(pyproject.read_text() + 'database = "app"\n')
    result = project.invoke("status")
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "sets both database and databases" in result.output


def test_many_databases(project: Project) -> None:
    names = [f"{project.dbname}_m{i:02d}-ü" for i in range(25)]
    try:
        for i, name in enumerate(names):
            if i % 3:
                seed(project, name, i % 3)
            project.client[name][CUSTOMER].insert_one(
                {"first": "Up", "last": "ToDate", "__model__": CUSTOMER, "__version__": "3"}
            )
        pattern = f"^{project.dbname}_m"
        result = project.invoke("--databases", pattern, "check", "--pending")
        assert result.exit_code == EXIT_CHECK, result.output
        behind = [name for i, name in enumerate(names) if i % 3]
        assert f"{len(behind)} of 25 databases failed: {', '.join(behind)}" in result.output
        result = project.invoke("--databases", pattern, "upgrade", "--no-progress")
        assert result.exit_code == 0, result.output
        assert "25 databases:" in result.output
        for i, name in enumerate(names):
            assert f"  {name}: {i % 3} documents upgraded" in result.output
            assert versions(project, name) == {"3": i % 3 + 1}
        result = project.invoke("--databases", pattern, "check", "--pending")
        assert result.exit_code == 0, result.output
    finally:
        for name in names:
            project.client.drop_database(name)


def test_a_name_and_a_pattern_together(project: Project, tenants: list[str]) -> None:
    for name in tenants:
        seed(project, name, 1)
    args = ["--database", tenants[2], "--databases", f"^{project.dbname}_t[01]$"]
    result = project.invoke(*args, "check", "--pending")
    assert result.exit_code == EXIT_CHECK, result.output
    assert f"3 of 3 databases failed: {tenants[2]}, {tenants[0]}, {tenants[1]}" in result.output
    result = project.invoke(*args, "upgrade", "--canary", tenants[1])
    assert result.exit_code == 0, result.output
    order = [result.output.index(f"database {n}:") for n in (tenants[1], tenants[2], tenants[0])]
    assert order == sorted(order)


def test_the_same_name_twice_is_one_database(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 2)
    result = project.invoke("--database", tenants[0], "--database", tenants[0], "upgrade")
    assert result.exit_code == 0, result.output
    assert "database " not in result.output  # one database: no headers, no summary
    result = project.invoke(
        "--database", tenants[0], "--database", tenants[0], "downgrade", "Customer", "--to", "2"
    )
    assert result.exit_code == 0, result.output


def test_what_does_not_depend_on_the_database_is_said_once(
    project: Project, tenants: list[str]
) -> None:
    for name in tenants:
        seed(project, name, 1)
    (project.path / "migrations" / "0009_broken.py").write_text("this is not python\n")
    pattern = f"^{project.dbname}_t"
    for args in (["check", "--pending"], ["upgrade"], ["status"]):
        result = project.invoke("--databases", pattern, *args)
        assert result.exit_code in (EXIT_CHECK, EXIT_CONFIG), result.output
        assert result.output.count("0009_broken.py") == 1, result.output
        assert "database " not in result.output.replace("database names", "")
    for name in tenants:
        assert versions(project, name) == {"1": 1}


def test_a_database_dropped_meanwhile_is_not_made_again(
    project: Project, tenants: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in tenants[:2]:
        seed(project, name, 1)
    real = command.database_exists

    async def dropped_meanwhile(ws: Any, name: str) -> bool:
        if name == tenants[1]:
            project.client.drop_database(name)
        return await real(ws, name)

    monkeypatch.setattr(command, "database_exists", dropped_meanwhile)
    result = project.invoke("--databases", f"^{project.dbname}_t", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"  {tenants[1]}: left alone: no longer on the server" in result.output
    assert tenants[1] not in project.client.list_database_names()
    assert versions(project, tenants[0]) == {"3": 1}


def test_one_database_said_in_the_singular(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 0, names=["BOOM"])
    result = project.invoke(
        "--databases", f"^{project.dbname}_t0$", "upgrade", "--canary", tenants[0]
    )
    assert result.exit_code == EXIT_STEP, result.output
    assert "1 database:" in result.output
    assert f"the canary database {tenants[0]} failed; 0 other databases left" in result.output


def test_a_pattern_matching_nothing_beside_a_name(project: Project, tenants: list[str]) -> None:
    seed(project, tenants[0], 1)
    result = project.invoke("--database", tenants[0], "--databases", "^nomatch", "upgrade")
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "no database on the server matches --databases '^nomatch'" in result.output
    assert versions(project, tenants[0]) == {"1": 1}


def test_unlock_clears_each_databases_lock(project: Project, tenants: list[str]) -> None:
    """As the lock error says to: `unlock` with the databases of pyproject."""
    for name in tenants:
        seed(project, name, 1)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    for name in tenants[:2]:  # two runners killed; the third database is free
        project.client[name]["atomdb_migrate_lock"].insert_one(
            {"_id": LOCK_ID, "owner": f"dead-{name}", "command": "upgrade", "expires_at": past}
        )
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'databases = "^{project.dbname}_t"\n')
    refused = project.invoke("unlock", input="n\n" * 3)
    assert refused.exit_code == EXIT_LOCK, refused.output
    assert f"  {tenants[2]}: the migration lock is free" in refused.output
    assert project.client[tenants[0]]["atomdb_migrate_lock"].count_documents({}) == 1
    result = project.invoke("unlock", "--yes")
    assert result.exit_code == 0, result.output
    assert "3 databases:" in result.output
    for name in tenants[:2]:
        assert f"  {name}: cleared the migration lock" in result.output
        assert project.client[name]["atomdb_migrate_lock"].count_documents({}) == 0
    assert f"  {tenants[2]}: the migration lock is free" in result.output


def test_accept_checksums_in_each_database(project: Project, tenants: list[str]) -> None:
    for name in tenants[:2]:
        seed(project, name, 1)
    args = ["--database", tenants[0], "--database", tenants[1]]
    assert project.invoke(*args, "upgrade", "--no-progress").exit_code == 0
    step = project.path / "migrations" / "0001_split_name.py"
    step.write_text(step.read_text().replace('partition(" ")', 'partition(",")'))
    result = project.invoke(*args, "check", "--checksums")
    assert result.exit_code == EXIT_CHECKSUM, result.output
    for name in tenants[:2]:
        assert f"`atomdb-migrate --database {name} stamp --accept-checksums`" in result.output
    result = project.invoke(*args, "stamp", "--accept-checksums")
    assert result.exit_code == 0, result.output
    for name in tenants[:2]:
        assert f"  {name}: recorded the checksums of 3 steps (1 changed)" in result.output
        history = project.client[name]["atomdb_migrate_history"]
        assert history.count_documents({"arguments.accept_checksums": True}) == 1
    assert project.invoke(*args, "check", "--checksums").exit_code == 0
