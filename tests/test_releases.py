"""Releases of several models: `revision` names the exact line that raises a
model's ``__version__``, and writes a step module for each model named
(several ``--model``, or ``--all``) with one message.

`revision` does not connect: these tests need no database.

"""

from __future__ import annotations

import ast
import inspect
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, load_migrations
from atomdb_migrate.cli.exits import EXIT_USAGE
from atomdb_migrate.cli.main import main
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.revision import version_assignment
from atomdb_migrate.commands.workspace import Workspace

from .clidemo import Customer, Order
from .project import PYPROJECT, STEPS

#: Examples of the property test; raise it with RELEASES_EXAMPLES.
RELEASES_EXAMPLES = int(os.environ.get("RELEASES_EXAMPLES", "150"))


@pytest.fixture
def root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_registry: MigrationRegistry
) -> Iterator[Path]:
    """A project of the demo models (Customer at 3, Order at 1) and their steps."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(STEPS, tmp_path / "migrations")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    yield tmp_path


def invoke(*args: str) -> Result:
    env = {"MONGO_URL": "", "ATOMDB_MIGRATE_URL": ""}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def workspace(root: Path) -> Workspace:
    return Workspace(load_config(models=["tests.clidemo"], start=root))


def source_line(cls: type) -> tuple[str, int]:
    """The file and line number of a class's ``__version__ = ...``."""
    lines, first = inspect.getsourcelines(cls)
    offset = next(i for i, line in enumerate(lines) if line.strip().startswith("__version__"))
    return inspect.getsourcefile(cls) or "", first + offset


# ---------------------------------------------------------------------------
# 1. The exact line to change
# ---------------------------------------------------------------------------
def test_revision_names_the_line_that_raises_the_version(root: Path) -> None:
    result = invoke("revision", "-m", "Add an email address", "--model", "Customer")
    assert result.exit_code == 0, result.output
    path, line = source_line(Customer)
    assert (
        f"then set __version__ = 4 on clidemo.Customer ({path}:{line}, now `__version__ = 3`)"
        in result.output
    ), result.output
    # The file written is said once.
    assert result.output.count("wrote ") == 1, result.output


def test_revision_from_python_gives_the_line(root: Path) -> None:
    done = command.revision(workspace(root), "Add an email address", "Customer")
    path, line = source_line(Customer)
    assert done.bump
    assert done.version_line == (Path(path), line, "__version__ = 3")
    assert done.new_version_line == "__version__ = 4"


def test_a_model_file_under_the_working_directory_is_named_relatively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_registry: MigrationRegistry
) -> None:
    """Run from the repository's root, the model's file is `tests/clidemo.py`."""
    here = Path(inspect.getsourcefile(Customer) or "").parent.parent
    project = tmp_path / "p"
    shutil.copytree(STEPS, project / "migrations")
    (project / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(here)
    done = command.revision(workspace(project), "Add an email address", "Customer")
    from atomdb_migrate.cli.revisions import version_hint

    assert version_hint(done).startswith(
        "then set __version__ = 4 on clidemo.Customer (tests/clidemo.py:"
    ), version_hint(done)


#: Attributes that may stand around ``__version__`` in a class body.
OTHER = st.sampled_from(
    [
        '__model__ = "blog.User"',
        "name = Str()",
        "# __version__ = 9, a comment",
        'note = "__version__ = 7"',
        "__on_newer__ = 'downgrade'",
        "count: int = 0",
        "def __version_of__(self):\n        return 1",
        '"""A docstring naming __version__ = 5."""',
    ]
)


@settings(max_examples=RELEASES_EXAMPLES, deadline=None)
@example(before=[], after=["# __version__ = 9, a comment"], value=None, annotated=False)
@given(
    before=st.lists(OTHER, max_size=4),
    after=st.lists(OTHER, max_size=4),
    value=st.one_of(
        st.integers(0, 10_000).map(str),
        st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,2}", fullmatch=True).map(repr),
        st.none(),
    ),
    annotated=st.booleans(),
)
def test_the_version_line_found_is_the_assignment(
    before: list[str], after: list[str], value: str | None, annotated: bool
) -> None:
    """Whatever surrounds it, the line found is the class's own assignment of
    ``__version__``, and none when the class does not assign it."""
    body = list(before)
    if value is not None:
        target = "__version__: ClassVar[str]" if annotated and value.startswith("'") else None
        body.append(f"{target} = {value}" if target else f"__version__ = {value}")
    body += after
    # A body of comments alone is no class body: a last ``pass`` makes one.
    text = "class User(VersionedModel):\n" + "".join(f"    {b}\n" for b in [*body, "pass"])
    found = version_assignment(text)
    if value is None:
        assert found is None
        return
    offset, line = found  # type: ignore[misc]
    assert text.splitlines()[offset] == "    " + line
    assert ast.literal_eval(line.split("=", 1)[1].strip()) == ast.literal_eval(value)


# ---------------------------------------------------------------------------
# 2. Several models, one message
# ---------------------------------------------------------------------------
def loaded(root: Path) -> dict[str, tuple[str, str, str]]:
    """Each new module's model, versions and docstring, by file name."""
    steps = load_migrations(root / "migrations", registry=MigrationRegistry())
    return {
        Path(s.source or "").name: (s.model, s.from_version, s.to_version)
        for s in steps
        if Path(s.source or "").name >= "0004"
    }


@pytest.mark.parametrize("how", [["--model", "Customer", "--model", "Order"], ["--all"]])
def test_revision_writes_a_module_per_model_with_one_message(root: Path, how: list[str]) -> None:
    result = invoke("revision", "-m", "Release 2", *how)
    assert result.exit_code == 0, result.output
    first = root / "migrations" / "0004_release_2.py"
    second = root / "migrations" / "0005_release_2.py"
    for path in (first, second):
        assert path.read_text().startswith('"""Release 2"""'), path
        assert f"wrote {path}" in result.output
    assert "clidemo.Customer 3 -> 4" in result.output
    assert "clidemo.Order 1 -> 2" in result.output
    assert "then set __version__ = 4 on clidemo.Customer" in result.output
    assert "then set __version__ = 2 on clidemo.Order" in result.output
    assert sorted(loaded(root).values()) == [
        ("clidemo.Customer", "3", "4"),
        ("clidemo.Order", "1", "2"),
    ]


def test_revisions_from_python(root: Path) -> None:
    done = command.revisions(workspace(root), "Release 2", ["Order", "clidemo.Customer", "Order"])
    assert [(d.model, d.from_version, d.to_version) for d in done] == [
        ("clidemo.Order", "1", "2"),
        ("clidemo.Customer", "3", "4"),
    ]
    assert [d.path.name for d in done] == ["0004_release_2.py", "0005_release_2.py"]
    every = command.revisions(workspace(root), "Release 3", [])
    assert [d.model for d in every] == ["clidemo.Customer", "clidemo.Order"]
    assert Order.__version__ == "1"  # the code is not changed


@pytest.mark.parametrize(
    "args",
    [[], ["--all", "--model", "Customer"]],
)
def test_revision_wants_models_or_all_not_both(root: Path, args: list[str]) -> None:
    result = invoke("revision", "-m", "Release 2", *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--model" in result.output and "--all" in result.output
    assert not (root / "migrations" / "0004_release_2.py").exists()
