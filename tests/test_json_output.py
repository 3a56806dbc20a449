"""``--json``: standard output holds one JSON document whose fields are exactly
those docs/cli.md documents (its tables are read here, so the docs and the
output cannot drift), its ``exit`` is the process's, and standard error
holds only JSON objects, one a line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry
from atomdb_migrate.cli.documents import dumps
from atomdb_migrate.cli.main import main
from atomdb_migrate.testing import memory_client

from .clidemo import Customer, Order
from .project import CUSTOMER, ORDER, PYPROJECT, STEPS, Project

ROOT = Path(__file__).resolve().parent.parent

#: How many generated states and command sequences the property tries.
JSON_EXAMPLES = int(os.environ.get("JSON_EXAMPLES", "25"))


# ---------------------------------------------------------------------------
# The documented fields, read from docs/cli.md
# ---------------------------------------------------------------------------
def documented_tables() -> dict[str, list[str]]:
    """Each ``####`` table of the --json section: its heading, its fields."""
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text[text.index("### --json\n") :]
    section = section[: section.index("\n## ")]
    tables: dict[str, list[str]] = {}
    for block in section.split("\n#### ")[1:]:
        heading, _, body = block.partition("\n")
        fields = re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE)
        tables[heading.strip()] = fields
    return tables


TABLES = documented_tables()


def fields(heading: str) -> set[str]:
    assert heading in TABLES, f"docs/cli.md has no table {heading!r}: {sorted(TABLES)}"
    assert TABLES[heading], heading
    return set(TABLES[heading])


def test_the_docs_have_a_table_for_every_document() -> None:
    """The tables this test reads are there (so a renamed heading fails here)."""
    for heading in (
        "The rows of `status --json`",
        "`upgrade --json`, `downgrade --json`",
        "A model of `upgrade --json`",
        "The release of a downgrade",
        "A release taken back",
        "A model's target",
        "A step of a run",
        "A rename of a run",
        "A failure of a run",
        "A sample of a dry run",
        "`check --json`",
        "A check",
        "`history --json`",
        "A step of a chain",
        "A recorded run",
        "`history --failures --json`",
        "A failed document",
        "What standard error holds",
    ):
        fields(heading)
    assert {"former", "unversioned_since"} <= fields("The rows of `status --json`")


def exactly(obj: Any, heading: str) -> None:
    assert isinstance(obj, dict), (heading, obj)
    assert set(obj) == fields(heading), (heading, set(obj) ^ fields(heading))


def run_document(doc: dict[str, Any]) -> None:
    exactly(doc, "`upgrade --json`, `downgrade --json`")
    if doc["release"] is not None:
        release_document(doc["release"])
    for m in doc["models"]:
        exactly(m, "A model of `upgrade --json`")
        for s in m["steps"]:
            exactly(s, "A step of a run")
        for r in m["renames"]:
            exactly(r, "A rename of a run")
        for f in m["failures"]:
            exactly(f, "A failure of a run")
        for s in m["samples"]:
            exactly(s, "A sample of a dry run")
        assert m["direction"] == doc["command"]


def release_document(release: dict[str, Any]) -> None:
    """What ``downgrade --release``/``--to-release`` takes back, at every level."""
    exactly(release, "The release of a downgrade")
    for undone in release["undone"]:
        exactly(undone, "A release taken back")
    for target in release["plan"]:
        exactly(target, "A model's target")


def recorded_run(run: dict[str, Any]) -> None:
    exactly(run, "A recorded run")


def check_document(command: str, flags: list[str], doc: Any) -> None:
    """The document has exactly the documented fields, at every level."""
    if command == "status":
        assert isinstance(doc, list)
        for row in doc:
            exactly(row, "The rows of `status --json`")
        return
    assert doc["command"] == command
    if command in ("upgrade", "downgrade"):
        run_document(doc)
    elif command == "check":
        exactly(doc, "`check --json`")
        for c in doc["checks"]:
            exactly(c, "A check")
    elif "--failures" in flags:
        exactly(doc, "`history --failures --json`")
        for f in doc["documents"]:
            exactly(f, "A failed document")
        for run in (doc["run"], doc["retried_by"]):
            if run is not None:
                recorded_run(run)
    else:
        exactly(doc, "`history --json`")
        for steps in doc["chains"].values():
            for s in steps:
                exactly(s, "A step of a chain")
        for run in doc["runs"]:
            recorded_run(run)


def check_output(args: list[str], code: int, stdout: str, stderr: str) -> Any:
    """The invariant, for one command: returns the document (None if there is none)."""
    command = next(a for a in args if a in ("status", "check", "history", "upgrade", "downgrade"))
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    allowed = fields("What standard error holds")
    for line in lines:
        assert isinstance(line, dict) and set(line) <= allowed, line
    if code:
        errors = [line for line in lines if "error" in line]
        assert errors and errors[-1]["exit"] == code, (args, stderr)
    if not stdout.strip():
        # Only status (failed before any database answered) and usage errors print nothing.
        assert code != 0 and (command == "status" or code == 2), (args, code, stderr)
        return None
    doc = json.loads(stdout)  # one document, nothing else
    check_document(command, args, doc)
    if command != "status":
        assert doc["exit"] == code, (args, doc["exit"], code)
        assert (doc["error"] is None) == (code == 0), (args, doc["error"])
        if code:
            assert doc["error"] == errors[-1]["error"]
    return doc


# ---------------------------------------------------------------------------
# Through CliRunner, on mongomock, over generated states
# ---------------------------------------------------------------------------
class MemoryProject:
    """A project directory with the demo models' steps, and a database in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dbname = f"json_{uuid.uuid4().hex[:12]}"
        self.url = f"mongomock://testing/{self.dbname}"
        path.mkdir()
        shutil.copytree(STEPS, path / "migrations")
        (path / "pyproject.toml").write_text(PYPROJECT)

    def seed(self, customers: list[str | None], orders: int) -> None:
        docs: list[dict[str, Any]] = []
        for i, version in enumerate(customers):
            doc: dict[str, Any] = {"__model__": CUSTOMER, "name": f"Ada {i}"}
            if version == "BOOM":  # its 1 -> 2 step raises
                doc.update(name="BOOM", __version__="1")
            elif version is not None:
                doc["__version__"] = version
                if version in ("2", "3", "4"):
                    doc.update(first="Ada", last=str(i), name=None)
                    doc.pop("name")
                    if version != "2":
                        doc["tier"] = "basic"
            docs.append(doc)
        orders_docs = [{"__model__": ORDER, "total": "1.5"} for _ in range(orders)]

        async def insert() -> None:
            db = memory_client("mongomock://testing")[self.dbname]
            if docs:
                await db[CUSTOMER].insert_many(docs)
            if orders_docs:
                await db[ORDER].insert_many(orders_docs)

        asyncio.run(insert())

    def invoke(self, *args: str, url: str | None = None) -> Result:
        env = {"MONGO_URL": url or self.url, "ATOMDB_MIGRATE_URL": ""}
        cwd = os.getcwd()
        os.chdir(self.path)
        try:
            return CliRunner().invoke(main, list(args), env=env)
        finally:
            os.chdir(cwd)


#: The commands the property runs, each with --json.
COMMANDS: list[list[str]] = [
    ["status"],
    ["status", CUSTOMER],
    ["check"],
    ["check", "--pending"],
    ["check", "--checksums"],
    ["history"],
    ["history", "--failures"],
    ["upgrade"],
    ["upgrade", "--dry-run"],
    ["upgrade", "--continue-on-error"],
    ["upgrade", CUSTOMER, "--to", "2"],
    ["upgrade", "clidemo.Nobody"],  # an unknown model: exit 3
    ["downgrade", CUSTOMER, "--to", "1"],
    ["downgrade", CUSTOMER, "--to", "1", "--dry-run"],
    ["downgrade", CUSTOMER, "--to", "2", "--continue-on-error"],
    ["downgrade", CUSTOMER],  # a usage error: --to is required
    ["downgrade", "--release", "-1"],  # exit 3 when no release is left to take back
    ["downgrade", "--release", "-1", "--dry-run"],
    ["downgrade", "--to-release", f"{CUSTOMER}=2"],
    ["upgrade", "--batch-size", "0"],  # a usage error: a value refused
]

#: The URLs a command may be given: the project's, or one that is not valid (exit 3).
BAD_URL = "mongodb:/admin:secret@db:27017/app"


@pytest.fixture(autouse=True)
def _demo_models(demo_registry: MigrationRegistry) -> None:
    """Only the demo models are registered, as in a fresh process (and the
    registry is put back after the test)."""


def fresh_registry() -> None:
    """A registry holding only the demo models, as in a fresh process."""
    registry = MigrationRegistry()
    registry.register_model(Customer)
    registry.register_model(Order)
    MigrationRegistry._instance = registry


@settings(
    max_examples=JSON_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    # Mostly documents a run takes; now and then one newer than the code ("4"),
    # one whose step raises ("BOOM"), an invalid version ("x") or none (None).
    customers=st.lists(
        st.sampled_from(["1", "2", "3"] * 6 + ["4", "4", "BOOM", "BOOM", "x", None]),
        max_size=6,
    ),
    orders=st.integers(0, 2),
    commands=st.lists(
        st.tuples(st.sampled_from(COMMANDS), st.integers(0, 7).map(lambda n: n == 0)),
        min_size=1,
        max_size=4,
    ),
)
def test_json_output_is_one_documented_document_with_the_exit_code(
    tmp_path: Path,
    customers: list[str | None],
    orders: int,
    commands: list[tuple[list[str], bool]],
) -> None:
    fresh_registry()  # (the examples share the test's fixtures)
    project = MemoryProject(tmp_path / uuid.uuid4().hex[:8])
    project.seed(customers, orders)
    for args, bad_url in commands:
        url = BAD_URL if bad_url and args[0] != "history" else None
        result = project.invoke(*args, "--json", url=url)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            result.exception,
        )
        check_output(args, result.exit_code, result.stdout, result.stderr)
        event(f"{args[0]} exit {result.exit_code}")
        assert "secret" not in result.stdout + result.stderr


def test_a_run_that_fails_says_what_it_did_and_its_exit(tmp_path: Path) -> None:
    """A step that raises stops the run: the document holds what it did and exit 6."""
    project = MemoryProject(tmp_path / "p")
    project.seed(["1", "1", "BOOM"], 0)
    result = project.invoke("upgrade", "--json", "--continue-on-error")
    doc = check_output(["upgrade"], result.exit_code, result.stdout, result.stderr)
    assert result.exit_code == 6 and doc["exit"] == 6
    (customer,) = [m for m in doc["models"] if m["model"] == CUSTOMER]
    assert customer["migrated"] == 2 and customer["failed"] == 1
    assert ["cannot split BOOM" in f["error"] for f in customer["failures"]] == [True]
    assert [(s["from"], s["to"]) for s in customer["steps"]] == [("1", "2"), ("2", "3")]
    failures = project.invoke("history", "--failures", "--json")
    found = check_output(["history", "--failures"], failures.exit_code, failures.stdout, "")
    assert [d["model"] for d in found["documents"]] == [CUSTOMER]


def test_check_json_fails_with_the_problems_in_the_document(tmp_path: Path) -> None:
    project = MemoryProject(tmp_path / "p")
    project.seed(["1"], 0)
    result = project.invoke("check", "--pending", "--json")
    doc = check_output(["check"], result.exit_code, result.stdout, result.stderr)
    assert result.exit_code == 1 and doc["checks"][0]["problems"]
    assert doc["checks"][0]["database"] == project.dbname
    assert result.stdout.count("\n{") == 0  # nothing else on stdout


def test_downgrade_json_names_the_steps_in_its_direction(tmp_path: Path) -> None:
    project = MemoryProject(tmp_path / "p")
    project.seed(["3", "3"], 0)
    result = project.invoke("downgrade", CUSTOMER, "--to", "1", "--json")
    doc = check_output(["downgrade"], result.exit_code, result.stdout, result.stderr)
    assert result.exit_code == 0
    (model,) = doc["models"]
    assert [(s["from"], s["to"]) for s in model["steps"]] == [("3", "2"), ("2", "1")]
    assert model["migrated"] == 2 and model["direction"] == "downgrade"


def test_a_usage_error_under_json_is_a_json_object_and_stdout_is_empty(tmp_path: Path) -> None:
    project = MemoryProject(tmp_path / "p")
    for args in (
        ["check", "--json", "--nope"],
        ["downgrade", "--json"],
        ["history", "--json", "--limit", "0"],
    ):
        result = project.invoke(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert json.loads(result.stderr)["exit"] == 2


# ---------------------------------------------------------------------------
# As a subprocess, on SecantusDB
# ---------------------------------------------------------------------------
def spawn(project: Project, *args: str) -> tuple[int, str, str]:
    proc = project.spawn(*args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_json_as_a_subprocess_on_secantus(project: Project) -> None:
    """The console script: the exit code of the process is the document's."""
    project.seed(3)
    project.db[CUSTOMER].insert_one({"__model__": CUSTOMER, "__version__": "1", "name": "BOOM"})
    for args, expected in (
        (["check", "--pending", "--json"], 1),
        (["upgrade", "--continue-on-error", "--json"], 6),
        (["history", "--failures", "--json"], 0),
        (["history", "--json"], 0),
        (["status", "--json"], 0),
        (["downgrade", CUSTOMER, "--to", "2", "--json"], 0),
    ):
        code, out, err = spawn(project, *args)
        assert code == expected, (args, code, out, err)
        check_output(args, code, out, err)


def test_several_databases_one_document_naming_each_database(tmp_path: Path) -> None:
    """With several databases, one document: each model's run names its database;
    a database that fails adds an error object on stderr, and the exit is its code."""
    first, second = MemoryProject(tmp_path / "a"), MemoryProject(tmp_path / "b")
    first.seed(["1", "1"], 0)
    second.seed(["1", "BOOM"], 0)
    args = ["--database", first.dbname, "--database", second.dbname, "upgrade", "--json"]
    result = first.invoke(*args)
    doc = check_output(["upgrade"], result.exit_code, result.stdout, result.stderr)
    assert result.exit_code == 6
    assert {m["database"] for m in doc["models"]} == {first.dbname, second.dbname}
    failed = [json.loads(line) for line in result.stderr.splitlines() if '"database"' in line]
    assert [f["database"] for f in failed] == [second.dbname]
    checked = first.invoke(*args[:4], "check", "--pending", "--json")
    found = check_output(["check"], checked.exit_code, checked.stdout, checked.stderr)
    assert [c["database"] for c in found["checks"]] == [None, first.dbname, second.dbname]


@settings(max_examples=200, deadline=None)
@given(st.datetimes(), st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]))
def test_a_date_says_its_offset(when: datetime, zone: Any) -> None:
    """Dates read back from the server have no time zone; they are UTC, and
    the JSON says so (``2025-01-31T12:00:00+00:00``, as docs/cli.md shows)."""
    given = when if zone is None else when.replace(tzinfo=zone)
    read = datetime.fromisoformat(json.loads(dumps({"at": given}))["at"])
    assert read.tzinfo is not None
    assert read == (given if zone is not None else given.replace(tzinfo=UTC))
