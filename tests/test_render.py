"""The one renderer: operations written out as Python source, and read back.

Every operation `atomdb_migrate.ops` makes is generated with arguments
hypothesis draws; written out by `autogenerate.render`, its line must
evaluate (with the imports the renderer collected) to an equal operation.
Inference over generated snapshot differences must give operation objects
whose lines read back the same way.

``RENDER_EXAMPLES`` sets the number of examples of each property (default 150).

"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
from atom.api import Int, Str, Value
from bson import Int64, ObjectId
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, load_migrations, ops
from atomdb_migrate.autogenerate.infer import infer_operations
from atomdb_migrate.autogenerate.render import (
    Call,
    Comment,
    Noted,
    expression,
    lines,
    written,
)
from atomdb_migrate.commands.command import revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.core.literals import Source
from atomdb_migrate.operations.base import Operation
from atomdb_migrate.schema.snapshots import compare

#: Examples of each property test; raise it with RENDER_EXAMPLES.
EXAMPLES = int(os.environ.get("RENDER_EXAMPLES", "150"))

names = st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True)
paths = st.lists(names, min_size=1, max_size=3).map(".".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=8),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(names, inner, max_size=3),
    ),
    max_leaves=6,
)


def _made(make: Any, *args: Any, **kwargs: Any) -> Operation:
    """An operation, or no example where the arguments are refused."""
    try:
        return make(*args, **kwargs)  # type: ignore[no-any-return]
    except ValueError:
        assume(False)
        raise


index_keys = st.lists(
    st.tuples(paths, st.sampled_from([1, -1, "hashed", "2dsphere"])),
    min_size=1,
    max_size=3,
    unique_by=lambda pair: pair[0],
)
index_options = st.fixed_dictionaries(
    {},
    optional={
        "unique": st.booleans(),
        "sparse": st.booleans(),
        "name": st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
        "partialFilterExpression": st.dictionaries(names, scalars, min_size=1, max_size=2),
        "collation": st.builds(
            lambda strength: {"locale": "fr", "strength": strength}, st.integers(1, 3)
        ),
    },
)
creates = st.builds(lambda k, o: _made(ops.create_index, k, **o), index_keys, index_options)

#: A strategy for each operation `ops` makes, by class: a new operation must
#: be added here (and is then written out by the plain form, or its own).
STRATEGIES: dict[str, st.SearchStrategy[Operation]] = {
    "AddField": st.builds(lambda p, v: _made(ops.add_field, p, v), paths, values),
    "SetDefaultWhereMissing": st.builds(
        lambda p, v: _made(ops.set_default_where_missing, p, v), paths, values
    ),
    "RemoveField": st.one_of(
        st.builds(lambda p: _made(ops.remove_field, p), paths),
        st.builds(lambda p, v: _made(ops.remove_field, p, v), paths, values),
    ),
    "CopyField": st.builds(lambda a, b: _made(ops.copy_field, a, b), paths, paths),
    "MoveField": st.builds(lambda a, b: _made(ops.move_field, a, b), paths, paths),
    "RenameField": st.builds(
        lambda a, b: _made(ops.rename_field, a, b), paths, st.one_of(names, paths)
    ),
    "Convert": st.builds(
        lambda p, to: _made(ops.convert, p, to),
        paths,
        st.sampled_from(["int", "float", "str", "bool", "datetime", int, float, str]),
    ),
    "RenameModel": st.builds(
        lambda a, b: _made(ops.rename_model, a, b), paths, paths.map(lambda p: f"app.{p}")
    ),
    "CreateIndex": creates,
    "DropIndex": st.one_of(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).map(ops.drop_index),
        creates.map(ops.DropIndex.of),
    ),
    "SetValidator": st.one_of(
        st.just(ops.set_validator(None)),
        st.builds(
            ops.set_validator,
            st.sampled_from(["moderate", "strict"]),
            st.sampled_from([None, "error", "warn"]),
        ),
    ),
}


def _concrete(cls: type[Operation]) -> set[str]:
    """The package's operation classes (not those other tests make up)."""
    ours = cls.__module__.startswith("atomdb_migrate.")
    found = {cls.__name__} if cls.__op_name__ and ours else set()
    for sub in cls.__subclasses__():
        found |= _concrete(sub)
    return found


def _read_back(line: str, source: Source) -> Any:
    """A line of an ``operations`` list evaluated, with the imports it needs."""
    scope: dict[str, Any] = {"ops": ops}
    exec("\n".join(source.imports), scope)
    return eval(line.removesuffix(","), scope)


def test_every_operation_has_a_strategy_here() -> None:
    assert _concrete(Operation) == set(STRATEGIES)


@settings(max_examples=EXAMPLES, deadline=None)
@given(op=st.one_of(*STRATEGIES.values()))
def test_an_operation_written_out_reads_back_equal(op: Operation) -> None:
    source = Source()
    line = written(op, source)
    assert line == f"{expression(op, Source())},"
    assert len(line.splitlines()) == 1
    again = _read_back(line, source)
    assert again == op, line
    assert written(again, Source()) == line


#: Descriptions for generated snapshots: convertible kinds, kinds no
#: operation converts, and embedded models.
DESCRIPTIONS = st.one_of(
    st.sampled_from(
        [
            "Str",
            "Int",
            "Float",
            "Bool",
            "Instance(datetime)",
            "List(Str)",
            "Dict(Str, Int)",
            "Range(0, 10)",
            "Enum('a', 'b')",
            "Bytes",
            "Str\nwith a line break",
        ]
    ),
    st.dictionaries(names, st.sampled_from(["Str", "Int"]), max_size=2).map(
        lambda d: {"__model__": "app.Meta", **d}
    ),
)
snapshots = st.dictionaries(
    st.one_of(names, st.sampled_from(["first", "seq", "when", "odd", "$bad", "a..b"])),
    DESCRIPTIONS,
    max_size=5,
)


HOUR = datetime.timezone(datetime.timedelta(hours=1))


class Defaults(VersionedModel):
    """Added fields' defaults: plain, computed, and one no literal writes."""

    __model__ = "render.Defaults"
    __version__ = 1

    first = Str("x")
    seq = Int(factory=lambda: 1)
    when = Value(datetime.datetime(2020, 1, 1))
    #: Stored as it is, but no literal writes an offset other than UTC.
    odd = Value([ObjectId("0123456789abcdef01234567"), datetime.datetime(2020, 1, 1, tzinfo=HOUR)])


@settings(max_examples=EXAMPLES, deadline=None)
@given(old=snapshots, new=snapshots)
def test_inferred_operations_are_objects_their_lines_read_back(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    inferred = infer_operations(Defaults, compare(old, new))
    source = Source()
    written_lines = lines(inferred.entries, source)
    assert written_lines == inferred.lines
    assert len(written_lines) == len(inferred.entries)
    compile("operations = [\n" + "\n".join(written_lines) + "\n]\n", "<step>", "exec")
    for entry, line in zip(inferred.entries, written_lines, strict=True):
        assert len(line.splitlines()) == 1
        if isinstance(entry, Comment):
            assert line.startswith("# ")
            continue
        op = entry.operation if isinstance(entry, Noted) else entry
        code = line.partition("  # ")[0] if isinstance(entry, Noted) else line
        if isinstance(op, Call):
            # An argument the operation refuses: written as given, refused on load.
            with pytest.raises(ValueError):
                _read_back(code, source)
        else:
            assert _read_back(code, source) == op, line
    assert all(len(hint.splitlines()) == 1 for hint in inferred.hints)


def test_a_field_name_an_operation_refuses_is_written_as_given() -> None:
    """A hand-written snapshot may name a field no operation takes: its line is
    written all the same, and loading the step says what is wrong."""
    inferred = infer_operations(Defaults, compare({"$bad": "Str"}, {}))
    assert inferred.entries[0] == Call("remove_field", ("$bad",))
    assert inferred.lines[0] == "ops.remove_field('$bad'),"


def test_renderers_are_registered_by_type() -> None:
    registered = set(expression.registry)
    assert {Operation, Call, ops.CreateIndex, ops.DropIndex} <= registered
    with pytest.raises(TypeError, match="no Python source"):
        expression(object(), Source())  # type: ignore[arg-type]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    registry = MigrationRegistry()
    registry.register_model(Defaults)
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_first.py").write_text(
        '"""First."""\nmodel = "render.Defaults"\nfrom_version = "0"\nto_version = "1"\n'
        "operations = []\nschema = {'first': 'Str'}\n"
    )
    load_migrations(folder, registry=registry)
    ws = Workspace(Config(migrations=folder), registry=registry)
    ws._loaded = True
    return ws


def test_a_default_no_literal_writes_imports_nothing(workspace: Workspace) -> None:
    """A default written as None (it holds a value no literal writes) leaves no
    import behind for the part of it that could be written."""
    done = revision(workspace, "defaults", "Defaults", autogenerate=True)
    text = done.path.read_text()
    assert "ops.set_default_where_missing('odd', None),  # its default" in text
    assert "cannot be written: set one" in text
    assert "import" not in text.split("model =")[0].replace("from atomdb_migrate import ops", "")
    compile(text, str(done.path), "exec")
