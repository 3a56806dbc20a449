"""A project directory and database for command-line tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bson import ObjectId
from click.testing import CliRunner, Result
from pymongo import MongoClient

from atomdb_migrate.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
STEPS = Path(__file__).parent / "clidemo_migrations"
CUSTOMER = "clidemo.Customer"
ORDER = "clidemo.Order"
PASSWORD = "pa55-W0rd-xyzzy"

PYPROJECT = """
[tool.atomdb-migrate]
models = ["tests.clidemo"]
migrations = "migrations"
lock-ttl = 2
timeout = 5
"""


class Project:
    """A project directory with the demo models' steps, and a fresh database."""

    def __init__(self, path: Path, server: str, user: tuple[str, str] | None = None) -> None:
        self.path = path
        self.dbname = f"cli_{uuid.uuid4().hex[:12]}"
        if user is None:
            self.url = f"{server}/{self.dbname}"
            self.client: MongoClient[dict[str, Any]] = MongoClient(server)
        else:
            host = server.split("//", 1)[1]
            self.url = f"mongodb://{user[0]}:{user[1]}@{host}/{self.dbname}?authSource=admin"
            self.client = MongoClient(self.url)
        self.db = self.client[self.dbname]
        shutil.copytree(STEPS, path / "migrations")
        (path / "pyproject.toml").write_text(PYPROJECT)

    def seed(self, n: int, version: str | None = "1", **extra: Any) -> None:
        docs = []
        for i in range(n):
            doc: dict[str, Any] = {"_id": ObjectId(), "name": f"Ada {i}", **extra}
            doc["__model__"] = CUSTOMER
            if version is not None:
                doc["__version__"] = version
            docs.append(doc)
        if docs:
            self.db[CUSTOMER].insert_many(docs)

    def versions(self, model: str = CUSTOMER) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.db[model].find({}, {"__version__": 1}):
            v = d.get("__version__", "0")
            out[v] = out.get(v, 0) + 1
        return out

    def invoke(
        self, *args: str, url: str | None = None, input: str | None = None, color: bool = False
    ) -> Result:
        """Run the command line here; `color`: as on a terminal (escape sequences kept)."""
        env = {"MONGO_URL": url or self.url, "ATOMDB_MIGRATE_URL": ""}
        return CliRunner().invoke(
            main, list(args), env=env, catch_exceptions=False, input=input, color=color
        )

    def spawn(self, *args: str, url: str | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, "MONGO_URL": url or self.url, "PYTHONPATH": str(ROOT)}
        env.pop("ATOMDB_MIGRATE_URL", None)
        exe = shutil.which("atomdb-migrate", path=os.path.dirname(sys.executable))
        assert exe, "the console script is installed"
        return subprocess.Popen(
            [exe, *args],
            cwd=self.path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, *args: str, url: str | None = None, timeout: float = 120) -> tuple[int, str]:
        proc = self.spawn(*args, url=url)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out + err
