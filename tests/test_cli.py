"""The atomdb-migrate command, through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import (
    EXIT_CHECK,
    EXIT_CONFIG,
    EXIT_CONNECTION,
    EXIT_LOCK,
    EXIT_STEP,
    EXIT_USAGE,
)
from atomdb_migrate.cli.main import main
from atomdb_migrate.engine.lock import LOCK_ID

from .project import CUSTOMER, ORDER, PASSWORD, PYPROJECT, Project
from .servers import free_port


def secret_url(project: Project, port: int | None = None) -> str:
    host = f"127.0.0.1:{port}" if port else project.url.split("//", 1)[1].split("/", 1)[0]
    return f"mongodb://admin:{PASSWORD}@{host}/{project.dbname}"


# ---------------------------------------------------------------------------
# Files: init, revision, check
# ---------------------------------------------------------------------------
def test_init_creates_directory_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"')
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "migrations").is_dir()
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith('[project]\nname = "app"\n') and "[tool.atomdb-migrate]" in text
    again = CliRunner().invoke(main, ["init"])
    assert "exists" in again.output and "already has" in again.output
    assert (tmp_path / "pyproject.toml").read_text() == text


@pytest.mark.parametrize(
    ("before", "joined"),
    [
        (None, ""),  # no pyproject.toml: a new one, starting with the table
        ("", ""),
        ('[project]\nname = "app"', '[project]\nname = "app"\n\n'),
        ('[project]\nname = "app"\n', '[project]\nname = "app"\n\n'),
        ('[project]\nname = "app"\n\n', '[project]\nname = "app"\n\n'),
    ],
)
def test_init_writes_the_table_without_a_blank_line_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None, joined: str
) -> None:
    """The table starts the file, or follows what is there after one blank line."""
    import tomllib

    from atomdb_migrate.commands.init import init

    pyproject = tmp_path / "pyproject.toml"
    for run in ("cli", "python"):
        if pyproject.exists():
            pyproject.unlink()
        if before is not None:
            pyproject.write_text(before)
        monkeypatch.chdir(tmp_path)
        if run == "cli":
            result = CliRunner().invoke(main, ["init"])
            assert result.exit_code == 0, result.output
        else:
            init(tmp_path)
        text = pyproject.read_text()
        assert text.startswith(joined + "[tool.atomdb-migrate]\n"), (run, text)
        assert tomllib.loads(text)["tool"]["atomdb-migrate"]["migrations"] == "migrations"


#: How many generated pyproject.toml texts the init property tries.
INIT_EXAMPLES = int(os.environ.get("INIT_EXAMPLES", "60"))


@settings(
    max_examples=INIT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.sampled_from(["[project]", 'name = "app"', "# a comment", "", "[tool.black]"]),
        unique=True,  # a table declared twice is not TOML
    ),
    trailing=st.sampled_from(["", "\n", "\n\n", "\n\n\n", " \n"]),
)
def test_init_adds_the_table_after_one_blank_line_whatever_precedes(
    tmp_path: Path, lines: list[str], trailing: str
) -> None:
    import tomllib

    from atomdb_migrate.commands.init import init

    folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    before = "\n".join(lines) + trailing
    (folder / "pyproject.toml").write_text(before)
    init(folder)
    text = (folder / "pyproject.toml").read_text()
    assert text.startswith(before.rstrip("\n"))
    rest = text[len(before.rstrip("\n")) :]
    if before.strip():
        # One blank line, or the blank lines the file already ended with.
        newlines = max(2, len(before) - len(before.rstrip("\n")))
        assert rest.startswith("\n" * newlines + "[tool.atomdb-migrate]\n"), text
    else:
        assert rest.lstrip(" \n").startswith("[tool.atomdb-migrate]\n"), text
        assert text.startswith("[tool.atomdb-migrate]") or before, text
    assert tomllib.loads(text)["tool"]["atomdb-migrate"]["migrations"] == "migrations"


def test_revision_writes_the_next_step(project: Project) -> None:
    result = project.invoke("revision", "-m", "Add an email address", "--model", "Customer")
    assert result.exit_code == 0, result.output
    path = project.path / "migrations" / "0004_add_an_email_address.py"
    assert f"wrote {path}" in result.output
    text = path.read_text()
    assert text.startswith('"""Add an email address"""')
    assert 'model = "clidemo.Customer"' in text
    assert 'from_version = "3"' in text and 'to_version = "4"' in text
    # The model is still at 3: check catches the step past it.
    result = project.invoke("check")
    assert result.exit_code == EXIT_CHECK
    assert "past the model's current version 3" in result.output


def test_revision_writes_the_changes_a_python_step_declares(project: Project) -> None:
    """The template's `changes`: every field while no step records a schema to
    compare with, and the module loads with it."""
    from atomdb_migrate import MigrationRegistry, load_migrations

    result = project.invoke("revision", "-m", "Add an email address", "--model", "Customer")
    assert result.exit_code == 0, result.output
    path = project.path / "migrations" / "0004_add_an_email_address.py"
    text = path.read_text()
    assert 'changes = ["applied", "first", "last", "seq", "tier"]' in text, text
    steps = load_migrations(project.path / "migrations", registry=MigrationRegistry())
    assert steps[-1].changes == ("applied", "first", "last", "seq", "tier")


def test_check_passes_and_reports_broken_modules(project: Project) -> None:
    assert project.invoke("check").output.strip() == "ok"
    bad = project.path / "migrations" / "0004_broken.py"
    bad.write_text(
        'model = "clidemo.Customer"\nfrom_version = "3"\nto_version = "4"\n'
        "def upgrade(doc)\n    pass\n"
    )
    result = project.invoke("check")
    assert result.exit_code == EXIT_CHECK
    assert f"{bad}:4: syntax error" in result.output
    # Every other command refuses to run.
    result = project.invoke("upgrade")
    assert result.exit_code == EXIT_CONFIG and f"{bad}:4" in result.output
    assert project.versions() == {}


def test_a_default_bson_cannot_hold_is_refused_when_the_step_loads(project: Project) -> None:
    bad = project.path / "migrations" / "0004_surrogate.py"
    bad.write_text(
        'from atomdb_migrate import ops\nmodel = "clidemo.Customer"\nfrom_version = "3"\n'
        'to_version = "4"\noperations = [ops.set_default_where_missing("sur", "\\ud800")]\n'
    )
    result = project.invoke("check")
    assert result.exit_code == EXIT_CHECK, result.output
    assert str(bad) in result.output and "lone surrogate" in result.output
    assert "Traceback" not in result.output
    project.seed(2)
    result = project.invoke("upgrade")
    assert result.exit_code == EXIT_CONFIG and "lone surrogate" in result.output
    assert project.versions() == {"1": 2}, "nothing written"


# ---------------------------------------------------------------------------
# The whole cycle
# ---------------------------------------------------------------------------
def test_status_upgrade_history_downgrade_stamp(project: Project) -> None:
    project.seed(30)
    project.seed(5, version=None)  # before versioning: at 0, no step from 0
    project.db[ORDER].insert_many([{"total": "2.5", "__model__": ORDER} for _ in range(4)])

    result = project.invoke("status")
    assert result.exit_code == 0, result.output
    assert "clidemo.Customer: code at 3; stored 0: 5, 1: 30; 35 pending" in result.output
    assert "clidemo.Order: code at 1; stored 0: 4; 4 pending" in result.output
    rows = {r["model"]: r for r in json.loads(project.invoke("status", "--json").output)}
    assert rows[CUSTOMER]["stored"] == {"0": 5, "1": 30} and rows[ORDER]["pending"] == 4

    # A gap (no step from 0) is refused before anything is written
    result = project.invoke("upgrade")
    assert result.exit_code == EXIT_CONFIG
    assert "no step leaves version 0" in result.output
    project.invoke("stamp", "Customer", "1")  # adopt the 5 unversioned documents
    assert project.versions() == {"1": 35}

    result = project.invoke("upgrade", "--dry-run", "--sample", "3")
    assert result.exit_code == 0, result.output
    assert "step 1 -> 2: 35 documents" in result.output
    assert result.output.count("sample of 3 documents (stored at 1: 3): all restore") == 1
    assert "sample _id=" not in result.output  # only the failures, one a line
    assert project.versions() == {"1": 35}

    result = project.invoke("upgrade", "--batch-size", "7")
    assert result.exit_code == 0, result.output
    assert "clidemo.Customer: 35 upgraded to 3, 0 skipped" in result.output
    assert "clidemo.Order: 4 upgraded to 1" in result.output
    assert project.versions() == {"3": 35} and project.versions(ORDER) == {"1": 4}

    result = project.invoke("history")
    assert "1 -> 2  Split name into first and last." in result.output
    assert "0 -> 1  Store order totals as numbers. [no downgrade]" in result.output
    assert "upgrade succeeded" in result.output and "stamp succeeded" in result.output
    runs = list(project.db["atomdb_migrate_history"].find().sort("started_at", 1))
    # (the run refused on the gap wrote nothing, not even a history record)
    assert [(r["command"], r["outcome"]) for r in runs] == [
        ("stamp", "succeeded"),
        ("upgrade", "succeeded"),
    ]
    assert runs[1]["models"][CUSTOMER]["upgraded"] == 35
    assert runs[1]["models"][CUSTOMER]["steps"] == {"1 -> 2": 35, "2 -> 3": 35}
    assert runs[1]["duration_s"] >= 0

    result = project.invoke("downgrade", "Customer", "--to", "2")
    assert result.exit_code == 0 and "35 downgraded to 2" in result.output
    assert project.versions() == {"2": 35}
    result = project.invoke("downgrade", "Order", "--to", "0")
    assert result.exit_code == EXIT_CONFIG and "has no downgrade function" in result.output

    result = project.invoke("check", "--pending")
    assert result.exit_code == EXIT_CHECK
    assert "35 stored documents are behind version 3" in result.output
    project.invoke("upgrade", "Customer")
    assert project.invoke("check", "--pending").exit_code == 0
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 0, "lock released"


def test_upgrade_to_a_version(project: Project) -> None:
    project.seed(3)
    result = project.invoke("upgrade", "Customer", "--to", "2")
    assert result.exit_code == 0, result.output
    assert project.versions() == {"2": 3}


# ---------------------------------------------------------------------------
# Errors: one line, a distinct exit code, nothing written
# ---------------------------------------------------------------------------
def test_unknown_model_lists_the_known_ones(project: Project) -> None:
    result = project.invoke("upgrade", "Nope")
    assert result.exit_code == EXIT_CONFIG
    assert "unknown model 'Nope'; known versioned models: clidemo.Customer, clidemo.Order" in (
        result.output
    )


def test_step_failure_names_model_id_and_step(project: Project) -> None:
    project.seed(5)
    project.db[CUSTOMER].update_one({}, {"$set": {"name": "BOOM"}})
    boom = project.db[CUSTOMER].find_one({"name": "BOOM"})
    result = project.invoke("upgrade", "Customer")
    assert result.exit_code == EXIT_STEP
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: model 'clidemo.Customer', document _id=")
    assert str(boom["_id"]) in line and "0001_split_name.py (1 -> 2)" in line
    assert "cannot split BOOM" in line
    run = project.db["atomdb_migrate_history"].find_one()
    assert run["outcome"] == "failed" and "cannot split BOOM" in run["error"]

    result = project.invoke("upgrade", "Customer", "--continue-on-error")
    assert result.exit_code == EXIT_STEP
    assert "0 upgraded to 3" in result.output or "4 upgraded" in result.output
    assert project.versions() == {"3": 4, "1": 1}


def test_lock_held_by_another_runner(project: Project) -> None:
    project.seed(2)
    project.db["atomdb_migrate_lock"].insert_one(
        {
            "_id": LOCK_ID,
            "owner": "x",
            "host": "pod-7",
            "pid": 42,
            "command": "upgrade",
            "acquired_at": "then",
            "expires_at": __import__("datetime").datetime(2999, 1, 1),
        }
    )
    result = project.invoke("upgrade")
    assert result.exit_code == EXIT_LOCK
    assert "held by upgrade on host pod-7 (pid 42)" in result.output
    assert project.versions() == {"1": 2}


def test_invalid_url(project: Project) -> None:
    result = project.invoke("status", url=f"mongodb://admin:{PASSWORD}@host:1:2/db")
    assert result.exit_code == EXIT_CONFIG
    assert "invalid MongoDB URL 'mongodb://***@host:1:2/db'" in result.output
    assert PASSWORD not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "mongodb:/admin:LongS3cretPassw0rd@db.example:27017/p1",
        "mongodb//admin:LongS3cretPassw0rd@db.example:27017/p1",
        "admin:LongS3cretPassw0rd@db.example:27017/p1",
    ],
)
@pytest.mark.parametrize("where", ["--url", "ATOMDB_MIGRATE_URL", "MONGO_URL", "pyproject"])
def test_a_mistyped_url_is_masked_from_every_entry_point(
    project: Project, url: str, where: str
) -> None:
    args, env = ["status"], {"MONGO_URL": "", "ATOMDB_MIGRATE_URL": ""}
    if where == "--url":
        args = ["--url", url, *args]
    elif where == "pyproject":
        (project.path / "pyproject.toml").write_text(PYPROJECT + f"url = {json.dumps(url)}\n")
    else:
        env[where] = url
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(main, args + extra, env=env)
        assert result.exit_code == EXIT_CONFIG, result.output
        assert "LongS3cret" not in result.output and "***@db.example" in result.output


def test_status_json_reports_an_error_as_json(project: Project) -> None:
    """With --json, the error is one JSON object on stderr, and the exit code is kept."""
    url = "mongodb:/admin:pw@db.example:27017/p1"
    result = project.invoke("status", "--json", url=url)
    assert result.exit_code == EXIT_CONFIG
    assert result.stdout == ""
    error = json.loads(result.stderr)
    assert error == {
        "error": "invalid MongoDB URL 'mongodb:/***@db.example:27017/p1': Invalid URI scheme: "
        "URI must begin with 'mongodb://' or 'mongodb+srv://'",
        "exit": EXIT_CONFIG,
    }
    usage = project.invoke("status", "--json", "--no-such-option")
    assert usage.exit_code == EXIT_USAGE
    assert json.loads(usage.stderr) == {"error": "No such option '--no-such-option'.", "exit": 2}
    # An option of the group itself that is wrong: JSON too, since the command asked.
    group = project.invoke("--timeout", "0", "status", "--json")
    assert group.exit_code == EXIT_USAGE
    assert json.loads(group.stderr)["exit"] == EXIT_USAGE
    assert "--timeout" in json.loads(group.stderr)["error"]
    # Without --json, the usual line.
    plain = project.invoke("status", url=url)
    assert plain.stderr.startswith("Error: invalid MongoDB URL 'mongodb:/***@db.example")


def test_unreachable_server_fails_in_bounded_time(project: Project) -> None:
    started = time.monotonic()
    result = project.invoke("--timeout", "1", "status", url=secret_url(project, free_port()))
    assert result.exit_code == EXIT_CONNECTION
    assert time.monotonic() - started < 10
    assert "cannot reach mongodb://***@127.0.0.1:" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_wrong_credentials(project: Project) -> None:
    result = project.invoke("status", url=secret_url(project))
    assert result.exit_code == EXIT_CONNECTION
    assert "authentication failed" in result.output
    assert PASSWORD not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["upgrade"],
        ["upgrade", "--dry-run"],
        ["downgrade", "Customer", "--to", "1"],
        ["history"],
        ["check", "--pending"],
        ["stamp", "Customer", "1"],
    ],
)
def test_no_command_prints_the_password(project: Project, args: list[str]) -> None:
    result = project.invoke(*args, url=secret_url(project))
    assert result.exit_code == EXIT_CONNECTION or args[0] == "check"
    assert PASSWORD not in result.output
    assert "***" in result.output


def test_missing_migrations_directory(project: Project) -> None:
    shutil.rmtree(project.path / "migrations")
    result = project.invoke("status")
    assert result.exit_code == EXIT_CONFIG
    assert "migrations directory" in result.output and "does not exist" in result.output


def test_no_url(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(main, ["status"], env={"MONGO_URL": "", "ATOMDB_MIGRATE_URL": ""})
    assert result.exit_code == EXIT_CONFIG and "no MongoDB URL" in result.output


def test_to_needs_one_model(project: Project) -> None:
    result = project.invoke("upgrade", "--to", "2")
    assert result.exit_code == EXIT_CONFIG and "--to needs exactly one model" in result.output


def test_usage_error(project: Project) -> None:
    assert project.invoke("upgrade", "--no-such-option").exit_code == EXIT_USAGE


def test_url_from_environment_order(project: Project) -> None:
    env = {"ATOMDB_MIGRATE_URL": project.url, "MONGO_URL": "mongodb://127.0.0.1:1/x"}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------
# As a real subprocess
# ---------------------------------------------------------------------------
def test_console_script(project: Project) -> None:
    project.seed(10)
    code, out = project.run("upgrade")
    assert code == 0, out
    assert "clidemo.Customer: 10 documents to migrate" in out, "plain lines, not a terminal"
    assert "clidemo.Customer: 10 upgraded to 3" in out


def _settled(count: Callable[[], int], quiet: float = 2.0, limit: float = 60.0) -> int:
    """The value of *count* once it has not changed for *quiet* seconds."""
    deadline = time.monotonic() + limit
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the count never settled"
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_killed_run_resumes_and_transforms_each_document_once(project: Project) -> None:
    # A lease long enough that starting a second process cannot outlast it,
    # even on a loaded machine; the test then ends it by hand.
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("lock-ttl = 2", "lock-ttl = 60"))
    n = 8000
    project.seed(n)
    proc = project.spawn("upgrade", "--batch-size", "500")
    deadline = time.monotonic() + 120
    while project.db[CUSTOMER].count_documents({"__version__": "3"}) < 2000:
        assert proc.poll() is None, "killed before it finished"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = project.db[CUSTOMER].count_documents({"__version__": "3"})
    assert 2000 <= done < n, "killed mid-run"
    assert project.db["atomdb_migrate_lock"].count_documents({}) == 1, "the lease is left"

    # A new runner refuses while the dead runner's lease lasts, then takes over.
    code, out = project.run("upgrade")
    assert code == EXIT_LOCK, out
    # A bulk write in flight at the kill goes on on the server after the client
    # died (measured: a dozen documents landed more than a second later), so
    # the count is taken once it has stopped moving.
    done = _settled(lambda: project.db[CUSTOMER].count_documents({"__version__": "3"}))
    lease = project.db["atomdb_migrate_lock"]
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    lease.update_one({}, {"$set": {"expires_at": soon}})  # as if it were a short lease
    code, out = project.run("upgrade", "--wait")
    assert code == 0, out
    assert f"{n - done} upgraded to 3" in out
    assert project.versions() == {"3": n}
    applied = project.db[CUSTOMER].distinct("applied")
    assert applied == [1], "every document transformed exactly once"


def test_two_runners_at_once(project: Project) -> None:
    project.seed(6000)
    procs = [project.spawn("upgrade") for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read() + p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, EXIT_LOCK], results
    loser = next(out for code, out in results if code == EXIT_LOCK)
    assert "the migration lock is held by upgrade on host" in loser
    assert project.versions() == {"3": 6000}


def test_lock_and_history_collections_can_be_renamed(project: Project) -> None:
    (project.path / "pyproject.toml").write_text(
        PYPROJECT + 'lock-collection = "ops_lock"\nhistory-collection = "ops_runs"\n'
    )
    project.seed(3)
    project.db["ops_lock"].insert_one(
        {
            "_id": LOCK_ID,
            "owner": "x",
            "host": "h",
            "pid": 1,
            "command": "upgrade",
            "expires_at": __import__("datetime").datetime(2999, 1, 1),
        }
    )
    assert project.invoke("upgrade").exit_code == EXIT_LOCK
    project.db["ops_lock"].delete_many({})
    assert project.invoke("upgrade").exit_code == 0
    names = set(project.db.list_collection_names())
    assert {"ops_lock", "ops_runs"} <= names
    assert not names & {"atomdb_migrate_lock", "atomdb_migrate_history"}
    assert project.db["ops_runs"].count_documents({"outcome": "succeeded"}) == 1


def test_log_lines_are_masked(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from atomdb_migrate.cli.main import State
    from atomdb_migrate.cli.output import Masking as _Masking

    state = State(url=secret_url(project), database=None, models=(), migrations=None, timeout=None)
    record = logging.LogRecord(
        "atomdb_migrate",
        logging.WARNING,
        __file__,
        1,
        "waiting for %s",
        (secret_url(project),),
        None,
    )
    assert _Masking(state).filter(record)
    assert PASSWORD not in record.getMessage() and "mongodb://***@" in record.getMessage()
