"""Schema snapshots: ``revision --autogenerate`` and ``check``, as a user runs them.

Each command runs as a subprocess, as the model module is edited between
them (a process imports it once).

"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from atom.api import (
    Bytes,
    Coerced,
    Dict,
    Enum,
    Instance,
    Int,
    List,
    Range,
    Str,
    Tuple,
    Typed,
)
from atomdb.base import JSONModel

from atomdb_migrate import MigrationRegistry, VersionedModel, load_migrations, ops
from atomdb_migrate.autogenerate.infer import infer_operations
from atomdb_migrate.commands.command import drift, revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.schema.snapshots import compare, describe_member, snapshot

from .project import ROOT

PYPROJECT = """
[tool.atomdb-migrate]
models = ["pages"]
migrations = "migrations"
"""

V1 = """
from atom.api import Str
from atomdb_migrate import VersionedModel

class Page(VersionedModel):
    __version__ = 1
    title = Str()
    views = Str()
    status = Str()
"""

# Fields changed, version not bumped yet: status renamed to state, views
# now an int, tags and published added.
V1_EDITED = """
from datetime import datetime
from atom.api import Instance, Int, List, Str
from atomdb_migrate import VersionedModel

class Page(VersionedModel):
    __version__ = 1
    title = Str()
    views = Int()
    state = Str()
    tags = List(Str())
    published = Instance(datetime)
"""


def cli(path: Path, *args: str) -> tuple[int, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [exe, *args], cwd=path, env=env, text=True, capture_output=True, timeout=120
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "pages.py").write_text(V1)
    return tmp_path


def test_autogenerate_then_check(app: Path, registry: MigrationRegistry) -> None:
    code, out = cli(app, "revision", "--model", "Page", "-m", "first version")
    assert code == 0, out
    # No step yet: the first goes from version 0 (documents saved before the
    # model was versioned) to its __version__, with no version to raise.
    assert "(pages.Page 0 -> 1)" in out and "__version__" not in out, out
    first = app / "migrations" / "0001_first_version.py"
    text = first.read_text()
    assert 'from_version = "0"' in text and 'to_version = "1"' in text
    assert "'status': 'Str'" in text  # a plain revision records the schema too
    first.write_text(text)
    code, out = cli(app, "check")
    assert code == 1 and "upgrade still raises NotImplementedError" in out, out
    assert "downgrade still raises NotImplementedError" in out, "the template is not a step"
    text = (
        text.split("def upgrade")[0]
        + "def upgrade(doc):\n    pass\n\nschema"
        + (text.split("\nschema", 1)[1])
    )
    first.write_text(text)
    assert cli(app, "check") == (0, "ok\n")

    # The model changes without a migration: check fails, naming the changes.
    (app / "pages.py").write_text(V1_EDITED)
    code, out = cli(app, "check")
    assert code == 1, out
    assert "fields differ from the schema of version 1" in out
    for change in ("added state (Str)", "removed status (Str)", "views changed from Str to Int"):
        assert change in out

    code, out = cli(app, "revision", "--autogenerate", "--model", "Page", "-m", "state and tags")
    assert code == 0, out
    assert "(pages.Page 1 -> 2)" in out
    # The exact line to change, in the model's file relative to the project.
    line = 1 + (app / "pages.py").read_text().splitlines().index("    __version__ = 1")
    assert f"then set __version__ = 2 on pages.Page (pages.py:{line}, now `__version__ = 1`)" in out
    written = app / "migrations" / "0002_state_and_tags.py"
    source = written.read_text()
    assert "RENAME? 'status' was removed and 'state' added, both Str" in source
    assert "its default is computed" not in source  # Instance(datetime) defaults to None

    (step,) = [
        s for s in load_migrations(app / "migrations", registry=registry) if s.to_version == "2"
    ]
    assert list(step.operations.operations) == [
        ops.set_default_where_missing("published", None),
        ops.set_default_where_missing("state", ""),
        ops.set_default_where_missing("tags", []),
        ops.remove_field("status"),
        ops.convert("views", "int"),
    ]
    assert step.schema == {
        "published": "Instance(datetime)",
        "state": "Str",
        "tags": "List(Str)",
        "title": "Str",
        "views": "Int",
    }
    # Still version 1 in the code: the chain check says the model is behind
    # its steps, and the drift check waits for the bump.
    code, out = cli(app, "check")
    assert code == 1 and "fields differ" not in out, out
    (app / "pages.py").write_text(V1_EDITED.replace("__version__ = 1", "__version__ = 2"))
    # The delete of status and the conversion of views wait for the author.
    code, out = cli(app, "check")
    assert code == 1, out
    assert ": # DELETES DATA: remove_field('status') deletes every stored 'status'" in out
    assert ": # LOSSY: 'views' fails on text that is no integer" in out
    confirmed = [
        line
        for line in source.splitlines()
        if not line.lstrip().startswith(("# DELETES DATA:", "# LOSSY:"))
    ]
    written.write_text("\n".join(confirmed) + "\n")
    assert cli(app, "check") == (0, "ok\n")


def test_autogenerate_without_an_earlier_snapshot(app: Path) -> None:
    (app / "migrations" / "0001_by_hand.py").write_text(
        textwrap.dedent(
            """
            model = "pages.Page"
            from_version = "0"
            to_version = "1"

            def upgrade(doc):
                doc.setdefault("views", "0")
            """
        )
    )
    code, out = cli(app, "revision", "--autogenerate", "--model", "Page", "-m", "baseline")
    assert code == 0, out
    assert "no earlier step records a schema" in out
    text = (app / "migrations" / "0002_baseline.py").read_text()
    assert "nothing to compare with" in text and "'status': 'Str'" in text


def test_a_model_ahead_of_its_steps_gets_the_missing_step(app: Path) -> None:
    code, out = cli(app, "revision", "--model", "Page", "-m", "one")
    assert code == 0 and "(pages.Page 0 -> 1)" in out, out  # no step yet: from 0
    (app / "pages.py").write_text(V1_EDITED.replace("__version__ = 1", "__version__ = 2"))
    code, out = cli(app, "revision", "--autogenerate", "--model", "Page", "-m", "two")
    assert code == 0, out
    assert "(pages.Page 1 -> 2)" in out and "then set" not in out


def test_describe_member() -> None:
    from .clidemo import Customer

    assert describe_member(Str()) == "Str"
    assert describe_member(List(Int())) == "List(Int)"
    assert describe_member(Instance(Customer)) == f"Ref({Customer.__model__})"
    assert snapshot(Customer) == {k: "Str" for k in ("first", "last", "tier")} | {
        "applied": "Int",
        "seq": "Int",
    }


def test_infer_marks_renames_and_unconvertible_changes() -> None:
    from .clidemo import Customer

    diff = compare({"a": "Str", "b": "List(Int)"}, {"c": "Str", "b": "Dict(Str, Int)"})
    lines = infer_operations(Customer, diff).lines
    assert "ops.remove_field('a')," in lines
    assert any(line.startswith("# RENAME? 'a' was removed and 'c' added") for line in lines)
    assert any(
        "'b' changed from List(Int) to Dict(Str, Int): no operation converts it" in x for x in lines
    )


class Surrogate(VersionedModel):
    __model__ = "autogen.Surrogate"
    __version__ = 2
    sur = Str("\ud800")  # a lone surrogate: Python holds it, BSON cannot


def test_a_default_bson_cannot_hold_asks_for_one() -> None:
    """A lone surrogate is a str to Python and no UTF-8 at all: the generated step
    asks for a value instead of writing one that fails at `upgrade`, and a step
    written with it by hand is refused when it loads."""
    lines = infer_operations(Surrogate, compare({}, {"sur": "Str"})).lines
    code = [line.partition("#")[0] for line in lines]
    assert "ops.set_default_where_missing('sur', None),  " in code, lines
    assert any("sur" in line and "set one" in line for line in lines), lines
    for bad in ("\ud800", {"k": "\udfff"}, ["ok", "\ud800x"]):
        with pytest.raises(ValueError, match="lone surrogate"):
            ops.set_default_where_missing("sur", bad)
    with pytest.raises(ValueError, match="cannot be stored"):
        ops.add_field("meta", {"\ud800": 1})


def test_a_reference_recorded_under_a_former_name_is_no_change() -> None:
    """A snapshot taken before the referenced model moved names it as it was."""
    registry = MigrationRegistry()
    registry.aliases["old.Author"] = "new.Author"
    old = {"author": "Ref(old.Author)", "all": "List(Ref(old.Author))", "n": "Int"}
    new = {"author": "Ref(new.Author)", "all": "List(Ref(new.Author))", "n": "Int"}
    assert compare(old, new, resolve=registry.resolve).describe() == ""
    assert not compare(old, new, resolve=registry.resolve)
    assert compare(old, new), "without the registry, a different model"
    other = {**new, "author": "Ref(other.Author)"}
    assert compare(old, other, resolve=registry.resolve)


def test_a_lossy_conversion_is_said_beside_its_operation() -> None:
    from .clidemo import Customer

    diff = compare(
        {"price": "Float", "count": "Int", "flag": "Int", "code": "Str", "n": "Int"},
        {"price": "Int", "count": "Float", "flag": "Bool", "code": "Int", "n": "Str"},
    )
    lines = infer_operations(Customer, diff).lines
    for name, what in (
        ("price", "loses fractions"),
        ("count", "rounds integers beyond 2**53"),
        ("flag", "keeps only zero or not"),
        ("code", "fails on text that is no integer"),
    ):
        at = lines.index(
            f"ops.convert({name!r}, {diff.changed[name][1].lower()!r}),  # was "
            f"{diff.changed[name][0]}"
        )
        assert lines[at + 1].startswith(f"# LOSSY: {name!r} {what}"), lines
    assert not any(line.startswith("# LOSSY: 'n'") for line in lines), "Int to Str loses nothing"


# ----------------------------------------------------------------------
# Issue 22, items 3 and 4: a type change no operation makes, a field moved
# ----------------------------------------------------------------------
@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace on a fresh registry and an empty migrations directory."""
    registry = MigrationRegistry()
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    (tmp_path / "migrations").mkdir()
    workspace = Workspace(Config(migrations=tmp_path / "migrations"), registry=registry)
    workspace._loaded = True
    return workspace


def versioned(name: str, version: int, **members: Any) -> type[VersionedModel]:
    attrs = {"__model__": name, "__version__": version, **members}
    return type(name.rpartition(".")[2], (VersionedModel,), attrs)  # type: ignore[return-value]


def first_step(ws: Workspace, cls: type[VersionedModel]) -> None:
    """The step to version 1, recording the model's fields as they are."""
    folder = ws.config.migrations
    assert folder is not None
    (folder / "0001_first.py").write_text(
        f'"First."\nmodel = {cls.__model__!r}\nfrom_version = "0"\nto_version = "1"\n'
        f"operations = []\nschema = {snapshot(cls)!r}\n"
    )
    reload(ws)


def reload(ws: Workspace) -> list[str]:
    """Load the steps again; what `check` finds without a database."""
    ws.registry.graphs.clear()
    load_migrations(ws.config.migrations, registry=ws.registry)
    return [str(p) for p in ws.registry.problems()] + drift(ws)


class Scores(JSONModel):
    __model__ = "autogen.Scores"
    level = Int()


class Grades(JSONModel):
    __model__ = "autogen.Grades"
    level = Int()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (List(Int()), List(Str())),
        (Dict(Str(), Int()), Dict(Str(), Str())),
        (Dict(Str(), Int()), Dict(Int(), Int())),
        (Tuple(Int()), Tuple(Str())),
        (Instance(date), Instance(bytes)),
        (Typed(Decimal), Typed(str)),
        (Coerced(list), Coerced(tuple)),
        (Typed(Scores), Typed(Grades)),
        (List(Typed(Scores)), List(Typed(Grades))),
        (Bytes(), Str()),
        (Enum("a", "b"), Enum("a")),
        (Range(0, 100), Range(0, 10)),
    ],
)
def test_a_change_no_operation_makes_asks_for_upgrade_and_check_fails(
    ws: Workspace, before: Any, after: Any
) -> None:
    """`scores = List(Int())` becoming `List(Str())` was a comment, and `check`
    passed: now the step's upgrade() raises until written, and check fails."""
    first_step(ws, versioned("autogen.Box", 1, scores=before))
    versioned("autogen.Box", 2, scores=after)
    done = revision(ws, "retype", "autogen.Box", autogenerate=True)
    text = done.path.read_text()
    assert "def upgrade(doc):" in text and "raise NotImplementedError" in text, text
    assert "ops.convert" not in text
    assert any("write them in upgrade()" in hint and "'scores'" in hint for hint in done.hints)
    problems = reload(ws)
    assert any("upgrade still raises NotImplementedError" in p for p in problems), problems


@pytest.mark.parametrize("meta_is_new", [False, True])
def test_a_field_moved_into_an_embedded_model_is_offered_as_a_move(
    ws: Workspace, meta_is_new: bool
) -> None:
    """`status = Str()` moved to `meta.status` was a blank default and a delete,
    silently: now a MOVE? comment offers the move, the delete says so in a
    comment that check refuses, and revision returns both as hints."""

    class Meta(JSONModel):
        __model__ = "autogen.Meta"
        lang = Str()

    class MetaWithStatus(JSONModel):
        __model__ = "autogen.Meta"
        lang = Str()
        status = Str()

    old = {"status": Str()} | ({} if meta_is_new else {"meta": Typed(Meta)})
    first_step(ws, versioned("autogen.Doc", 1, **old))
    versioned("autogen.Doc", 2, meta=Typed(MetaWithStatus))
    done = revision(ws, "move status", "autogen.Doc", autogenerate=True)
    text = done.path.read_text()
    move = "ops.move_field('status', 'meta.status')"
    assert "# MOVE? 'status' was removed and 'meta.status' added, both Str" in text, text
    assert move in text
    assert "ops.remove_field('status'),\n    # DELETES DATA: remove_field('status')" in text
    assert any(h.startswith("MOVE? 'status'") for h in done.hints), done.hints
    assert any(h.startswith("DELETES DATA: remove_field('status')") for h in done.hints)
    problems = reload(ws)
    assert any("DELETES DATA: remove_field('status')" in p for p in problems), problems

    # The author takes the move: the delete and its comment go, and check passes.
    lines = [
        line
        for line in text.splitlines()
        if "remove_field('status')" not in line and "'meta.status', ''" not in line
    ]
    written = "\n".join(lines).replace("operations = [", f"operations = [\n    {move},")
    done.path.write_text(written)
    versioned("autogen.Doc", 2, meta=Typed(MetaWithStatus))
    assert reload(ws) == []


def test_a_field_renamed_in_an_embedded_model_and_one_moved_out(ws: Workspace) -> None:
    class Meta(JSONModel):
        __model__ = "autogen.Meta2"
        lang = Str()
        note = Str()

    class Meta2(JSONModel):
        __model__ = "autogen.Meta2"
        language = Str()

    first_step(ws, versioned("autogen.Out", 1, meta=Typed(Meta)))
    versioned("autogen.Out", 2, meta=Typed(Meta2), note=Str())
    text = revision(ws, "out", "autogen.Out", autogenerate=True).path.read_text()
    assert "ops.rename_field('meta.lang', 'language')" in text, text
    assert "ops.move_field('meta.note', 'note')" in text, text


def test_a_removed_field_never_goes_silently(ws: Workspace) -> None:
    """Every remove_field autogenerate writes is followed by a comment check refuses,
    whether or not a field of the same kind was added."""
    first_step(ws, versioned("autogen.Rm", 1, a=Str(), b=Int(), c=List(Str())))
    versioned("autogen.Rm", 2, b=Int(), d=List(Str()))
    text = revision(ws, "rm", "autogen.Rm", autogenerate=True).path.read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "ops.remove_field(" in line:
            assert lines[i + 1].strip().startswith("# DELETES DATA:"), lines[i : i + 2]
    assert "RENAME? 'c' was removed and 'd' added" in text
    problems = reload(ws)
    assert sum("DELETES DATA" in p for p in problems) == 2, problems


def test_revision_prints_every_hint(app: Path) -> None:
    """The command prints each hint: a move, a rename, a delete, a lossy conversion,
    a change to write in upgrade(), a computed default."""
    (app / "migrations" / "0001_first.py").write_text(
        '"First."\nmodel = "pages.Page"\nfrom_version = "0"\nto_version = "1"\n'
        'operations = []\nschema = {"title": "Str", "views": "Str", "status": "Str", '
        '"scores": "List(Int)", "meta": {"__model__": "pages.Meta", "lang": "Str"}}\n'
    )
    (app / "pages.py").write_text(
        textwrap.dedent(
            """
            import uuid
            from atom.api import Int, List, Str, Typed
            from atomdb.base import JSONModel
            from atomdb_migrate import VersionedModel

            class Meta(JSONModel):
                __model__ = "pages.Meta"
                lang = Str()
                status = Str()

            class Page(VersionedModel):
                __version__ = 1
                heading = Str()
                views = Int()
                scores = List(Str())
                meta = Typed(Meta)
                uid = Str(factory=lambda: uuid.uuid4().hex)
            """
        )
    )
    code, out = cli(app, "revision", "--autogenerate", "--model", "Page", "-m", "all")
    assert code == 0, out
    for hint in (
        "  MOVE? 'status' was removed and 'meta.status' added, both Str",
        "  RENAME? 'title' was removed and 'heading' added, both Str",
        "  DELETES DATA: remove_field('status')",
        "  DELETES DATA: remove_field('title')",
        "  LOSSY: 'views' fails on text that is no integer",
        "  no operation makes these; write them in upgrade(): 'scores' changed from "
        "List(Int) to List(Str)",
        "  uid: computed defaults; write upgrade()",
    ):
        assert hint in out, (hint, out)


async def test_a_field_moved_out_of_an_embedded_model_removed_whole(ws: Workspace) -> None:
    """`meta` (holding `status`) removed, `status` added at the top: the MOVE? hint
    says where the move goes, and the step written as it says keeps the status."""

    class Meta(JSONModel):
        __model__ = "autogen.MetaOut"
        status = Str()

    first_step(ws, versioned("autogen.Flat", 1, meta=Typed(Meta)))
    flat = versioned("autogen.Flat", 2, status=Str())
    done = revision(ws, "flatten", "autogen.Flat", autogenerate=True)
    text = done.path.read_text()
    hint = (
        "# MOVE? 'meta.status' was removed and 'status' added, both Str: if 'status' is "
        "'meta.status' moved, write ops.move_field('meta.status', 'status') in place of the "
        "line that adds 'status', before ops.remove_field('meta')"
    )
    assert hint in text, text
    lines = [
        line
        for line in text.splitlines()
        if "set_default_where_missing('status'" not in line and "# DELETES DATA:" not in line
    ]
    at = next(i for i, line in enumerate(lines) if "ops.remove_field('meta')" in line)
    lines.insert(at, "    ops.move_field('meta.status', 'status'),")
    done.path.write_text("\n".join(lines) + "\n")
    assert reload(ws) == []
    stored = {"_id": 1, "__version__": "1", "meta": {"__model__": Meta.__model__, "status": "live"}}
    upgraded = await flat.upgrade_state(stored)
    assert upgraded["status"] == "live" and "meta" not in upgraded


def test_many_fields_of_one_kind_give_a_line_per_removed_field() -> None:
    """Forty Str fields renamed at once: a line per removed field, not 1,600."""
    from .clidemo import Customer

    diff = compare({f"old{i}": "Str" for i in range(40)}, {f"new{i}": "Str" for i in range(40)})
    inferred = infer_operations(Customer, diff)
    offers = [h for h in inferred.hints if h.startswith("RENAME?")]
    assert len(offers) == 40, len(offers)
    assert offers[0].startswith("RENAME? or MOVE? 'old0' was removed and 40 fields of its kind")
    assert sum(h.startswith("DELETES DATA:") for h in inferred.hints) == 40
