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

from atomdb_migrate.cli import EXIT_CONFIG, EXIT_CONNECTION, EXIT_LOCK, EXIT_STEP
from atomdb_migrate.lock import LOCK_ID

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
    ),
    Case(
        "non-dict",
        "a step returning a non-dict",
        lambda p: replace_step(p, "def upgrade(doc):\n    return [doc]\n"),
        EXIT_STEP,
        "returned list, expected a dict or None",
        written="nothing (the failed run is recorded in the history)",
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
        "invalid MongoDB URL 'mongodb://admin:***@host:1:2/db'",
        url=lambda p: f"mongodb://admin:{PASSWORD}@host:1:2/db",
    ),
    Case(
        "unreachable",
        "an unreachable server",
        lambda p: None,
        EXIT_CONNECTION,
        "cannot reach mongodb://admin:***@127.0.0.1:",
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
    message = lines[-1] if case.expect_code else next(line for line in lines if case.expect in line)
    if case.expect_code:
        assert message.startswith("Error: ") and case.expect in message, "one line says it all"
    assert PASSWORD not in result.output
    assert snapshot(project) == before, "no document changed"
    if case.name not in ("raises", "non-dict", "newer"):
        assert project.db["atomdb_migrate_history"].count_documents({}) == 0
    FIGURES.setdefault("bad_input", []).append(
        {
            "input": case.input,
            "message": message.removeprefix("Error: "),
            "code": case.expect_code,
            "written": case.written,
            "seconds": round(seconds, 2),
        }
    )
