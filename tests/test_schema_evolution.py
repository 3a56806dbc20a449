"""Models evolving over releases: autogenerate never loses a value, check sees every change.

Hypothesis draws a model and, for each of two releases, a few changes to
it: fields added, removed, renamed (a hand-written ``rename_field``), an int
becoming a float, a field added inside an embedded model, and changes that
store and validate alike (an enum gaining an item, a range widening,
``Typed`` becoming ``Instance``). Documents are saved by atom-db with the
old model. Then, as an author would:

1. ``check`` with the new fields at the old version must report exactly the
   real changes, and nothing for the storage-identical ones;
2. ``revision --autogenerate`` writes the step (renames confirmed by hand);
3. ``upgrade`` runs it on the stored documents;
4. every document restores into the new model with no field failing, and
   no stored value is lost without a step that says so.

"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from atom.api import Bool, Dict, Enum, Float, Instance, Int, List, Range, Str, Typed
from atomdb.base import JSONModel
from atomdb.nosql import NoSQLModelSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, load_migrations
from atomdb_migrate.commands.command import drift, revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.engine.runner import Runner
from atomdb_migrate.model.versioned import VersionedModelSerializer, restore_check
from atomdb_migrate.schema.snapshots import snapshot

META = "evo.Meta"


class MetaA(JSONModel):
    __model__ = META
    x = Int()
    y = Str()


class MetaB(JSONModel):
    """MetaA with one more field: the embedded model's next release."""

    __model__ = META
    x = Int()
    y = Str()
    z = Int(7)


#: Member kinds: a factory of the member, and values for it.
KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "str": (Str, st.text(max_size=5)),
    "int": (Int, st.integers(-1000, 1000)),
    "float": (Float, st.floats(-1e6, 1e6, allow_nan=False)),
    "bool": (Bool, st.booleans()),
    "list": (lambda: List(Int()), st.lists(st.integers(-5, 5), max_size=3)),
    "dict": (
        lambda: Dict(Str(), Int()),
        st.dictionaries(st.text("abc", max_size=3), st.integers(-5, 5), max_size=2),
    ),
    "range": (lambda: Range(0, 10), st.integers(0, 10)),
    "enum": (lambda: Enum("a", "b"), st.sampled_from(["a", "b"])),
}

#: What each kind becomes in a storage-identical change.
WIDER = {"range": lambda: Range(-5, 20), "enum": lambda: Enum("a", "b", "c")}


def meta_member(kind: str) -> Any:
    return {"typed-a": lambda: Typed(MetaA), "instance-a": lambda: Instance(MetaA)}.get(
        kind, lambda: Typed(MetaB)
    )()


@st.composite
def evolutions(
    draw: st.DrawFn,
) -> tuple[dict[str, str], list[tuple[list[tuple[str, ...]], dict[str, str]]]]:
    """The first release's fields (name: kind), then each later release's changes and
    the fields they leave."""
    names = iter(f"f{i}" for i in range(100))
    count = draw(st.integers(2, 4))
    first = {next(names): draw(st.sampled_from(sorted(KINDS))) for _ in range(count)}
    if draw(st.booleans()):
        first["meta"] = "typed-a"
    current = dict(first)
    releases = []
    for _ in range(2):
        changes: list[tuple[str, ...]] = []
        for _ in range(draw(st.integers(1, 3))):
            plain = [n for n, k in current.items() if n != "meta"]
            options = ["add"]
            if len(plain) > 1:
                options += ["remove", "rename"]
            if any(current[n] == "int" for n in plain):
                options.append("int-to-float")
            if any(current[n] in WIDER for n in plain):
                options.append("widen")
            if current.get("meta") in ("typed-a", "instance-a"):
                options += ["retype-meta", "meta-add"]
            what = draw(st.sampled_from(options))
            if what == "add":
                name = next(names)
                current[name] = draw(st.sampled_from(sorted(KINDS)))
                changes.append(("add", name))
            elif what == "remove":
                name = draw(st.sampled_from(plain))
                del current[name]
                changes.append(("remove", name))
            elif what == "rename":
                old, new = draw(st.sampled_from(plain)), next(names)
                current[new] = current.pop(old)
                changes.append(("rename", old, new))
            elif what == "int-to-float":
                name = draw(st.sampled_from([n for n in plain if current[n] == "int"]))
                current[name] = "float"
                changes.append(("int-to-float", name))
            elif what == "widen":
                name = draw(st.sampled_from([n for n in plain if current[n] in WIDER]))
                current[name] = f"{current[name]}-wide"
                changes.append(("widen", name))
            elif what == "retype-meta":
                current["meta"] = "instance-a" if current["meta"] == "typed-a" else "typed-a"
                changes.append(("retype-meta",))
            else:
                current["meta"] = "typed-b"
                changes.append(("meta-add",))
        releases.append((changes, dict(current)))
    return first, releases


def stored_as(fields: dict[str, str]) -> dict[str, str]:
    """Fields by what decides their storage: a widening or Typed to Instance is none."""
    alike = {"range-wide": "range", "enum-wide": "enum", "instance-a": "typed-a"}
    return {name: alike.get(kind, kind) for name, kind in fields.items()}


def member(kind: str) -> Any:
    if kind.endswith("-wide"):
        return WIDER[kind.removesuffix("-wide")]()
    if kind in KINDS:
        return KINDS[kind][0]()
    return meta_member(kind)


def make_model(name: str, version: int, fields: dict[str, str]) -> type[VersionedModel]:
    attrs: dict[str, Any] = {"__model__": name, "__version__": version}
    attrs.update({field: member(kind) for field, kind in fields.items()})
    return type(f"Evo{version}", (VersionedModel,), attrs)  # type: ignore[return-value]


def use_meta(cls: type) -> None:
    """Make the stored embedded model's name restore as `cls` (its current release)."""
    for serializer in (NoSQLModelSerializer.instance(), VersionedModelSerializer.instance()):
        serializer.registry[META] = cls


def value_for(kind: str, data: st.DataObject) -> Any:
    base = kind.removesuffix("-wide")
    if base in KINDS:
        return data.draw(KINDS[base][1])
    cls = MetaB if kind == "typed-b" else MetaA
    return cls(x=data.draw(st.integers(-9, 9)), y=data.draw(st.text(max_size=3)))


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrate_db: Any) -> Any:
    registry = MigrationRegistry()
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    return registry, migrate_db


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=evolutions(), data=st.data())
async def test_releases_lose_nothing_and_check_sees_every_change(
    fresh: Any, tmp_path: Path, plan: Any, data: st.DataObject
) -> None:
    registry, database = fresh
    fields, releases = plan
    name = f"evo.M{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    ws = Workspace(Config(migrations=folder), registry=registry)
    ws._loaded = True
    use_meta(MetaA)
    model = make_model(name, 1, fields)
    (folder / "0001_first.py").write_text(
        f'"""First."""\nmodel = {name!r}\nfrom_version = "0"\nto_version = "1"\n'
        f"operations = []\nschema = {snapshot(model)!r}\n"
    )
    load_migrations(folder, registry=registry)
    values: dict[Any, dict[str, Any]] = {}
    for _ in range(3):
        obj = model(**{f: value_for(k, data) for f, k in fields.items()})
        await obj.save()
        values[obj._id] = {f: getattr(obj, f) for f in fields}

    for version, (changes, new_fields) in enumerate(releases, start=2):
        # Where each field of the new release comes from: a field of the old
        # one (renamed, perhaps), or nowhere (added).
        origin: dict[str, str | None] = {name: name for name in fields}
        for change in changes:
            if change[0] == "add":
                origin[change[1]] = None
            elif change[0] == "remove":
                origin.pop(change[1])
            elif change[0] == "rename":
                origin[change[2]] = origin.pop(change[1])
        renamed = {new: old for new, old in origin.items() if old is not None and old != new}
        real = stored_as(fields) != stored_as(new_fields)

        # 1. The new fields at the old version: check sees exactly the real changes.
        make_model(name, version - 1, new_fields)
        problems = drift(ws)
        assert bool(problems) == real, (changes, problems)

        # 2. The next release: autogenerate, renames confirmed by hand.
        new_model = make_model(name, version, new_fields)
        if new_fields.get("meta") == "typed-b":
            use_meta(MetaB)
        done = revision(ws, f"release {version}", new_model.__model__, autogenerate=True)
        text = done.path.read_text()
        for new, old in renamed.items():
            text = "\n".join(
                line
                for line in text.splitlines()
                if not line.strip().startswith(
                    (f"ops.set_default_where_missing({new!r}", f"ops.remove_field({old!r})")
                )
            ).replace(
                "operations = [\n", f"operations = [\n    ops.rename_field({old!r}, {new!r}),\n"
            )
        done.path.write_text(text)
        registry.graphs.clear()
        load_migrations(folder, registry=registry)
        assert drift(ws) == [], "the new snapshot matches the new model"

        # What each document must hold now: its values, as the changes say.
        fresh_object = new_model()
        for _id, old_values in values.items():
            kept: dict[str, Any] = {}
            for new, old in origin.items():
                if old is None:
                    kept[new] = getattr(fresh_object, new)
                elif new_fields[new] == "float" and fields[old] == "int":
                    kept[new] = float(old_values[old])
                else:
                    kept[new] = old_values[old]
            values[_id] = kept

        # 3. Upgrade the stored documents; 4. restore each, losing nothing.
        await Runner(database).upgrade(new_model)
        new_model.objects.cache.clear()
        for _id, kept in values.items():
            stored = await new_model.objects.find_one({"_id": _id})
            obj = new_model.__new__(new_model)
            with restore_check() as failed:
                await obj.__restorestate__(stored)
            assert not failed, (changes, failed, text)
            assert set(kept) == set(new_fields)
            for field_name, value in kept.items():
                got = getattr(obj, field_name)
                if isinstance(value, JSONModel):
                    assert (got.x, got.y) == (value.x, value.y), field_name
                    if new_fields["meta"] == "typed-b":
                        assert got.z == 7, "the embedded model's new field, by default"
                else:
                    assert got == value and type(got) is type(value), (field_name, changes, text)
        fields = new_fields
