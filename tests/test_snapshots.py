"""Snapshots that see what decides storage, and autogenerate that never writes a
destructive step.

Each case was a way the fourth hostile pass lost data or missed a change:
a stale snapshot, add_field over present values, a computed default frozen
into one literal, details a bare type name hides, a model moved away from
its snapshots.

"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from atom.api import Coerced, Dict, Enum, Float, FloatRange, Instance, Int, List, Range, Str, Typed
from atomdb.base import JSONModel
from atomdb.nosql import NoSQLModelManager

from atomdb_migrate import ConfigError, MigrationRegistry, VersionedModel, load_migrations
from atomdb_migrate.commands.command import drift, revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.schema.snapshots import compare, describe_member, same_storage, snapshot

from .project import ROOT


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MigrationRegistry, Workspace]:
    registry = MigrationRegistry()
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    (tmp_path / "migrations").mkdir()
    ws = Workspace(Config(migrations=tmp_path / "migrations"), registry=registry)
    ws._loaded = True
    return registry, ws


def module(ws: Workspace, name: str, text: str) -> None:
    folder = ws.config.migrations
    assert folder is not None
    (folder / name).write_text(textwrap.dedent(text).lstrip())


def load(ws: Workspace) -> None:
    ws.registry.graphs.clear()
    load_migrations(ws.config.migrations, registry=ws.registry)


def model(model_name: str, version: int, **members: Any) -> type[VersionedModel]:
    attrs = {"__model__": model_name, "__version__": version, **members}
    return type("Snap", (VersionedModel,), attrs)  # type: ignore[return-value]


# ----------------------------------------------------------------------
# 1. Never a stale snapshot
# ----------------------------------------------------------------------
def test_autogenerate_refuses_a_snapshot_older_than_the_previous_version(fresh: Any) -> None:
    _, ws = fresh
    module(
        ws,
        "0001_first.py",
        """
        "First."
        model = "snap.Doc"
        from_version = "0"
        to_version = "1"
        operations = []
        schema = {"name": "Str"}
    """,
    )
    module(
        ws,
        "0002_rename.py",
        """
        "Rename name to title, by hand: no schema."
        from atomdb_migrate import ops
        model = "snap.Doc"
        from_version = "1"
        to_version = "2"
        operations = [ops.rename_field("name", "title")]
    """,
    )
    model("snap.Doc", 2, title=Str(), extra=Str())
    load(ws)
    problems = drift(ws)
    assert len(problems) == 1 and "the step to version 2" in problems[0], problems
    assert "records no schema" in problems[0]
    model("snap.Doc", 3, title=Str(), extra=Str())
    with pytest.raises(ConfigError, match=r"the step to version 2 .* records no schema"):
        revision(ws, "extra", "snap.Doc", autogenerate=True)
    assert sorted(p.name for p in ws.config.migrations.iterdir()) == [
        "0001_first.py",
        "0002_rename.py",
    ], "nothing written"


# ----------------------------------------------------------------------
# 2. Added fields keep a value already there; 3. computed defaults
# ----------------------------------------------------------------------
def _next_uid(self: Any) -> str:
    return uuid.uuid4().hex


def test_autogenerate_keeps_present_values_and_asks_for_computed_ones(fresh: Any) -> None:
    _, ws = fresh
    module(
        ws,
        "0001_first.py",
        """
        "First."
        model = "snap.Item"
        from_version = "0"
        to_version = "1"
        operations = []
        schema = {"name": "Str"}
    """,
    )
    load(ws)

    class Item(VersionedModel):
        __model__ = "snap.Item"
        __version__ = 2
        name = Str()
        note = Str("-")
        uid = Str(factory=lambda: uuid.uuid4().hex)
        seq = Int()
        lucky = Int()

        def _default_seq(self) -> int:
            return 1

        def _default_lucky(self) -> int:
            import random

            return random.randint(0, 10**9)

    done = revision(ws, "more", "snap.Item", autogenerate=True)
    text = done.path.read_text()
    assert "ops.set_default_where_missing('note', '-')," in text
    assert "add_field" not in text
    assert sorted(done.computed) == ["lucky", "seq", "uid"]
    for name in ("uid", "seq", "lucky"):
        assert f"# {name!r}: its default is computed for each object" in text
        assert f"set_default_where_missing({name!r}" not in text
    compile(text, str(done.path), "exec")
    load(ws)
    problems = ws.registry.problems()
    assert any("upgrade still raises NotImplementedError" in str(p) for p in problems), problems


# ----------------------------------------------------------------------
# 4. What snapshots see
# ----------------------------------------------------------------------
class Meta(JSONModel):
    __model__ = "snap.Meta"
    lang = Str()
    level = Int()


class MetaRenamed(JSONModel):
    __model__ = "snap.Meta"
    language = Str()
    level = Int()


class Owner(VersionedModel):
    __model__ = "snap.Owner"


def test_snapshots_record_what_decides_storage() -> None:
    assert describe_member(Typed(Meta)) == {"__model__": "snap.Meta", "lang": "Str", "level": "Int"}
    assert describe_member(Instance(Meta)) == describe_member(Typed(Meta))
    assert describe_member(Typed(Owner)) == "Ref(snap.Owner)" == describe_member(Instance(Owner))
    assert describe_member(Range(0, 100)) == "Range(0, 100)"
    assert describe_member(Dict(Str(), Int())) == "Dict(Str, Int)"
    assert describe_member(Enum("a", "b")) == "Enum('a', 'b')"


@pytest.mark.parametrize(
    "before, after, changed",
    [
        (Typed(Meta), Typed(MetaRenamed), ["meta.language", "meta.lang"]),
        (Range(0, 100), Range(0, 10), ["meta"]),
        (Dict(Str(), Int()), Dict(Str(), Str()), ["meta"]),
        (Enum("a", "b"), Enum("a"), ["meta"]),
        (Typed(Meta), Instance(Meta), []),
        (Enum("a", "b"), Enum("a", "b", "c"), []),
        (Range(0, 10), Range(-5, 100), []),
        (Range(0, 10), Range(0), []),
    ],
)
def test_check_sees_real_changes_and_only_them(before: Any, after: Any, changed: list[str]) -> None:
    diff = compare({"meta": describe_member(before)}, {"meta": describe_member(after)})
    found = sorted([*diff.added, *diff.removed, *diff.changed])
    assert found == sorted(changed), diff.describe()


@pytest.mark.parametrize(
    ("before", "after", "same"),
    [
        (FloatRange(0.0, 1.0), Float(), True),
        (Range(0, 10), Int(), True),
        (List(Str()), List(), True),
        (Dict(Str(), Int()), Dict(), True),
        (Int(), Typed(int), True),
        (Str(), Typed(str), True),
        (Coerced(int), Int(), True),
        (Int(), Coerced(int), True),
        (Coerced(float), Float(), True),
        (Typed(int), Int(), False),  # None no longer accepted
        (List(), List(Str()), False),
        (Float(), FloatRange(0.0, 1.0), False),
        (Coerced(int), Float(), False),
    ],
)
def test_storage_identical_changes_are_not_changes(before: Any, after: Any, same: bool) -> None:
    """A member that accepts every value it did, stored the same way, is no change."""
    diff = compare({"f": describe_member(before)}, {"f": describe_member(after)})
    assert (not diff) is same, diff.describe()


def test_older_snapshots_with_bare_names_are_not_changes() -> None:
    assert same_storage("Typed(snap.Owner)", "Ref(snap.Owner)")
    assert same_storage("Instance(datetime)", "Instance(datetime)")
    assert same_storage("Typed(datetime)", "Instance(datetime)")
    assert same_storage("Set(Int)", "List(Int)")
    assert same_storage("Dict", "Dict(Str, Int)")
    assert same_storage("Typed(snap.Meta)", {"__model__": "snap.Meta", "lang": "Str"})
    assert not same_storage("Range(0, 10)", "Range(0, 5)")
    assert not same_storage("Enum(<a object>)", "Enum(<b object>)"), "items it cannot read"


def test_autogenerate_writes_nested_operations(fresh: Any) -> None:
    _, ws = fresh
    old = snapshot(model("snap.Nest", 1, meta=Typed(Meta)))
    module(
        ws,
        "0001_first.py",
        f"""
        "First."
        model = "snap.Nest"
        from_version = "0"
        to_version = "1"
        operations = []
        schema = {old!r}
    """,
    )
    load(ws)

    class Meta2(JSONModel):
        __model__ = "snap.Meta"
        lang = Str()
        level = Int()
        tags = Str("none")

    model("snap.Nest", 2, meta=Typed(Meta2))
    done = revision(ws, "tags", "snap.Nest", autogenerate=True)
    assert "ops.set_default_where_missing('meta.tags', 'none')," in done.path.read_text()


# ----------------------------------------------------------------------
# 5. A model moved away from its snapshots
# ----------------------------------------------------------------------
def test_a_moved_model_finds_its_snapshot_under_its_former_name(fresh: Any) -> None:
    _, ws = fresh
    module(
        ws,
        "0001_first.py",
        """
        "First."
        model = "old.place.Cust"
        from_version = "0"
        to_version = "1"
        operations = []
        schema = {"name": "Str"}
    """,
    )
    load(ws)
    model("new.place.Cust", 1, name=Str(), email=Str())
    (problem,) = [str(p) for p in ws.registry.problems() if "unknown model" in str(p)]
    assert "unknown model 'old.place.Cust'" in problem
    assert "ops.rename_model('old.place.Cust', 'new.place.Cust')" in problem
    model("new.place.Cust", 2, name=Str(), email=Str())
    done = revision(ws, "moved", "Cust", autogenerate=True)
    text = done.path.read_text()
    assert done.moved_from == "old.place.Cust" and (done.from_version, done.to_version) == (
        "1",
        "2",
    )
    assert "ops.rename_model('old.place.Cust', 'new.place.Cust')," in text
    assert "ops.set_default_where_missing('email', '')," in text
    load(ws)
    assert ws.registry.problems() == []


# ----------------------------------------------------------------------
# 6. Fixtures and helpers leave nothing behind; 7. their frames are hidden
# ----------------------------------------------------------------------
def test_the_migrate_db_fixture_puts_the_manager_back(tmp_path: Path) -> None:
    (tmp_path / "test_fixture.py").write_text(
        textwrap.dedent("""
        from atomdb.nosql import NoSQLModelManager

        APP = object()

        def test_first(migrate_db):
            assert NoSQLModelManager.instance().database is migrate_db

        def test_then():
            assert NoSQLModelManager.instance().get_member("database").get_slot(
                NoSQLModelManager.instance()) is None
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_failing_step_shows_the_step_not_the_helpers(tmp_path: Path) -> None:
    (tmp_path / "test_step.py").write_text(
        textwrap.dedent("""
        import asyncio
        from atomdb_migrate import VersionedModel, register_step
        from atomdb_migrate.testing import assert_upgrades

        class M(VersionedModel):
            __model__ = "tb.M"
            __version__ = 1

        def my_broken_step(doc):
            raise ValueError("boom in the step")

        register_step(M, 0, 1, my_broken_step)

        def test_it():
            asyncio.run(assert_upgrades(M, {"a": 1}))
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 1 and "boom in the step" in out and "my_broken_step" in out
    for helper in ("def run_chain", "has_id = ", "def apply_chain", "async def _migrate"):
        assert helper not in out, helper
    assert NoSQLModelManager.instance() is not None
