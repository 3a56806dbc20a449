"""Autogenerate over every pair of member kinds: it keeps the data, or `check` refuses.

For each kind a field may have before (old) and after (new), at the top level,
inside an embedded model, and as the items of a list, the test writes the
step ``revision --autogenerate`` writes, loads it, and asks ``check`` (without a
database). Then, one of:

- ``check`` refuses the step (an ``upgrade()`` still to write, a comment about
  data deleted or converted with loss still there): the author must act;
- ``check`` passes: then every value of the old kind, in a document atom-db
  saved with the old model (through BSON), goes through the step and
  restores into the new model without a restore error, holding the value
  (converted without loss where the step converts it).

A kind atom-db 0.8.5 cannot restore even into itself (``Tuple``: stored as a
list, refused on restore) is not checked as the new kind; the test says which
cases it left out and why.

``AUTOGEN_VALUES`` (default 3) sets how many random values of each kind are
tried besides the fixed ones (edge values: 2**53 + 1, 2.5, "", None).

"""

from __future__ import annotations

import os
import random
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from atom.api import (
    Bool,
    Bytes,
    Coerced,
    Dict,
    Enum,
    Float,
    FloatRange,
    Instance,
    Int,
    List,
    Member,
    Range,
    Str,
    Tuple,
    Typed,
)
from atomdb.base import JSONModel, Model
from atomdb.nosql import NoSQLModel
from bson import ObjectId

from atomdb_migrate import MigrationRegistry, VersionedModel, load_migrations
from atomdb_migrate.commands.command import check, revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.driver.mongo import ManagerState, drop_memory_database
from atomdb_migrate.model.versioned import add_to_serializer_registries, restore_check
from atomdb_migrate.operations.conversions import convert_value
from atomdb_migrate.testing import memory_database

#: Random values of each kind tried besides the fixed ones.
AUTOGEN_VALUES = int(os.environ.get("AUTOGEN_VALUES", "3"))


class Meta(JSONModel):
    __model__ = "kinds.Meta"
    __on_error__ = "raise"
    lang = Str()
    level = Int()


class Other(JSONModel):
    __model__ = "kinds.Other"
    __on_error__ = "raise"
    lang = Str()
    level = Int()


class Author(NoSQLModel):
    __model__ = "kinds.Author"
    name = Str()


#: The author every reference points at (saved in the test's database).
AUTHOR = Author(name="Ada")


@dataclass(frozen=True)
class Kind:
    """A kind of member: how to make one, and values it holds."""

    make: Callable[[], Member[Any, Any]]
    #: Values every run tries.
    fixed: tuple[Any, ...]
    #: A random value, from a random generator.
    draw: Callable[[random.Random], Any]
    #: Whether atom-db restores what it stored for this kind into it again.
    round_trips: bool = True


def _int(rng: random.Random) -> int:
    return rng.choice([rng.randint(-1000, 1000), rng.randint(-(2**63), 2**63 - 1)])


def _float(rng: random.Random) -> float:
    return rng.choice([rng.uniform(-1e6, 1e6), float(rng.randint(-100, 100)), rng.random()])


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(string.printable, k=rng.randint(0, 12)))


def _meta(rng: random.Random) -> Meta:
    return Meta(lang=_text(rng), level=rng.randint(-5, 5))


KINDS: dict[str, Kind] = {
    "Int": Kind(Int, (7, 0, -3, 2**53 + 1), _int),
    "Float": Kind(Float, (2.5, 7.0, -0.0, 1e300), _float),
    "Str": Kind(Str, ("seven", "7", "", "true", "2.5"), _text),
    "Bool": Kind(Bool, (True, False), lambda rng: rng.random() < 0.5),
    "Bytes": Kind(Bytes, (b"\x00ab", b""), lambda rng: rng.randbytes(rng.randint(0, 8))),
    "List(Int)": Kind(lambda: List(Int()), ([1, 2, 3], []), lambda rng: [_int(rng)]),
    "List(Str)": Kind(lambda: List(Str()), (["a", "b"],), lambda rng: [_text(rng)]),
    "Dict(Str, Int)": Kind(
        lambda: Dict(Str(), Int()), ({"a": 1}, {}), lambda rng: {"k": _int(rng)}
    ),
    "Dict(Str, Str)": Kind(
        lambda: Dict(Str(), Str()), ({"a": "1"},), lambda rng: {"k": _text(rng)}
    ),
    "Tuple(Int)": Kind(lambda: Tuple(Int()), ((1, 2),), lambda rng: (_int(rng),), False),
    "Instance(int)": Kind(
        lambda: Instance(int), (7, None), lambda rng: rng.choice([_int(rng), None])
    ),
    "Typed(str)": Kind(lambda: Typed(str), ("x", None), lambda rng: rng.choice([_text(rng), None])),
    "Instance(float)": Kind(lambda: Instance(float), (2.5, None), _float),
    "Instance(datetime)": Kind(
        lambda: Instance(datetime),
        (datetime(2020, 1, 2, 3, 4, 5, 6000), None),
        lambda rng: datetime(rng.randint(1970, 2100), 1, 1, tzinfo=None),
    ),
    "Coerced(int)": Kind(lambda: Coerced(int), (7,), _int),
    "Coerced(str)": Kind(lambda: Coerced(str), ("x",), _text),
    "Enum(str)": Kind(lambda: Enum("a", "b", "7"), ("b", "7"), lambda rng: rng.choice("ab7")),
    "Enum(int)": Kind(lambda: Enum(1, 2, 3), (2,), lambda rng: rng.choice([1, 2, 3])),
    "Range": Kind(lambda: Range(0, 100), (42, 0), lambda rng: rng.randint(0, 100)),
    "FloatRange": Kind(lambda: FloatRange(0.0, 1.0), (0.5,), lambda rng: rng.random()),
    "embedded": Kind(lambda: Typed(Meta), (Meta(lang="en", level=3), None), _meta),
    "Instance(embedded)": Kind(lambda: Instance(Meta), (Meta(lang="fr", level=1),), _meta),
    "embedded, another model": Kind(
        lambda: Typed(Other), (Other(lang="en", level=3),), lambda rng: Other(lang=_text(rng))
    ),
    "reference": Kind(lambda: Typed(Author), (AUTHOR, None), lambda rng: AUTHOR),
}

#: Where the field is: at the top level, inside an embedded model, as a list's items.
POSITIONS = ("top", "nested", "list")

MODEL = "kinds.Doc"


def _values(kind: Kind, seed: str) -> list[Any]:
    rng = random.Random(seed)
    return [*kind.fixed, *(kind.draw(rng) for _ in range(AUTOGEN_VALUES))]


def _model(position: str, member: Member[Any, Any], version: int) -> type[VersionedModel]:
    """The model with the field at `position`, at `version`."""
    attrs: dict[str, Any]
    if position == "nested":
        attrs = {"__model__": "kinds.Wrap", "__on_error__": "raise", "f": member}
        wrap = type("Wrap", (JSONModel,), attrs)
        attrs = {"meta": Typed(wrap)}
    elif position == "list":
        attrs = {"f": List(member)}
    else:
        attrs = {"f": member}
    attrs |= {"__model__": MODEL, "__version__": version, "__on_error__": "raise"}
    return type("Doc", (VersionedModel,), attrs)  # type: ignore[return-value]


def _object(cls: type[VersionedModel], position: str, value: Any) -> VersionedModel:
    if position == "nested":
        wrap = cls.members()["meta"].validate_mode[1]
        return cls(meta=wrap(f=value))
    return cls(f=[value] if position == "list" else value)


def _restored(obj: Any, position: str) -> Any:
    if position == "nested":
        return obj.meta.f
    if position == "list":
        (item,) = obj.f
        return item
    return obj.f


def _kind_name(value: Any) -> str | None:
    """The name `ops.convert` gives the kind of a plain value."""
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", datetime: "datetime"}.get(type(value))


def kept(old: Any, new: Any) -> bool:
    """Whether `new` holds what `old` held: the same value, or a conversion of it
    that gives it back."""
    if isinstance(old, Model) or isinstance(new, Model):
        if type(old).__model__ != getattr(type(new), "__model__", None):
            return False
        if isinstance(old, NoSQLModel):
            return bool(old._id == new._id)
        return _state(old) == _state(new)
    if isinstance(old, (list, tuple)):
        return (
            isinstance(new, (list, tuple))
            and len(old) == len(new)
            and all(kept(a, b) for a, b in zip(old, new, strict=True))
        )
    if isinstance(old, dict):
        return (
            isinstance(new, dict)
            and old.keys() == new.keys()
            and all(kept(old[k], new[k]) for k in old)
        )
    if old is None or new is None:
        return old is new
    if type(old) is type(new) or (
        _kind_name(old) in ("int", "float") and _kind_name(new) in ("int", "float")
    ):
        return bool(old == new)
    back = _kind_name(old)
    if back is None:
        return False
    try:
        return bool(convert_value(new, back) == old)
    except Exception:
        return False


def _state(obj: Model) -> dict[str, Any]:
    return {k: v for k, v in obj.__getstate__().items() if k != "__ref__"}


@pytest.fixture
async def memory_db() -> AsyncIterator[Any]:
    """An in-memory database holding the author every reference points at."""
    saved = ManagerState()
    database = memory_database()
    add_to_serializer_registries(Author)  # type: ignore[arg-type]
    add_to_serializer_registries(Meta)  # type: ignore[arg-type]
    AUTHOR._id = None
    await AUTHOR.save()
    try:
        yield database
    finally:
        saved.restore()
        drop_memory_database(database)


@dataclass
class Case:
    position: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.old} -> {self.new} ({self.position})"


async def _run(folder: Path, case: Case) -> tuple[str, str]:
    """What autogenerate and check do with a case: ("refused" | "kept" | "no change",
    detail), or ("FAILED", why)."""
    registry = MigrationRegistry()
    saved, MigrationRegistry._instance = MigrationRegistry._instance, registry
    try:
        return await _run_in(folder, case, registry)
    finally:
        MigrationRegistry._instance = saved


async def _run_in(folder: Path, case: Case, registry: MigrationRegistry) -> tuple[str, str]:
    folder.mkdir(parents=True)
    ws = Workspace(Config(migrations=folder), registry=registry)
    ws._loaded = True
    old = _model(case.position, KINDS[case.old].make(), 1)
    from atomdb_migrate.schema.snapshots import snapshot

    (folder / "0001_first.py").write_text(
        f'"First."\nmodel = {MODEL!r}\nfrom_version = "0"\nto_version = "1"\n'
        f"operations = []\nschema = {snapshot(old)!r}\n"
    )
    load_migrations(folder, registry=registry)
    new = _model(case.position, KINDS[case.new].make(), 2)
    done = revision(ws, "change", MODEL, autogenerate=True)
    registry.graphs.clear()
    load_migrations(folder, registry=registry)
    problems = await check(ws)
    if problems:
        ours = all(done.path.name in p for p in problems)
        return ("refused", problems[0]) if ours else ("FAILED", f"other problems: {problems}")
    if not KINDS[case.new].round_trips:
        return "left out", f"atom-db does not restore {case.new} into itself"
    for value in _values(KINDS[case.old], str(case)):
        why = await _keeps(old, new, case.position, value)
        if why:
            return "FAILED", f"check passes, but {value!r}: {why}\n{done.path.read_text()}"
    return ("kept" if done.diff else "no change"), ""


async def _keeps(
    old: type[VersionedModel], new: type[VersionedModel], position: str, value: Any
) -> str:
    """Why a value saved with `old` is not kept through the step into `new` ("" if it is)."""
    obj = _object(old, position, value)
    obj._id = ObjectId()
    stored = bson.decode(bson.encode(obj.__getstate__()))  # as saved: tuples are lists
    try:
        upgraded = await new.upgrade_state(stored)
        restored = new.__new__(new)
        with restore_check() as problems:
            await restored.__restorestate__(upgraded)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if problems:
        return f"restore problems: {problems}"
    found = _restored(restored, position)
    return "" if kept(value, found) else f"restored as {found!r}"


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("old", list(KINDS))
async def test_autogenerate_keeps_the_data_or_check_refuses(
    tmp_path: Path, memory_db: Any, position: str, old: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: dict[str, list[str]] = {}
    failures = []
    for i, new in enumerate(KINDS):
        case = Case(position, old, new)
        outcome, detail = await _run(tmp_path / f"case{i}", case)
        outcomes.setdefault(outcome, []).append(new)
        if outcome == "FAILED":
            failures.append(f"{case}: {detail}")
    with capsys.disabled():
        left = outcomes.get("left out")
        if left:
            why = "atom-db 0.8.5 cannot restore it even into itself"
            print(f"\n{old} ({position}): not checked as the new kind ({why}): {left}")
    assert not failures, "\n\n".join(failures)
    assert old in outcomes.get("no change", []) + outcomes.get("left out", []), (
        "a kind into itself is no change"
    )
