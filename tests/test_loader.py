"""Loading version-step modules from a directory."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from atomdb_migrate import ConfigError, MigrationRegistry, StepModuleError, load_migrations
from atomdb_migrate.commands.loader import configured_directory

MODEL = "tests.loader.Thing"


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def good(folder: Path, name: str = "0001_first.py", a: str = "0", b: str = "1") -> Path:
    return write(
        folder,
        name,
        f'''
        """Add a flag."""

        model = "{MODEL}"
        from_version = "{a}"
        to_version = "{b}"


        def upgrade(doc):
            doc["flag_{b}"] = True


        def downgrade(doc):
            doc.pop("flag_{b}")
        ''',
    )


def test_loads_steps_in_order(tmp_path: Path, registry: MigrationRegistry) -> None:
    good(tmp_path, "0002_second.py", "1", "2")
    good(tmp_path, "0001_first.py", "0", "1")
    (tmp_path / "_helpers.py").write_text("raise RuntimeError('never loaded')")
    (tmp_path / "notes.txt").write_text("not a module")
    steps = load_migrations(tmp_path)
    assert [(s.from_version, s.to_version) for s in steps] == [("0", "1"), ("1", "2")]
    assert steps[0].message == "Add a flag."
    assert steps[0].source == str((tmp_path / "0001_first.py").resolve())
    chain = registry.graph(MODEL).plan_upgrade("0", "2")
    doc: dict[str, Any] = {}
    for s in chain:
        s.upgrade_fn(doc)
    assert doc == {"flag_1": True, "flag_2": True}
    assert chain[1].downgrade_fn is not None


def test_loading_again_replaces(tmp_path: Path, registry: MigrationRegistry) -> None:
    good(tmp_path)
    load_migrations(tmp_path)
    load_migrations(tmp_path)
    assert len(registry.graph(MODEL)) == 1


def test_async_and_int_versions(tmp_path: Path, registry: MigrationRegistry) -> None:
    write(
        tmp_path,
        "a.py",
        f'''
        model = "{MODEL}"
        from_version = 0
        to_version = 1

        async def upgrade(doc):
            return {{**doc, "x": 1}}
        ''',
    )
    (step,) = load_migrations(tmp_path)
    assert (step.from_version, step.to_version, step.message, step.downgrade_fn) == (
        "0",
        "1",
        "",
        None,
    )


@pytest.mark.parametrize(
    "body, line, message",
    [
        (
            "model = 'm'\nfrom_version = '0'\nto_version = '1'\ndef upgrade(doc)\n    pass\n",
            4,
            "syntax error",
        ),
        ("import no_such_module_here\n", 1, "ModuleNotFoundError"),
        ("model = 'm'\n\nx = 1 / 0\n", 3, "ZeroDivisionError"),
        (
            "from_version = '0'\nto_version = '1'\ndef upgrade(doc): pass\n",
            1,
            "missing module-level name 'model'",
        ),
        ("model = 'm'\nfrom_version = '0'\nto_version = '1'\n", 1, "missing function 'upgrade'"),
        (
            "model = 'm'\nfrom_version = 1.5\nto_version = '2'\ndef upgrade(doc): pass\n",
            2,
            "from_version must be a string, not float",
        ),
        (
            "model = 'm'\nfrom_version = '0'\nto_version = '1'\n\nupgrade = 3\n",
            5,
            "not callable: function 'upgrade'",
        ),
        (
            "model = 'm'\nfrom_version = '0'\nto_version = '1'\ndef upgrade(doc): pass\n"
            "downgrade = 'no'\n",
            5,
            "'downgrade' is not callable",
        ),
    ],
    ids=[
        "syntax",
        "import",
        "raises",
        "no-model",
        "no-upgrade",
        "float-version",
        "upgrade-not-callable",
        "downgrade-not-callable",
    ],
)
def test_broken_module_names_file_and_line(
    tmp_path: Path, registry: MigrationRegistry, body: str, line: int, message: str
) -> None:
    good(tmp_path)
    bad = write(tmp_path, "0002_bad.py", body)
    with pytest.raises(StepModuleError) as info:
        load_migrations(tmp_path)
    ((path, got_line, got),) = info.value.problems
    assert (path, got_line) == (str(bad), line)
    assert message in got
    assert f"{bad}:{line}:" in str(info.value)
    assert len(registry.graph(MODEL)) == 0, "nothing is registered"


def test_every_broken_module_is_reported(tmp_path: Path, registry: MigrationRegistry) -> None:
    write(tmp_path, "a.py", "import nowhere_to_be_found\n")
    write(tmp_path, "b.py", "def (:\n")
    with pytest.raises(StepModuleError) as info:
        load_migrations(tmp_path)
    assert [Path(p).name for p, _, _ in info.value.problems] == ["a.py", "b.py"]


def test_duplicate_step_across_files_registers_nothing(
    tmp_path: Path, registry: MigrationRegistry
) -> None:
    good(tmp_path, "0001_a.py", "0", "1")
    good(tmp_path, "0002_b.py", "1", "2")
    dup = good(tmp_path, "0003_c.py", "1", "3")
    with pytest.raises(StepModuleError, match="two steps leave version 1") as info:
        load_migrations(tmp_path)
    assert info.value.problems[0][:2] == (str(dup), 4)  # the from_version line
    assert len(registry.graph(MODEL)) == 0


def test_backward_step_is_a_cycle(tmp_path: Path, registry: MigrationRegistry) -> None:
    good(tmp_path, "0001_a.py", "2", "1")
    with pytest.raises(StepModuleError, match="must go to a greater version"):
        load_migrations(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_migrations(tmp_path / "nope")


def test_directory_from_pyproject(
    tmp_path: Path, registry: MigrationRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "steps").mkdir()
    good(tmp_path / "steps")
    (tmp_path / "pyproject.toml").write_text('[tool.atomdb-migrate]\nmigrations = "steps"\n')
    sub = tmp_path / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)  # found from a subdirectory, relative to pyproject.toml
    (step,) = load_migrations()
    assert step.model == MODEL


def test_no_directory_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no migrations directory") as raised:
        load_migrations(registry=MigrationRegistry())
    # Where it looked, and what to pass.
    message = str(raised.value)
    assert str(tmp_path) in message and "versioned models" in message, message
    assert 'pass the directory: load_migrations("path/to/migrations")' in message, message


def app_project(root: Path, package: str, model: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project at `root`: its pyproject.toml's table, a migrations directory with
    one step of `model`, and a package `package` defining the model, imported."""
    import importlib.util

    (root / "migrations").mkdir(parents=True)
    good(root / "migrations")
    (root / "migrations" / "0001_first.py").write_text(
        (root / "migrations" / "0001_first.py").read_text().replace(MODEL, model)
    )
    (root / "pyproject.toml").write_text('[tool.atomdb-migrate]\nmigrations = "migrations"\n')
    (root / "src" / package).mkdir(parents=True)
    (root / "src" / package / "__init__.py").write_text(
        "from atom.api import Bool\nfrom atomdb_migrate import VersionedModel\n\n"
        f"class Thing(VersionedModel):\n    __model__ = {model!r}\n    __version__ = 1\n"
        "    flag_1 = Bool()\n"
    )
    init = root / "src" / package / "__init__.py"
    spec = importlib.util.spec_from_file_location(package, init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, package, module)  # gone again after the test
    spec.loader.exec_module(module)
    return root / "migrations"


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> MigrationRegistry:
    """The process's registry, empty for the test (models defined in it register there)."""
    registry = MigrationRegistry()
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    return registry


def test_found_from_the_models_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: MigrationRegistry
) -> None:
    """An app started from another directory (`/`, a service's working directory):
    the project is the one of its models' package."""
    migrations = app_project(tmp_path / "app", "loader_app_one", "loader.app.Thing", monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (step,) = load_migrations()
    assert step.model == "loader.app.Thing"
    assert step.source == str((migrations / "0001_first.py").resolve())


def test_the_working_directory_s_project_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: MigrationRegistry
) -> None:
    app_project(tmp_path / "app", "loader_app_two", "loader.two.Thing", monkeypatch)
    (tmp_path / "here" / "steps").mkdir(parents=True)
    good(tmp_path / "here" / "steps")
    (tmp_path / "here" / "pyproject.toml").write_text(
        '[tool.atomdb-migrate]\nmigrations = "steps"\n'
    )
    monkeypatch.chdir(tmp_path / "here")
    (step,) = load_migrations()
    assert step.model == MODEL


def test_models_of_several_projects_are_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: MigrationRegistry
) -> None:
    one = app_project(tmp_path / "one", "loader_app_three", "loader.three.Thing", monkeypatch)
    two = app_project(tmp_path / "two", "loader_app_four", "loader.four.Thing", monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="name several") as raised:
        load_migrations()
    message = str(raised.value)
    assert f"{one} (loader.three.Thing)" in message and f"{two} (loader.four.Thing)" in message
    assert "pass the directory" in message


async def test_reads_use_the_steps_loaded_from_files(db: Any, registry: MigrationRegistry) -> None:
    from .clidemo import Customer

    load_migrations(Path(__file__).parent / "clidemo_migrations")
    doc = {"name": "Ada Lovelace", "__version__": "1", "__model__": Customer.__model__}
    _id = (await Customer.objects.insert_one(doc)).inserted_id
    c = await Customer.restore(await Customer.objects.find_one({"_id": _id}))
    assert (c.first, c.last, c.tier, c.applied) == ("Ada", "Lovelace", "basic", 1)


@pytest.mark.parametrize("coding", ["latin-1", "utf-8"])
def test_a_comment_to_confirm_is_found_in_a_module_of_any_encoding(
    tmp_path: Path, registry: MigrationRegistry, coding: str
) -> None:
    """Python reads a module in the encoding its coding line declares: so does the
    search for what is left to write (it found nothing in a module that is not
    UTF-8, and ``check`` passed over a ``# DELETES DATA:`` comment)."""
    text = textwrap.dedent(
        f'''
        # -*- coding: {coding} -*-
        """Drop the café's status."""
        from atomdb_migrate import ops

        model = "{MODEL}"
        from_version = "0"
        to_version = "1"
        operations = [
            ops.remove_field("status"),
            # DELETES DATA: remove_field('status') deletes every stored 'status' (Str)
        ]
        '''
    ).lstrip()
    (tmp_path / "0001_drop.py").write_bytes(text.encode(coding))
    (step,) = load_migrations(tmp_path)
    assert step.message == "Drop the café's status."
    assert any("DELETES DATA: remove_field('status')" in u for u in step.unfinished), step


#: How many generated layouts of projects the directory property tries.
LAYOUT_EXAMPLES = int(os.environ.get("LOADER_LAYOUT_EXAMPLES", "40"))


@settings(max_examples=LAYOUT_EXAMPLES, deadline=None)
@given(
    here=st.sampled_from(["none", "no table", "table"]),
    models=st.lists(st.sampled_from(["p1", "p2", "p3", "bare", "fileless"]), max_size=4),
)
def test_generated_layouts_find_the_directory_the_rules_name(here: str, models: list[str]) -> None:
    """The working directory's table first; else the one directory the models'
    projects name; else an error that lists them (or says none was found).

    Projects p1 and p2 set `migrations`, p3 has a pyproject.toml without the
    table, "bare" has none, and a "fileless" model's module has no file.
    """
    import types

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        for name in ("p1", "p2"):
            (root / name / "migrations").mkdir(parents=True)
            (root / name / "pyproject.toml").write_text(
                '[tool.atomdb-migrate]\nmigrations = "migrations"\n'
            )
        (root / "p3").mkdir()
        (root / "p3" / "pyproject.toml").write_text("[project]\nname = 'p3'\n")
        (root / "bare").mkdir()
        cwd = root / "cwd"
        (cwd / "steps").mkdir(parents=True)
        if here != "none":
            table = '[tool.atomdb-migrate]\nmigrations = "steps"\n' if here == "table" else ""
            (cwd / "pyproject.toml").write_text(table + "[project]\nname = 'cwd'\n")
        registry = MigrationRegistry()
        old_cwd = os.getcwd()
        try:
            for i, where in enumerate(models):
                module = types.ModuleType(f"layout_models_{i}")
                if where != "fileless":
                    (root / where / "pkg").mkdir(exist_ok=True)
                    module.__file__ = str(root / where / "pkg" / f"m{i}.py")
                sys.modules[module.__name__] = module
                cls = type(f"M{i}", (), {"__module__": module.__name__, "__model__": f"m.M{i}"})
                registry.models[f"m.M{i}"] = cls
            os.chdir(cwd)
            try:
                found: Path | str = configured_directory(registry)
            except ConfigError as exc:
                found = str(exc)
        finally:
            os.chdir(old_cwd)
            for i in range(len(models)):
                sys.modules.pop(f"layout_models_{i}", None)
    named = sorted({root / m / "migrations" for m in models if m in ("p1", "p2")})
    if here == "table":
        event("the working directory's")
        assert found == cwd / "steps"
    elif len(named) == 1:
        event("the models' project")
        assert found == named[0]
    elif named:
        event("several: an error listing them")
        assert isinstance(found, str) and all(str(d) in found for d in named), found
    else:
        event("none: an error saying what to pass")
        assert isinstance(found, str) and "pass the directory" in found, found
