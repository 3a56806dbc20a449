"""Start-up: what a command imports and opens before it does its work.

A run with nothing to do should cost little more than the Python start-up,
PyMongo and the project's own models: the modules only one command needs
(autogenerate, for ``revision``) are imported by that command alone. Each
test runs a fresh interpreter, since this process has imported everything
already.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from atomdb_migrate.cli.main import main
from atomdb_migrate.engine.lock import LeaseLock

ROOT = Path(__file__).resolve().parent.parent

MODELS = """
from atom.api import Str
from atomdb_migrate import VersionedModel


class Note(VersionedModel):
    __model__ = "startup.Note"
    __version__ = 2
    __base_version__ = 1
    title = Str()
"""

STEP = '''
"""Notes: text becomes title."""

from atomdb_migrate import ops

model = "startup.Note"
from_version = "1"
to_version = "2"
operations = [ops.rename_field("text", "title")]
schema = {"title": "Str"}
'''

PYPROJECT = """
[tool.atomdb-migrate]
models = ["startupnotes"]
migrations = "migrations"
timeout = 5
"""

#: Runs the command line in this fresh interpreter, then prints its exit code
#: and the toolkit's modules it imported, as JSON on the last line.
PROBE = """
import json, sys
from atomdb_migrate.cli import main
try:
    main(sys.argv[1:], prog_name="atomdb-migrate")
    code = 0
except SystemExit as exit:
    code = exit.code or 0
loaded = sorted(name for name in sys.modules if name.startswith("atomdb_migrate"))
print(json.dumps({"code": code, "modules": loaded}))
"""

#: Modules only `revision` needs.
REVISION_ONLY = ("atomdb_migrate.autogenerate", "atomdb_migrate.commands.revision")


def project(path: Path) -> Path:
    (path / "startupnotes.py").write_text(MODELS)
    (path / "migrations").mkdir()
    (path / "migrations" / "0001_title.py").write_text(STEP)
    (path / "pyproject.toml").write_text(PYPROJECT)
    return path


def imported(where: Path, *args: str) -> tuple[int, list[str]]:
    """The exit code of ``atomdb-migrate ARGS`` in a fresh interpreter, and the
    toolkit's modules it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    for name in ("ATOMDB_MIGRATE_URL", "MONGO_URL"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return found["code"], found["modules"]


def revision_only(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(REVISION_ONLY)]


def test_upgrade_with_nothing_to_do_imports_no_autogenerate(tmp_path: Path) -> None:
    where = project(tmp_path)
    url = "mongomock://startup/notes"
    code, modules = imported(where, "--url", url, "upgrade", "--no-progress")
    assert code == 0
    # The run did run: the engine and the project's step were loaded.
    assert "atomdb_migrate.engine.runner" in modules
    assert "atomdb_migrate.commands.loader" in modules
    assert revision_only(modules) == []


def test_check_imports_no_autogenerate(tmp_path: Path) -> None:
    code, modules = imported(project(tmp_path), "check")
    assert code == 0
    assert "atomdb_migrate.commands.check" in modules
    assert revision_only(modules) == []


def test_the_package_imports_no_autogenerate(tmp_path: Path) -> None:
    code, modules = imported(project(tmp_path), "--help")
    assert code == 0
    assert "atomdb_migrate.cli.main" in modules
    assert revision_only(modules) == []


@pytest.mark.parametrize("name", sorted(set(main.commands) - {"revision"}))
def test_no_other_command_imports_autogenerate(tmp_path: Path, name: str) -> None:
    """Every command but ``revision``, parsed (``--help``), imports none of it."""
    code, modules = imported(project(tmp_path), name, "--help")
    assert code == 0
    assert revision_only(modules) == []


def test_revision_still_imports_it(tmp_path: Path) -> None:
    where = project(tmp_path)
    code, modules = imported(where, "revision", "-m", "a subtitle", "--model", "startup.Note")
    assert code == 0
    assert "atomdb_migrate.commands.revision" in modules
    assert len(list((where / "migrations").glob("0002_*.py"))) == 1


def test_the_revision_names_are_still_there() -> None:
    from atomdb_migrate import command as shim
    from atomdb_migrate.commands import command
    from atomdb_migrate.commands.revision import Revision, revision, revisions

    assert command.Revision is Revision
    assert command.revision is revision
    assert command.revisions is revisions
    assert shim.Revision is Revision and shim.revisions is revisions
    with pytest.raises(AttributeError):
        _ = command.no_such_name


# ---------------------------------------------------------------------------
# The lease's synchronous connection: made when the first renewal is due
# ---------------------------------------------------------------------------
class Factory:
    """Counts the synchronous collections the renewal thread asks for."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.make()


def sync_locks(db: Any, backend: str, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """The database's ``locks`` collection through a synchronous client, and that
    client to close (None for the in-memory backend)."""
    from atomdb_migrate.driver.mongo import is_mongomock, sync_database

    if is_mongomock(db):
        return None, vars(db)["_AsyncMongoMockDatabase__database"]["locks"]
    from .conftest import server_url

    client, database = sync_database(server_url(backend, request), db.name, 5)
    return client, database["locks"]


async def test_a_short_hold_opens_no_renewal_connection(
    db: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    client, locks = sync_locks(db, backend, request)
    factory = Factory(lambda: locks)
    try:
        async with LeaseLock(db["locks"], ttl=30, renewal=factory) as lock:
            lock.check()
            assert await db["locks"].find_one({"owner": lock.owner}) is not None
        assert factory.calls == 0
        assert await db["locks"].find_one({}) is None  # released all the same
    finally:
        if client is not None:
            client.close()


async def test_the_renewal_connection_is_made_once_and_renews(
    db: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    client, locks = sync_locks(db, backend, request)
    factory = Factory(lambda: locks)
    try:
        async with LeaseLock(db["locks"], ttl=0.3, renewal=factory) as lock:
            await asyncio.sleep(0)
            time.sleep(1.0)  # more than three leases, the loop blocked all along
            lock.check()
            assert (await db["locks"].find_one({}))["renewed_at"] is not None
        assert factory.calls == 1
    finally:
        if client is not None:
            client.close()


async def test_a_failed_renewal_connection_is_tried_again(
    db: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    client, locks = sync_locks(db, backend, request)
    attempts: list[int] = []

    def flaky() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("the server did not answer")
        return locks

    try:
        async with LeaseLock(db["locks"], ttl=0.6, renewal=flaky) as lock:
            await asyncio.sleep(0)
            time.sleep(0.9)  # the first renewal fails to connect, the second renews
            lock.check()
            assert (await db["locks"].find_one({}))["renewed_at"] is not None
        assert len(attempts) == 2
    finally:
        if client is not None:
            client.close()


def test_upgrade_with_nothing_to_do_opens_one_connection(
    project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command: its lock taken and given back, its history record
    written, and no second (synchronous) client opened for the lease."""
    from atomdb_migrate.commands import workspace

    project.seed(20, version="3")
    opened = Factory(lambda: None)
    real = workspace.sync_database

    def counting(*args: Any) -> Any:
        opened()
        return real(*args)

    monkeypatch.setattr(workspace, "sync_database", counting)
    result = project.invoke("upgrade", "--no-progress")
    assert result.exit_code == 0, result.output
    assert opened.calls == 0
    assert project.db["atomdb_migrate_lock"].find_one({}) is None
    records = list(project.db["atomdb_migrate_history"].find({"command": "upgrade"}))
    assert [r["outcome"] for r in records] == ["succeeded"]


# ---------------------------------------------------------------------------
# Loading step modules: the unfinished parts found without parsing for nothing
# ---------------------------------------------------------------------------
#: Examples of the differential test (``STARTUP_EXAMPLES`` to change it).
EXAMPLES = int(os.environ.get("STARTUP_EXAMPLES", "60"))

BODIES = [
    "    doc['x'] = 1\n",
    "    raise NotImplementedError('write it')\n",
    "    raise NotImplementedError\n",
    "    '''Doc.'''\n    raise NotImplementedError()\n",
    "    raise \uff2eotImplementedError('a fullwidth N: the same name')\n",
    "    raise ValueError('NotImplementedError is only named here')\n",
    "    pass  # DELETES DATA: drops the field\n",
]
COMMENTS = [
    "",
    "# LOSSY: int to str\n",
    "# DELETES DATA: field x\n",
    "#   LOSSY:  padded\n",
    "# lossy: lower case is no tag\n",
    "x = '# LOSSY: in a string, not a comment'\n",
    "# a note about NotImplementedError\n",
    "# caf\u00e9\n",
]


def reference_unfinished(text: str) -> tuple[str, ...]:
    """What `_unfinished` found before it skipped anything: parse, then tokenize."""
    import ast

    from atomdb_migrate.commands import loader

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return ()
    found = loader._functions_to_write(tree)
    found += [f"line {n}: # {c}" for n, c in loader._comments_to_confirm(text)]
    return tuple(found)


def module_text(parts: list[tuple[str, str, str]], broken: bool) -> str:
    text = '"""A step."""\n\nmodel = "m.M"\nfrom_version = "1"\nto_version = "2"\n'
    for name, body, comment in parts:
        text += f"\n{comment}\ndef {name}(doc):\n{body}"
    return text + ("\ndef broken(:\n" if broken else "")


def test_a_finished_module_is_neither_parsed_nor_tokenized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atomdb_migrate.commands import loader

    def refused(*args: Any) -> Any:
        raise AssertionError("not needed for a module with nothing left to write")

    monkeypatch.setattr(loader, "_comments_to_confirm", refused)
    monkeypatch.setattr(loader, "_functions_to_write", refused)  # called on the parsed tree
    file = tmp_path / "0001_done.py"
    file.write_text(module_text([("upgrade", BODIES[0], "# sets x\n")], broken=False))
    assert loader._unfinished(file) == ()


def test_unfinished_parts_are_found_as_before(tmp_path: Path) -> None:
    """Differential: `_unfinished` finds what parsing and tokenizing every module
    finds, for generated modules (finished or not, tagged comments or not, a
    name spelled in other characters, a syntax error)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from atomdb_migrate.commands import loader

    part = st.tuples(
        st.sampled_from(["upgrade", "downgrade", "helper"]),
        st.sampled_from(BODIES),
        st.sampled_from(COMMENTS),
    )

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(parts=st.lists(part, max_size=3), broken=st.booleans())
    def check(parts: list[tuple[str, str, str]], broken: bool) -> None:
        text = module_text(parts, broken)
        file = tmp_path / "0001_step.py"
        file.write_text(text, encoding="utf-8")
        assert loader._unfinished(file) == reference_unfinished(text)

    check()


# ---------------------------------------------------------------------------
# Checksums: one parse of a step module for its checksum and its imports
# ---------------------------------------------------------------------------
PIECES = [
    '"""A docstring."""\n',
    "import os\n",
    "from . import helpers\n",
    "schema = {'a': 'Str'}\n",
    "changes = ['a']\n",
    "def upgrade(doc):\n    '''Doc.'''\n    from json import dumps\n    doc['a'] = dumps(schema)\n",
    "def upgrade(doc):\n    doc['a'] = 1\n",
    "TEXT = '''\n    \n  kept as written'''\n",  # dedent would change this string
    "    x = 1\n",  # indented: not a module on its own
    "def broken(:\n",
]


def reference_module_checksum(source: str) -> str:
    """`module_checksum` as it was: its own parse of the dedented text."""
    import ast
    import textwrap

    from atomdb_migrate.commands import checksums

    tree = checksums._without_docstrings(ast.parse(textwrap.dedent(source)))
    assert isinstance(tree, ast.Module)
    return checksums._digest(checksums._without_metadata(tree))


def test_a_step_module_is_parsed_once_for_both_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    from atomdb_migrate.commands import checksums

    text = "".join(PIECES[:6])
    checksums._parsed.cache_clear()
    parses: list[str] = []
    real = checksums.ast.parse

    def counting(source: str, *args: Any, **kwargs: Any) -> Any:
        parses.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(checksums.ast, "parse", counting)
    checksums.module_checksum(text)
    checksums._parsed(text, "")
    monkeypatch.undo()
    assert len(parses) == 1


def test_module_checksums_are_as_before() -> None:
    """Differential: `module_checksum` and the imports' facts of generated module
    texts are what their own parses gave (and the same errors)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from atomdb_migrate.commands import checksums

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(st.lists(st.sampled_from(PIECES), max_size=6))
    def check(pieces: list[str]) -> None:
        text = "".join(pieces)
        checksums._parsed.cache_clear()
        try:
            expected: str | type[BaseException] = reference_module_checksum(text)
        except (SyntaxError, ValueError) as exc:
            expected = type(exc)
        try:
            got: str | type[BaseException] = checksums.module_checksum(text)
        except (SyntaxError, ValueError) as exc:
            got = type(exc)
        assert got == expected
        facts = checksums._parsed(text, "")
        if facts is not None:
            tree = checksums.ast.parse(text)
            names = tuple(checksums._imported_names(tree, ""))
            assert facts[:2] == (names, checksums._digest(checksums._without_docstrings(tree)))

    check()
