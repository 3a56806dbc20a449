"""The docs: every ```python block runs, and the CLI reference matches --help."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
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
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


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
