"""Security: credentials never shown, step modules only from their directory,
nothing stored ever evaluated as code."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from atomdb_migrate import InvalidVersionError, StepModuleError, load_migrations

from ..conftest import AUTH_USER
from ..project import Project
from .conftest import record

PASSWORD = AUTH_USER[1]

COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["upgrade", "--dry-run"],
    ["upgrade"],
    ["downgrade", "Customer", "--to", "2"],
    ["history"],
    ["check", "--pending"],
    ["stamp", "Customer", "3"],
    ["revision", "-m", "Next", "--model", "Customer"],
    ["upgrade", "Nope"],
    ["init"],
]


def test_no_command_shows_the_password(auth_project: Project) -> None:
    """Every command, succeeding, on a server that checks the credentials."""
    auth_project.seed(10)
    shown = 0
    for args in COMMANDS:
        result = auth_project.invoke(*args)
        assert result.exit_code in (0, 1, 3), (args, result.output)
        assert PASSWORD not in result.output, args
        shown += 1
    assert auth_project.versions() == {"3": 10}, "the commands really ran"
    # As a subprocess, with log lines: wait for a lock, then run.
    auth_project.db["atomdb_migrate_lock"].insert_one(
        {
            "_id": "atomdb-migrate",
            "owner": "x",
            "host": "h",
            "pid": 1,
            "command": "upgrade",
            "expires_at": __import__("datetime").datetime.now(__import__("datetime").UTC)
            + __import__("datetime").timedelta(seconds=1.5),
        }
    )
    code, out = auth_project.run("upgrade", "--wait")
    assert code == 0 and "WARNING: waiting: the migration lock is held" in out
    assert PASSWORD not in out
    code, out = auth_project.run(
        "status", url=auth_project.url.replace(PASSWORD, "wrong-" + PASSWORD)
    )
    assert code == 4 and PASSWORD not in out and "***" in out
    record("security", commands_checked=shown + 2)


def test_step_modules_load_only_from_their_directory(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text(
        'model = "m"\nfrom_version = "0"\nto_version = "1"\ndef upgrade(doc): pass\n'
    )
    folder = tmp_path / "migrations"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "0001_deep.py").write_text("raise SystemExit('loaded')")
    assert load_migrations(folder) == [], "subdirectories are not searched"
    os.symlink(outside, folder / "0001_link.py")
    with pytest.raises(StepModuleError, match="links outside the migrations directory"):
        load_migrations(folder)


async def test_nothing_stored_is_evaluated(db: Any, tmp_path: Path) -> None:
    from ..clidemo import Customer

    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    coll = Customer.objects
    ids = [ObjectId() for _ in range(3)]
    await coll.insert_one({"_id": ids[0], "__version__": code, "name": code})
    with pytest.raises(InvalidVersionError):
        await Customer.restore(await coll.find_one({"_id": ids[0]}))
    await coll.insert_one({"_id": ids[1], "__version__": "3", "__model__": code, "first": code})
    with pytest.raises(ValueError):
        await Customer.restore(await coll.find_one({"_id": ids[1]}))
    await coll.insert_one({"_id": ids[2], "__version__": "3", "first": {"__py__": code}})
    await Customer.restore(await coll.find_one({"_id": ids[2]}))
    time.sleep(0.05)
    assert not marker.exists()
