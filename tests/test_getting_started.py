"""docs/getting-started.md, followed as written: its files written in a scratch
project, its commands run in order, each a process of its own, against a
SecantusDB database holding customers an unversioned app saved.

A ```python or ```toml block whose first line names a file (``# shop/models.py``)
is that file's whole text at that point of the page; a ```bash block's lines
are commands: every ``atomdb-migrate`` line runs and must exit 0; the page's
other lines (installing, the URL in the environment) are set up by the test
instead, and only those are allowed.

"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started.md"

#: The page's blocks, in order: their language and text.
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", flags=re.S | re.M)
#: The first line of a block that is a whole file of the project.
FILE = re.compile(r"# ([\w./-]+\.(?:py|toml))\n")
#: The lines of a bash block the test does itself rather than run.
SET_UP = ("pip install ", "export MONGO_URL=")

#: The customers the unversioned app saved (no ``__version__``: version 0).
NAMES = ["Ada", "Bob"]


def blocks() -> list[tuple[str, str]]:
    return [(lang, text) for lang, text in BLOCK.findall(PAGE.read_text())]


def commands(text: str) -> Iterator[list[str]]:
    """The ``atomdb-migrate`` commands of a bash block, each as its arguments."""
    for line in text.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(SET_UP):
            continue
        words = shlex.split(line)
        assert words[0] == "atomdb-migrate", f"the page runs {line!r}, which the test cannot"
        yield words[1:]


def run(project: Path, url: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGO_URL": url, "PYTHONPATH": os.pathsep.join([str(ROOT), str(project)])}
    env.pop("ATOMDB_MIGRATE_URL", None)
    exe = shutil.which("atomdb-migrate", path=os.path.dirname(sys.executable))
    assert exe, "the console script is installed"
    return subprocess.run(
        [exe, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def shop(secantus_url: str, tmp_path: Path) -> Iterator[tuple[Path, str, Any]]:
    """The scratch project, its database's URL, and the database, seeded."""
    name = f"shop_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, Any]] = MongoClient(secantus_url)
    saved = [{"_id": ObjectId(), "__model__": "shop.Customer", "name": n} for n in NAMES]
    client[name]["shop.Customer"].insert_many(saved)
    try:
        yield tmp_path, f"{secantus_url}/{name}", client[name]
    finally:
        client.drop_database(name)
        client.close()


def test_the_page_runs_as_written(shop: tuple[Path, str, Any]) -> None:
    project, url, db = shop
    ran: list[str] = []
    for lang, text in blocks():
        named = FILE.match(text)
        if lang in ("python", "toml"):
            assert named, f"a {lang} block that names no file: {text[:60]!r}"
            path = project / named.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            continue
        assert lang == "bash", lang
        for args in commands(text):
            done = run(project, url, args)
            print("$ atomdb-migrate", *args, "\n", done.stdout, done.stderr)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            ran.append(" ".join(args))
            if args[0] == "revision":
                # The module the page then shows in full is the one the command wrote.
                wrote = re.search(r"wrote (\S+\.py)", done.stdout)
                assert wrote, done.stdout
                assert f"migrations/{Path(wrote.group(1)).name}" in PAGE.read_text()
    # The path the page promises: adoption, a step, the deploy and the way back.
    assert ran.count("upgrade") == 2 and "downgrade Customer --to 1" in ran
    stored = sorted((d["name"], d["__version__"], "tier" in d) for d in db["shop.Customer"].find())
    assert stored == [(n, "1", False) for n in NAMES]


def test_the_page_shows_each_module_revision_writes(shop: tuple[Path, str, Any]) -> None:
    """Each ``revision`` of the page writes the versions of the module the page then
    shows: the adoption step from 0 to 1 for a model already at version 1."""
    project, url, _ = shop
    shown: dict[str, str] = {}
    for _lang, text in blocks():
        named = FILE.match(text)
        if named and named.group(1).startswith("migrations/"):
            shown[named.group(1)] = text
    for _lang, text in blocks():
        named = FILE.match(text)
        if named:
            path = project / named.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not named.group(1).startswith("migrations/"):
                path.write_text(text)
            continue
        for args in commands(text):
            done = run(project, url, args)
            if args[0] != "revision":
                continue
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            written = Path(re.search(r"wrote (\S+\.py)", done.stdout).group(1))  # type: ignore[union-attr]
            page = shown[f"migrations/{written.name}"]
            versions = r'^(from_version|to_version) = "(\w+)"'
            assert re.findall(versions, written.read_text(), flags=re.M) == re.findall(
                versions, page, flags=re.M
            ), written.name
            written.write_text(page)
