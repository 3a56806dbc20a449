"""The bad-input catalogue: each case gives one clear line, its exit code, and
changes no document.

Every case runs ``atomdb-migrate upgrade`` (or the command named) on a project
with 20 customers at version 1 and compares every stored document before
and after.

"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from atomdb_migrate.cli.exits import (
    EXIT_CHECK,
    EXIT_CONFIG,
    EXIT_CONNECTION,
    EXIT_LOCK,
    EXIT_STEP,
    EXIT_USAGE,
)
from atomdb_migrate.engine.lock import LOCK_ID

from ..project import CUSTOMER, PASSWORD, Project
from ..servers import free_port
from .conftest import FIGURES


def module(project: Project, name: str, text: str) -> None:
    (project.path / "migrations" / name).write_text(text)


STEP = 'model = "clidemo.Customer"\nfrom_version = "{a}"\nto_version = "{b}"\n'


@dataclass
class Case:
    name: str
    input: str
    setup: Callable[[Project], Any]
    expect_code: int
    expect: str
    args: tuple[str, ...] = ("upgrade",)
    url: Callable[[Project], str] | None = None
    written: str = "nothing"
    #: Whether the run is recorded in the history (it failed after taking the lock).
    recorded: bool = False
    #: Text that must not appear anywhere in the output (secrets).
    hidden: tuple[str, ...] = ()


def hold_lock(p: Project) -> None:
    p.db["atomdb_migrate_lock"].insert_one(
        {
            "_id": LOCK_ID,
            "owner": "other",
            "host": "pod-7",
            "pid": 42,
            "command": "upgrade",
            "acquired_at": datetime.datetime(2026, 1, 1),
            "expires_at": datetime.datetime(2999, 1, 1),
        }
    )


def first_boom(p: Project) -> None:
    first = p.db[CUSTOMER].find_one(sort=[("_id", 1)])
    p.db[CUSTOMER].update_one({"_id": first["_id"]}, {"$set": {"name": "BOOM"}})


BOOM_STEP = (
    "def upgrade(doc):\n"
    "    if doc.get('name') == 'BOOM':\n"
    "        doc['junk'] = {value}\n"
    "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n"
)


def replace_step(p: Project, body: str) -> None:
    (p.path / "migrations" / "0001_split_name.py").write_text(
        '"""Split."""\n' + STEP.format(a=1, b=2) + body
    )


CASES = [
    Case(
        "syntax",
        "step module with a syntax error",
        lambda p: module(p, "0004_bad.py", STEP.format(a=3, b=4) + "def upgrade(doc)\n    pass\n"),
        EXIT_CONFIG,
        "0004_bad.py:4: syntax error",
    ),
    Case(
        "import",
        "step module that fails to import",
        lambda p: module(p, "0004_bad.py", "import not_a_module_anywhere\n"),
        EXIT_CONFIG,
        "0004_bad.py:1: ModuleNotFoundError: No module named 'not_a_module_anywhere'",
    ),
    Case(
        "missing",
        "step module missing a name",
        lambda p: module(
            p, "0004_bad.py", 'from_version = "3"\nto_version = "4"\ndef upgrade(doc): pass\n'
        ),
        EXIT_CONFIG,
        "0004_bad.py:1: missing module-level name 'model'",
    ),
    Case(
        "type",
        "step module with a mistyped name",
        lambda p: module(
            p,
            "0004_bad.py",
            'model = "clidemo.Customer"\nfrom_version = 3.5\nto_version = "4"\n'
            "def upgrade(doc): pass\n",
        ),
        EXIT_CONFIG,
        "0004_bad.py:2: from_version must be a string, not float",
    ),
    Case(
        "gap",
        "stored documents at a version no step leaves",
        lambda p: p.db[CUSTOMER].update_many({}, {"$unset": {"__version__": ""}}),
        EXIT_CONFIG,
        "cannot upgrade from version 0 to 3: no step leaves version 0",
    ),
    Case(
        "cycle",
        "a step back to an earlier version",
        lambda p: module(p, "0004_back.py", STEP.format(a=3, b=1) + "def upgrade(doc): pass\n"),
        EXIT_CONFIG,
        "goes from version 3 to 1; a step must go to a greater version",
    ),
    Case(
        "duplicate",
        "two steps from the same version",
        lambda p: module(p, "0004_dup.py", STEP.format(a=1, b=3) + "def upgrade(doc): pass\n"),
        EXIT_CONFIG,
        "two steps leave version 1",
    ),
    Case(
        "raises",
        "a step that raises",
        first_boom,
        EXIT_STEP,
        "0001_split_name.py (1 -> 2) raised ValueError: cannot split BOOM",
        written="nothing (the failed run is recorded in the history)",
        recorded=True,
    ),
    Case(
        "non-dict",
        "a step returning a non-dict",
        lambda p: replace_step(p, "def upgrade(doc):\n    return [doc]\n"),
        EXIT_STEP,
        "returned list, expected a dict or None",
        written="nothing (the failed run is recorded in the history)",
        recorded=True,
    ),
    Case(
        "model-version",
        "a model whose __version__ is not a version",
        lambda p: (p.path / "badmodels.py").write_text(
            "from atomdb_migrate import VersionedModel\n\n"
            "class Broken(VersionedModel):\n    __version__ = 'three'\n"
        ),
        EXIT_CONFIG,
        "__version__ 'three' is not a valid PEP 440 version",
        args=("--models", "badmodels", "upgrade"),
    ),
    Case(
        "stored-version",
        "a stored __version__ that is not a version",
        lambda p: p.db[CUSTOMER].update_one({}, {"$set": {"__version__": "abc"}}),
        EXIT_CONFIG,
        "stored __version__ 'abc' is not a valid PEP 440 version",
    ),
    Case(
        "newer",
        "a document newer than the code",
        lambda p: p.db[CUSTOMER].update_many({}, {"$set": {"__version__": "9"}}),
        0,
        "0 upgraded to 3, 0 skipped (changed meanwhile), 0 failed, 20 newer than the code",
        written="nothing (left as it is; the run is recorded)",
        recorded=True,
    ),
    Case(
        "newer-gate",
        "documents newer than the code, at the gate",
        lambda p: p.db[CUSTOMER].update_many({}, {"$set": {"__version__": "9"}}),
        EXIT_CHECK,
        "20 stored documents are newer than version 3",
        args=("check", "--pending"),
    ),
    Case(
        "unknown-model",
        "an unknown model",
        lambda p: None,
        EXIT_CONFIG,
        "unknown model 'Nope'; known versioned models: clidemo.Customer, clidemo.Order",
        args=("upgrade", "Nope"),
    ),
    Case(
        "invalid-url",
        "an invalid URL",
        lambda p: None,
        EXIT_CONFIG,
        "invalid MongoDB URL 'mongodb://***@host:1:2/db'",
        url=lambda p: f"mongodb://admin:{PASSWORD}@host:1:2/db",
    ),
    Case(
        "unreachable",
        "an unreachable server",
        lambda p: None,
        EXIT_CONNECTION,
        "cannot reach mongodb://***@127.0.0.1:",
        args=("--timeout", "2", "upgrade"),
        url=lambda p: f"mongodb://admin:{PASSWORD}@127.0.0.1:{free_port()}/db",
    ),
    Case(
        "credentials",
        "wrong credentials",
        lambda p: None,
        EXIT_CONNECTION,
        "authentication failed",
        url=lambda p: p.url.replace("mongodb://", f"mongodb://admin:{PASSWORD}@"),
    ),
    Case(
        "lock",
        "a lock held by another runner",
        hold_lock,
        EXIT_LOCK,
        "the migration lock is held by upgrade on host pod-7 (pid 42)",
    ),
    Case(
        "no-migrations",
        "a migrations directory that does not exist",
        lambda p: (p.path / "pyproject.toml").write_text(
            (p.path / "pyproject.toml")
            .read_text()
            .replace('migrations = "migrations"', 'migrations = "nowhere"')
        ),
        EXIT_CONFIG,
        "migrations directory",
        written="nothing",
    ),
    Case(
        "unstorable",
        "a step whose result BSON cannot hold (a set)",
        lambda p: (first_boom(p), replace_step(p, BOOM_STEP.format(value="{1, 2}"))),
        EXIT_STEP,
        "gave a document that cannot be written: the result cannot be stored as BSON",
        written="nothing (the failed run is recorded in the history)",
        recorded=True,
    ),
    Case(
        "too-large",
        "a step whose result is over 16 MB",
        lambda p: (first_boom(p), replace_step(p, BOOM_STEP.format(value="'x' * 17_000_000"))),
        EXIT_STEP,
        "over MongoDB's 16 MB limit for a document",
        written="nothing (the failed run is recorded in the history)",
        recorded=True,
    ),
    Case(
        "huge-version",
        "a stored __version__ of 5,000 digits",
        lambda p: p.db[CUSTOMER].update_one({}, {"$set": {"__version__": "9" * 5000}}),
        EXIT_CONFIG,
        "more characters] is not a valid PEP 440 version",
    ),
    Case(
        "no-steps",
        "a model at version 1 with no step",
        lambda p: (p.path / "bare_models.py").write_text(
            "from atomdb_migrate import VersionedModel\n\n"
            "class Bare(VersionedModel):\n    __version__ = 1\n"
        ),
        EXIT_CHECK,
        "is at version 1 but has no step",
        args=("--models", "bare_models", "--models", "tests.clidemo", "check"),
    ),
    Case(
        "inherited",
        "a subclass inheriting a version but none of the steps",
        lambda p: (p.path / "vip_models.py").write_text(
            "from tests.clidemo import Customer\n\nclass Vip(Customer):\n    pass\n"
        ),
        EXIT_CHECK,
        "'vip_models.Vip': is at version 3 but has no step",
        args=("--models", "vip_models", "--models", "tests.clidemo", "check"),
    ),
    Case(
        "template",
        "an unedited revision template",
        lambda p: module(
            p,
            "0004_unedited.py",
            STEP.format(a=3, b=4)
            + "def upgrade(doc):\n    raise NotImplementedError('write the upgrade')\n",
        ),
        EXIT_CHECK,
        "upgrade still raises NotImplementedError",
        args=("check",),
    ),
    Case(
        "stamp-unknown",
        "stamp at a version the chain does not know",
        lambda p: None,
        EXIT_CONFIG,
        "its chain does not know version 1.5 (known: 0, 1, 2, 3); give --force",
        args=("stamp", "Customer", "1.5"),
    ),
    Case(
        "stamp-beyond",
        "stamp past the model's version",
        lambda p: None,
        EXIT_CONFIG,
        "its chain does not know version 99",
        args=("stamp", "Customer", "99"),
    ),
    Case(
        "downgrade-above",
        "downgrade --to a version above the code's",
        lambda p: None,
        EXIT_CONFIG,
        "cannot downgrade to 9: it is past the model's version 3",
        args=("downgrade", "Customer", "--to", "9"),
    ),
    Case(
        "to-1.10",
        "upgrade --to a version no step reaches",
        lambda p: None,
        EXIT_CONFIG,
        "past the model's current version 1.10",
        args=("upgrade", "Customer", "--to", "1.10"),
    ),
    Case(
        "timeout-nan",
        "timeout = nan in pyproject.toml",
        lambda p: (p.path / "pyproject.toml").write_text(
            (p.path / "pyproject.toml").read_text().replace("timeout = 5", "timeout = nan")
        ),
        EXIT_CONFIG,
        "timeout must be a finite number of seconds, at least 0.1, not nan",
    ),
    Case(
        "lock-ttl-zero",
        "lock-ttl = 0 in pyproject.toml",
        lambda p: (p.path / "pyproject.toml").write_text(
            (p.path / "pyproject.toml").read_text().replace("lock-ttl = 2", "lock-ttl = 0")
        ),
        EXIT_CONFIG,
        "lock-ttl must be a finite number of seconds, at least 0.1, not 0",
    ),
    Case(
        "timeout-inf",
        "--timeout inf",
        lambda p: None,
        EXIT_USAGE,
        "'inf' is not a finite number",
        args=("--timeout", "inf", "status"),
    ),
    Case(
        "lock-model",
        "a model stored in the lock's collection",
        lambda p: (p.path / "lock_models.py").write_text(
            "from atomdb_migrate import VersionedModel\n\n"
            "class Lock(VersionedModel):\n    __model__ = 'atomdb_migrate_lock'\n"
        ),
        EXIT_CONFIG,
        "is stored in the collection the toolkit keeps for its lock or its history",
        args=("--models", "lock_models", "upgrade"),
    ),
    Case(
        "migrations-file",
        "--migrations naming a file",
        lambda p: None,
        EXIT_CONFIG,
        "migrations directory 'pyproject.toml' is not a directory",
        args=("--migrations", "pyproject.toml", "upgrade"),
    ),
    Case(
        "at-in-password",
        "a password holding an @ (unescaped, so the driver refuses it)",
        lambda p: None,
        EXIT_CONFIG,
        "invalid MongoDB URL 'mongodb://***@127.0.0.1:",
        args=("--timeout", "1", "upgrade"),
        url=lambda p: f"mongodb://admin:Sup3r@Secret99@127.0.0.1:{free_port()}/db",
        hidden=("Sup3r", "Secret99"),
    ),
    Case(
        "secret-options",
        "secrets in the URL's options, on an unreachable server",
        lambda p: None,
        EXIT_CONNECTION,
        "authMechanismProperties=***",
        args=("--timeout", "1", "upgrade"),
        url=lambda p: (
            f"mongodb://127.0.0.1:{free_port()}/db?authMechanism=MONGODB-AWS&"
            "authMechanismProperties=AWS_SESSION_TOKEN:FwoGZXIvYXdzEJr&"
            "tlsCertificateKeyFilePassword=pem-pass-9"
        ),
        hidden=("FwoGZXIvYXdzEJr", "pem-pass-9"),
    ),
    Case(
        "short-password",
        "a one-letter password, on an unreachable server",
        lambda p: None,
        EXIT_CONNECTION,
        "cannot reach mongodb://***@127.0.0.1:",
        args=("--timeout", "1", "upgrade"),
        url=lambda p: f"mongodb://u:e@127.0.0.1:{free_port()}/db",
    ),
]


def snapshot(p: Project) -> list[dict[str, Any]]:
    return list(p.db[CUSTOMER].find({}, sort=[("_id", 1)]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(project: Project, case: Case) -> None:
    project.seed(20)
    case.setup(project)
    before = snapshot(project)
    started = time.monotonic()
    url = case.url(project) if case.url else None
    result = project.invoke(*case.args, url=url)
    seconds = time.monotonic() - started
    assert result.exit_code == case.expect_code, result.output
    assert case.expect in result.output
    lines = result.output.strip().splitlines()
    message = next(line for line in lines if case.expect in line)
    if case.expect_code == EXIT_CHECK:
        assert lines[-1].startswith("Error: ") and "problem(s) found" in lines[-1]
    elif case.expect_code:
        assert message == lines[-1] and message.startswith("Error: "), "one line says it all"
    assert PASSWORD not in result.output
    for secret in case.hidden:
        assert secret not in result.output
    assert len(result.output) < 4000, "a short answer, whatever the document"
    assert snapshot(project) == before, "no document changed"
    history = list(project.db["atomdb_migrate_history"].find())
    if case.recorded:
        (run,) = history
        assert run["outcome"] in ("failed", "succeeded")
        assert len(run.get("error", "")) < 2000, "a bounded message in the record"
    else:
        assert history == []
    FIGURES.setdefault("bad_input", []).append(
        {
            "input": case.input,
            "message": message.removeprefix("Error: "),
            "code": case.expect_code,
            "written": case.written,
            "seconds": round(seconds, 2),
        }
    )


# ----------------------------------------------------------------------
# Hostile cases that write on purpose, or need more than one command
# ----------------------------------------------------------------------
def test_continue_on_error_records_unstorable_results_and_goes_on(project: Project) -> None:
    project.seed(20)
    ids = [d["_id"] for d in project.db[CUSTOMER].find({}, sort=[("_id", 1)]).limit(3)]
    project.db[CUSTOMER].update_many({"_id": {"$in": ids}}, {"$set": {"name": "BOOM"}})
    replace_step(project, BOOM_STEP.format(value="{1, 2}"))
    result = project.invoke("upgrade", "--continue-on-error")
    assert result.exit_code == EXIT_STEP, result.output
    assert "clidemo.Customer: 17 upgraded to 3, 0 skipped (changed meanwhile), 3 failed" in (
        result.output
    )
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: 3 documents failed"), last
    (run,) = project.db["atomdb_migrate_history"].find()
    assert run["outcome"] == "failed"
    assert sorted(f["_id"] for f in run["failures"]) == sorted(ids)
    assert all("cannot be stored as BSON" in f["error"] for f in run["failures"])
    assert project.versions() == {"3": 17, "1": 3}


def test_a_run_over_16_mb_results_stays_short_on_screen_and_in_the_record(
    project: Project,
) -> None:
    project.seed(5)
    project.db[CUSTOMER].update_many({}, {"$set": {"name": "BOOM"}})
    replace_step(project, BOOM_STEP.format(value="'x' * 17_000_000"))
    result = project.invoke("upgrade", "--continue-on-error")
    assert result.exit_code == EXIT_STEP
    assert len(result.output) < 4000
    (run,) = project.db["atomdb_migrate_history"].find()
    assert run["outcome"] == "failed" and len(run["failures"]) == 5
    assert all(len(f["error"]) < 1000 for f in run["failures"])


def test_a_top_level_dollar_key_in_a_result_is_stored(project: Project) -> None:
    project.seed(3)
    replace_step(
        project,
        "def upgrade(doc):\n"
        "    doc['$odd'] = 1\n"
        "    doc['a.b'] = 2\n"
        "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n",
    )
    result = project.invoke("upgrade")
    assert result.exit_code == 0, result.output
    assert "3 upgraded to 3, 0 skipped" in result.output
    for doc in project.db[CUSTOMER].find():
        assert doc["$odd"] == 1 and doc["a.b"] == 2 and doc["__version__"] == "3"


def test_versions_a_shell_stored_as_numbers(project: Project) -> None:
    project.seed(6)
    docs = list(project.db[CUSTOMER].find({}, sort=[("_id", 1)]))
    for doc, version in zip(docs, [1.0, 1, "1.0", "1", 1.0, 1], strict=True):
        project.db[CUSTOMER].update_one({"_id": doc["_id"]}, {"$set": {"__version__": version}})
    result = project.invoke("status", "Customer")
    assert "stored 1: 6; 6 pending" in result.output, result.output
    dry = project.invoke("upgrade", "--dry-run")
    assert "clidemo.Customer: 6 documents not at version 3 (dry run)" in dry.output
    assert project.invoke("upgrade").exit_code == 0
    assert project.versions() == {"3": 6}


def test_history_reads_records_it_did_not_write(project: Project) -> None:
    project.db["atomdb_migrate_history"].insert_many(
        [{"foo": 1}, {"command": "upgrade\nsecond line", "started_at": "yesterday", "models": 3}]
    )
    result = project.invoke("history")
    assert result.exit_code == 0, result.output
    assert "? ? ?" in result.output and "upgrade second line" in result.output


def test_newer_documents_warn_on_upgrade_and_fail_the_gate(project: Project) -> None:
    project.seed(3, version="9")
    result = project.invoke("upgrade")
    assert result.exit_code == 0
    assert "warning: 3 documents are newer than this code" in result.output
    gate = project.invoke("check", "--pending")
    assert gate.exit_code == EXIT_CHECK
    assert "3 stored documents are newer than version 3" in gate.output


def test_unversioned_writes_after_an_upgrade_are_flagged(project: Project) -> None:
    project.seed(4)
    assert project.invoke("upgrade").exit_code == 0
    # An old, unversioned pod saves a customer: atom-db replaces the document.
    doc = project.db[CUSTOMER].find_one({})
    project.db[CUSTOMER].replace_one({"_id": doc["_id"]}, {"name": "Ada Lovelace"})
    status = project.invoke("status", "Customer")
    assert "1 saved without a version since the upgrade of" in status.output
    gate = project.invoke("check", "--pending")
    assert gate.exit_code == EXIT_CHECK
    assert "code that does not version this model still saves it" in gate.output


def test_init_finds_the_table_however_it_is_spelled(tmp_path: Any, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from atomdb_migrate.cli.main import main

    monkeypatch.chdir(tmp_path)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool."atomdb-migrate"]\nmigrations = "steps"\n')
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0 and "already has" in result.output
    assert pyproject.read_text().count("atomdb-migrate") == 1
    # From a subdirectory: the project's pyproject.toml, not a new one.
    sub = tmp_path / "src" / "app"
    sub.mkdir(parents=True)
    pyproject.write_text('[project]\nname = "app"\n')
    monkeypatch.chdir(sub)
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert not (sub / "pyproject.toml").exists()
    assert 'migrations = "src/app/migrations"' in pyproject.read_text()
    assert (sub / "migrations").is_dir()
    # A pyproject.toml that does not parse is left alone.
    pyproject.write_text("[project\n")
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == EXIT_CONFIG and "nothing was written" in result.output
    assert pyproject.read_text() == "[project\n"


def test_ctrl_c_exits_130_and_records_what_was_written(project: Project) -> None:
    import signal

    project.seed(3000)
    replace_step(
        project,
        "import time\n\ndef upgrade(doc):\n    time.sleep(0.002)\n"
        "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n",
    )
    proc = project.spawn("upgrade", "--batch-size", "100")
    deadline = time.monotonic() + 60
    while project.db[CUSTOMER].count_documents({"__version__": "3"}) < 300:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    done = project.db[CUSTOMER].count_documents({"__version__": "3"})
    assert f"clidemo.Customer: {done} upgraded to 3 before the run stopped" in out
    (run,) = project.db["atomdb_migrate_history"].find()
    assert run["outcome"] == "interrupted"
    assert run["models"]["clidemo.Customer"]["upgraded"] == done


def test_a_slow_synchronous_step_keeps_the_lease(project: Project) -> None:
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("lock-ttl = 2", "lock-ttl = 0.6"))
    project.seed(120)
    replace_step(
        project,
        "import time\n\ndef upgrade(doc):\n    time.sleep(0.03)\n"
        "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n",
    )
    # A batch takes 3.6 s of blocking steps: six times the lease.
    code, out = project.run("upgrade", "--batch-size", "120")
    assert code == 0, out
    assert project.versions() == {"3": 120}


def test_a_step_blocking_longer_than_the_lease_keeps_it(project: Project) -> None:
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("lock-ttl = 2", "lock-ttl = 0.6"))
    project.seed(3)
    replace_step(
        project,
        "import time\n\ndef upgrade(doc):\n    time.sleep(1.5)\n"
        "    doc['first'], _, doc['last'] = doc.pop('name').partition(' ')\n",
    )
    code, out = project.run("upgrade")
    assert code == 0, out
    assert project.versions() == {"3": 3}


def test_a_result_with_a_key_that_is_not_a_string_fails_in_one_line(project: Project) -> None:
    project.seed(5)
    first_boom(project)
    replace_step(project, BOOM_STEP.replace("doc['junk'] = {value}", "doc[1] = 'one'"))
    result = project.invoke("upgrade")
    assert result.exit_code == EXIT_STEP, result.output
    assert "has a field named 1, which is not a string" in result.output.splitlines()[-1]
    again = project.invoke("upgrade", "--continue-on-error")
    assert again.exit_code == EXIT_STEP and "4 upgraded to 3" in again.output


def test_failures_recorded_under_continue_on_error_are_masked(auth_project: Project) -> None:
    from .test_security import PASSWORD as AUTH_PASSWORD

    auth_project.seed(3)
    replace_step(
        auth_project,
        "import os\n\ndef upgrade(doc):\n"
        "    raise ValueError('could not reach ' + os.environ['MONGO_URL'])\n",
    )
    result = auth_project.invoke("upgrade", "--continue-on-error")
    assert result.exit_code == EXIT_STEP
    assert AUTH_PASSWORD not in result.output and "mongodb://***@" in result.output
    (run,) = auth_project.db["atomdb_migrate_history"].find()
    assert run["failures"] and all(AUTH_PASSWORD not in f["error"] for f in run["failures"])
