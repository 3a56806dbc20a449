"""The docs: every ```python block runs, and the CLI reference matches --help."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from atomdb_migrate import MigrationRegistry
from atomdb_migrate.cli.main import main
from atomdb_migrate.testing import memory_database

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOG = ROOT / "examples" / "blog"


def python_blocks(path: Path) -> list[str]:
    """The page's ```python blocks, but test files (run by pytest: see below)."""
    found = re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)
    return [block for block in found if not TEST_FILE.match(block)]


#: The first line of a block that is a whole test file: ``# tests/test_x.py``.
TEST_FILE = re.compile(r"# (tests/test_\w+\.py)\n")
#: The first line of a block that is a whole module the page names: ``# app.py``.
MODULE_FILE = re.compile(r"# (\w+\.py)\n")


def file_blocks(path: Path) -> dict[str, str]:
    """The page's ```python blocks that are whole files, by the path their first line names."""
    found = {}
    for block in re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M):
        named = TEST_FILE.match(block) or MODULE_FILE.match(block)
        if named:
            found[named.group(1)] = block
    return found


@pytest.mark.parametrize("page", DOCS, ids=[p.stem for p in DOCS])
async def test_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    shutil.copytree(BLOG / "migrations", tmp_path / "migrations")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(BLOG))
    memory_database()
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    with MigrationRegistry.instance().isolated():
        for i, block in enumerate(blocks):
            code = compile(block, f"{page.name}[{i}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.isawaitable(result):
                await result


def options(command: click.Command) -> list[str]:
    return [o for p in command.params for o in p.opts if o.startswith("--") and o != "--help"]


def test_cli_reference_lists_every_command_and_option() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    assert isinstance(main, click.Group)
    missing = [
        f"atomdb-migrate {o}"
        for o in options(main)
        if f"`{o}`" not in text and o not in ("--version",)
    ]
    for name, command in main.commands.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}")), None)
        assert row, f"no row for {name} in docs/cli.md"
        missing += [f"{name} {o}" for o in options(command) if o not in row]
        for param in command.params:
            if isinstance(param, click.Argument):
                assert param.name.upper().rstrip("S") in row.upper(), (name, param.name)
    assert missing == []


def test_docs_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in DOCS:
        assert f"docs/{page.name}" in readme, page.name


def run_pytest(project: Path, mode: str | None) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own, its pytest.ini setting `mode` (or nothing)."""
    ini = "[pytest]\n" + (f"asyncio_mode = {mode}\n" if mode else "")
    (project / "pytest.ini").write_text(ini)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_pytest_example_of_writing_steps_runs_as_written(tmp_path: Path) -> None:
    """The test file of docs/writing-steps.md passes under pytest, in pytest-asyncio's
    default (strict) mode as written, and in auto mode without its marks, as the
    page says; in strict mode without the marks, it does not."""
    files = file_blocks(ROOT / "docs" / "writing-steps.md")
    tests = [name for name in files if name.startswith("tests/")]
    assert "app.py" in files and tests, sorted(files)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    written = run_pytest(tmp_path, None)
    assert written.returncode == 0, written.stdout + written.stderr
    assert re.search(r"\b(\d+) passed", written.stdout), written.stdout
    count = int(re.search(r"\b(\d+) passed", written.stdout).group(1))  # type: ignore[union-attr]
    assert count == sum(files[name].count("\nasync def test_") for name in tests)
    for name in tests:
        unmarked = files[name].replace("@pytest.mark.asyncio\n", "")
        (tmp_path / name).write_text(unmarked)
    auto = run_pytest(tmp_path, "auto")
    assert auto.returncode == 0 and f"{count} passed" in auto.stdout, auto.stdout + auto.stderr
    strict = run_pytest(tmp_path, None)
    assert strict.returncode != 0 and "not natively supported" in strict.stdout, strict.stdout
