"""VersionedModel on every backend: restore paths, write-back, save, bad input."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import pytest
from atom.api import ForwardInstance, Instance, Int, List, Str, Typed
from atomdb.nosql import NoSQLModel

from atomdb_migrate import (
    ConflictError,
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    MigrationRegistry,
    NewerDocumentError,
    StepBeyondHeadError,
    StepFailedError,
    StepResultError,
    VersionedModel,
    register_step,
    step,
)
from atomdb_migrate.model.versioned import guarded_replace

#: How many times each step of Author ran, by target version.
calls: Counter[str] = Counter()


class Author(VersionedModel):
    __version__ = 3

    first = Str()
    last = Str()
    age = Int()


@step(Author, 0, 1)
def rename_fullname(doc: dict[str, Any]) -> None:
    """Rename fullname to name."""
    calls["1"] += 1
    doc["name"] = doc.pop("fullname")


@step(Author, 1, 2)
def split_name(doc: dict[str, Any]) -> dict[str, Any]:
    """Split name into first and last."""
    calls["2"] += 1
    first, _, last = doc.pop("name").partition(" ")
    return {**doc, "first": first, "last": last}


@split_name.downgrade
def join_name(doc: dict[str, Any]) -> None:
    doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()


@step(Author, 2, 3)
async def age_to_int(doc: dict[str, Any]) -> None:
    """Store age as an int."""
    calls["3"] += 1
    doc["age"] = int(doc.get("age") or 0)


class Article(VersionedModel):
    __version__ = 2
    __base_version__ = 1  # its documents start at version 1: no step from 0

    title = Str()
    author = Instance(Author)
    editor = Typed(Author)
    contributors = List(Author)
    previous = ForwardInstance(lambda: Article)
    related = List(ForwardInstance(lambda: Article))


@step(Article, 1, 2)
def rename_heading(doc: dict[str, Any]) -> None:
    doc["title"] = doc.pop("heading")


class Fragile(VersionedModel):
    """A model whose steps each bad-input test registers itself."""

    __version__ = 2

    name = Str()


class Plain(NoSQLModel):
    """An unversioned atom-db model."""

    name = Str()
    friend = Instance(Author)


def legacy_author(version: int, _id: Any = None, name: str = "Ada Lovelace") -> dict[str, Any]:
    """An Author document as code at `version` stored it."""
    doc: dict[str, Any] = {"__model__": Author.__model__, "__ref__": 1}
    if _id is not None:
        doc["_id"] = _id
    first, _, last = name.partition(" ")
    if version == 0:
        doc.update(fullname=name, age="36")
    elif version == 1:
        doc.update(name=name, age="36", __version__="1")
    elif version == 2:
        doc.update(first=first, last=last, age="36", __version__="2")
    else:
        doc.update(first=first, last=last, age=36, __version__="3")
    return doc


async def insert(model: type[NoSQLModel], doc: dict[str, Any]) -> Any:
    return (await model.objects.insert_one(doc)).inserted_id


async def stored(model: type[NoSQLModel], _id: Any) -> dict[str, Any]:
    doc = await model.objects.find_one({"_id": _id})
    assert doc is not None
    return dict(doc)


def ref(model: type[NoSQLModel], _id: Any) -> dict[str, Any]:
    """A reference as atom-db stores it."""
    return {"_id": _id, "__ref__": id(_id), "__model__": model.__model__}


def assert_ada(a: Author) -> None:
    assert (a.first, a.last, a.age) == ("Ada", "Lovelace", 36)


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    calls.clear()


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------
async def test_saved_documents_carry_the_version(db: Any) -> None:
    a = Author(first="Grace", last="Hopper", age=85)
    await a.save()
    assert (await stored(Author, a._id))["__version__"] == "3"
    a.age = 86
    await a.save()
    doc = await stored(Author, a._id)
    assert (doc["__version__"], doc["age"]) == ("3", 86)


def test_version_is_canonical_string() -> None:
    assert Author.__version__ == "3"
    assert Author.__getstate__(Author(first="x"))["__version__"] == "3"

    class Dotted(VersionedModel):
        __version__ = "1.2"

    assert Dotted.__version__ == "1.2"


# ---------------------------------------------------------------------------
# Model.restore(state)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 1, 2])
async def test_restore_upgrades_a_legacy_document(db: Any, version: int) -> None:
    _id = await insert(Author, legacy_author(version))
    state = await stored(Author, _id)
    before = copy.deepcopy(state)
    a = await Author.restore(state)
    assert_ada(a)
    assert sum(calls.values()) == 3 - version
    assert state == before, "the caller's state must not be changed"
    assert await stored(Author, _id) == before, "write-back is off by default"


async def test_current_document_runs_no_step(db: Any) -> None:
    _id = await insert(Author, legacy_author(3))
    assert_ada(await Author.restore(await stored(Author, _id)))
    assert not calls


async def test_non_canonical_current_version_runs_no_step(db: Any) -> None:
    _id = await insert(Author, {**legacy_author(3), "__version__": "3.0"})
    assert_ada(await Author.restore(await stored(Author, _id)))
    assert not calls


async def test_restore_keeps_one_object_per_id(db: Any) -> None:
    _id = await insert(Author, legacy_author(0))
    a = await Author.restore(await stored(Author, _id))
    b = await Author.restore(await stored(Author, _id))
    assert a is b
    assert sum(calls.values()) == 3, "a cached object is not restored again"


async def test_upgrade_state_is_pure() -> None:
    doc = legacy_author(0, _id=1)
    out = await Author.upgrade_state(doc)
    assert out == {**legacy_author(3, _id=1)}
    assert doc == legacy_author(0, _id=1)
    current = legacy_author(3, _id=1)
    assert await Author.upgrade_state(current) is current


# ---------------------------------------------------------------------------
# obj.load() and references
# ---------------------------------------------------------------------------
async def test_load_upgrades(db: Any) -> None:
    _id = await insert(Author, legacy_author(1))
    a = Author(_id=_id)
    await a.load()
    assert_ada(a)
    assert a.__restored__


async def test_references_are_upgraded(db: Any) -> None:
    ada = await insert(Author, legacy_author(0))
    grace = await insert(Author, legacy_author(1, name="Grace Hopper"))
    alan = await insert(Author, legacy_author(2, name="Alan Turing"))
    prev = await insert(
        Article,
        {"heading": "Notes", "__version__": "1", "author": ref(Author, grace), "contributors": []},
    )
    _id = await insert(
        Article,
        {
            "heading": "Analytical Engine",
            "__version__": "1",
            "author": ref(Author, ada),
            "contributors": [ref(Author, grace), ref(Author, alan)],
            "previous": ref(Article, prev),
        },
    )
    art = await Article.restore(await stored(Article, _id))
    assert art.title == "Analytical Engine"
    assert_ada(art.author)
    assert [(c.first, c.age) for c in art.contributors] == [("Grace", 36), ("Alan", 36)]
    assert art.previous.title == "Notes"
    assert art.previous.author is art.contributors[0], "one object per _id"


async def test_get_object_state_returns_the_upgraded_document(db: Any) -> None:
    _id = await insert(Author, legacy_author(0))
    obj = Author.__new__(Author)
    state = await Author.serializer.get_object_state(obj, {"_id": _id}, {})
    assert state == {**legacy_author(3), "_id": _id}
    assert await Author.serializer.get_object_state(obj, {"_id": "missing"}, {}) is None


async def test_typed_reference_stub_is_not_run_through_steps(db: Any) -> None:
    ada = await insert(Author, legacy_author(0))
    _id = await insert(Article, {"heading": "T", "__version__": "1", "editor": ref(Author, ada)})
    art = await Article.restore(await stored(Article, _id))
    assert art.editor._id == ada
    assert not calls, "a reference stub is not a document"
    assert not art.editor.__restored__
    await art.editor.load()
    assert_ada(art.editor)


async def test_circular_references(db: Any) -> None:
    a = Article(title="A")
    b = Article(title="B", related=[a])
    a.related = [b]
    await a.save()  # b is unsaved, so it is embedded in a's document
    doc = await stored(Article, a._id)
    assert doc["related"][0]["__version__"] == "2"
    # Store a's document as version 1 code wrote it, embedded b included.
    doc["heading"] = doc.pop("title")
    doc["__version__"] = "1"
    doc["related"][0]["heading"] = doc["related"][0].pop("title")
    doc["related"][0]["__version__"] = "1"
    await Article.objects.replace_one({"_id": a._id}, doc)
    Article.objects.cache.clear()

    r = await Article.restore(await stored(Article, a._id))
    assert r.title == "A"
    assert r.related[0].title == "B"
    assert r.related[0].related[0] is r


async def test_circular_references_between_documents(db: Any) -> None:
    a_id = await insert(Article, {"heading": "A", "__version__": "1"})
    b_id = await insert(
        Article, {"heading": "B", "__version__": "1", "related": [ref(Article, a_id)]}
    )
    await Article.objects.update_one({"_id": a_id}, {"$set": {"related": [ref(Article, b_id)]}})
    a = await Article.restore(await stored(Article, a_id))
    assert a.related[0].title == "B"
    assert a.related[0].related[0] is a


# ---------------------------------------------------------------------------
# Unversioned models
# ---------------------------------------------------------------------------
async def test_unversioned_models_are_untouched(db: Any) -> None:
    ada = await insert(Author, legacy_author(0))
    p = Plain(name="p")
    await p.save()
    doc = await stored(Plain, p._id)
    assert "__version__" not in doc
    await Plain.objects.update_one({"_id": p._id}, {"$set": {"friend": ref(Author, ada)}})
    Plain.objects.cache.clear()
    r = await Plain.restore(await stored(Plain, p._id))
    assert r.name == "p"
    assert_ada(r.friend)  # a versioned reference still upgrades


# ---------------------------------------------------------------------------
# Write-back
# ---------------------------------------------------------------------------
@pytest.fixture
def write_back() -> Any:
    Author.__write_back__ = True
    yield
    Author.__write_back__ = False


async def test_write_back_persists_the_upgrade(db: Any, write_back: None) -> None:
    _id = await insert(Author, legacy_author(0))
    await Author.restore(await stored(Author, _id))
    assert await stored(Author, _id) == {**legacy_author(3), "_id": _id}


async def test_write_back_through_references_and_load(db: Any, write_back: None) -> None:
    ada = await insert(Author, legacy_author(1))
    grace = await insert(Author, legacy_author(2, name="Grace Hopper"))
    _id = await insert(Article, {"heading": "T", "__version__": "1", "author": ref(Author, ada)})
    await Article.restore(await stored(Article, _id))
    assert (await stored(Author, ada))["__version__"] == "3"
    await Author(_id=grace).load()
    assert (await stored(Author, grace))["__version__"] == "3"


async def test_write_back_keeps_fields_left_out_of_a_projection(db: Any, write_back: None) -> None:
    _id = await insert(Author, {**legacy_author(2), "notes": "kept"})
    state = await Author.objects.find_one({"_id": _id}, {"notes": 0})
    await Author.restore(state)
    doc = await stored(Author, _id)
    assert (doc["__version__"], doc["age"], doc["notes"]) == ("3", 36, "kept")


async def test_write_back_never_overwrites_a_newer_write(
    db: Any, write_back: None, registry: MigrationRegistry
) -> None:
    _id = await insert(Fragile, {"name": "old", "__version__": "1"})

    async def racing_step(doc: dict[str, Any]) -> None:
        # Another process saves the document while this one upgrades it.
        await Fragile.objects.update_one(
            {"_id": _id}, {"$set": {"name": "new", "__version__": "2"}}
        )
        doc["name"] = "upgraded"

    Fragile.__write_back__ = True
    try:
        registry.add_step(step(Fragile, 1, 2)(racing_step))
        obj = await Fragile.restore(await stored(Fragile, _id))
    finally:
        Fragile.__write_back__ = False
    assert obj.name == "upgraded"
    assert await stored(Fragile, _id) == {"_id": _id, "name": "new", "__version__": "2"}


async def test_write_back_never_overwrites_a_partial_update(
    db: Any, registry: MigrationRegistry
) -> None:
    _id = await insert(Fragile, {"name": "old", "__version__": "1"})

    async def racing_step(doc: dict[str, Any]) -> None:
        # Another process changes a field, not the version, meanwhile.
        await Fragile.objects.update_one({"_id": _id}, {"$set": {"name": "new", "seq": 7}})
        doc["name"] = "upgraded"

    Fragile.__write_back__ = True
    try:
        registry.add_step(step(Fragile, 1, 2)(racing_step))
        await Fragile.restore(await stored(Fragile, _id))
    finally:
        Fragile.__write_back__ = False
    assert await stored(Fragile, _id) == {"_id": _id, "name": "new", "__version__": "1", "seq": 7}


# ---------------------------------------------------------------------------
# save() guard
# ---------------------------------------------------------------------------
async def test_save_refuses_to_replace_a_newer_document(db: Any) -> None:
    a = Author(first="Ada")
    await a.save()
    newer = {**await stored(Author, a._id), "__version__": "4", "nickname": "Countess"}
    await Author.objects.replace_one({"_id": a._id}, newer)
    a.first = "Changed"
    with pytest.raises(NewerDocumentError) as info:
        await a.save()
    assert (info.value.model, info.value.doc_id) == (Author.__model__, a._id)
    assert "4" in str(info.value) and "3" in str(info.value)
    assert await stored(Author, a._id) == newer


@pytest.mark.parametrize("version", [None, "0", "2", "2.0", 1])
async def test_save_over_older_documents(db: Any, version: Any) -> None:
    doc = {"first": "x"} if version is None else {"first": "x", "__version__": version}
    _id = await insert(Author, doc)
    a = Author(_id=_id, first="y")
    await a.save()
    assert await stored(Author, _id) == {**a.__getstate__(), "_id": _id}


async def test_save_with_an_id_not_yet_stored_inserts(db: Any) -> None:
    a = Author(_id=(await insert(Plain, {"name": "borrowed id"})), first="new")
    await a.save()
    assert (await stored(Author, a._id))["first"] == "new"


async def test_save_conflict_after_repeated_changes(db: Any, monkeypatch: Any) -> None:
    a = Author(first="x")
    await a.save()
    await Author.objects.update_one({"_id": a._id}, {"$set": {"__version__": "2.5"}})
    real_replace = Author.objects.table.replace_one
    real_update = Author.objects.table.update_one

    versions = iter(["2.6", "2.5"] * 10)

    async def moving_target(filter: dict[str, Any], doc: dict[str, Any], **kw: Any) -> Any:
        # Someone changes the version between every read and write.
        await real_update({"_id": a._id}, {"$set": {"__version__": next(versions)}})
        return await real_replace(filter, doc, **kw)

    proxy = Author.objects
    monkeypatch.setattr(proxy, "table", _Wrapped(proxy.table, replace_one=moving_target))
    with pytest.raises(ConflictError) as info:
        await guarded_replace(Author, a.__getstate__())
    assert info.value.doc_id == a._id
    assert (await stored(Author, a._id))["first"] == "x", "nothing written"


class _Wrapped:
    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ---------------------------------------------------------------------------
# Bad input: a clear error, nothing written
# ---------------------------------------------------------------------------
async def restore_fragile(doc: dict[str, Any], write: bool = True) -> tuple[Any, dict[str, Any]]:
    """Insert a document, restore it with write-back on; return the id and stored doc."""
    _id = await insert(Fragile, doc)
    Fragile.__write_back__ = write
    try:
        await Fragile.restore(await stored(Fragile, _id))
    finally:
        Fragile.__write_back__ = False
    return _id, doc


async def assert_unchanged(_id: Any, doc: dict[str, Any]) -> None:
    assert await stored(Fragile, _id) == {**doc, "_id": _id}


async def test_gap(db: Any, registry: MigrationRegistry) -> None:
    registry.add_step(step(Fragile, 1, 2)(lambda d: None))
    doc = {"name": "x"}
    with pytest.raises(GapError) as info:
        await restore_fragile(doc)
    err = info.value
    assert (err.model, err.from_version, err.to_version, err.missing) == (
        Fragile.__model__,
        "0",
        "2",
        "0",
    )
    assert err.doc_id is not None and repr(err.doc_id) in str(err)
    (_id,) = [d["_id"] async for d in Fragile.objects.find()]
    await assert_unchanged(_id, {"name": "x"})


async def test_step_past_the_current_version(db: Any, registry: MigrationRegistry) -> None:
    registry.add_step(step(Fragile, 1, 3)(lambda d: None))
    with pytest.raises(StepBeyondHeadError, match="past the model's current version 2"):
        await restore_fragile({"name": "x", "__version__": "1"})


async def test_step_that_raises_writes_nothing(db: Any, registry: MigrationRegistry) -> None:
    def half_done(doc: dict[str, Any]) -> None:
        doc["name"] = "changed"
        raise RuntimeError("boom")

    registry.add_step(step(Fragile, 0, 1)(lambda d: None))
    registry.add_step(step(Fragile, 1, 2)(half_done))
    _id = await insert(Fragile, {"name": "x"})
    state = await stored(Fragile, _id)
    Fragile.__write_back__ = True
    try:
        with pytest.raises(StepFailedError) as info:
            await Fragile.restore(state)
    finally:
        Fragile.__write_back__ = False
    err = info.value
    assert (err.model, err.doc_id, err.from_version, err.to_version) == (
        Fragile.__model__,
        _id,
        "1",
        "2",
    )
    assert "boom" in str(err) and "half_done" in str(err)
    assert state == {"_id": _id, "name": "x"}
    assert await stored(Fragile, _id) == {"_id": _id, "name": "x"}
    assert Fragile.objects.cache.get(_id) is None or not Fragile.objects.cache[_id].name


async def test_step_returning_a_non_dict(db: Any, registry: MigrationRegistry) -> None:
    registry.add_step(step(Fragile, 1, 2)(lambda d: ["not", "a", "dict"]))
    with pytest.raises(StepResultError, match="returned list"):
        await restore_fragile({"name": "x", "__version__": "1"})
    (doc,) = [d async for d in Fragile.objects.find()]
    assert doc["__version__"] == "1"


async def test_document_newer_than_the_code(db: Any) -> None:
    with pytest.raises(NewerDocumentError) as info:
        await restore_fragile({"name": "x", "__version__": "10"})
    assert (info.value.stored, info.value.current) == ("10", "2")


async def test_newer_documents_restore_as_is_when_the_model_says_so(db: Any) -> None:
    Fragile.__on_newer__ = "restore"
    try:
        _id = await insert(Fragile, {"name": "future", "__version__": "3", "extra": 1})
        obj = await Fragile.restore(await stored(Fragile, _id))
        assert obj.name == "future"
        obj.name = "changed by old code"
        with pytest.raises(NewerDocumentError, match="save over it"):
            await obj.save()
        assert await stored(Fragile, _id) == {
            "_id": _id,
            "name": "future",
            "__version__": "3",
            "extra": 1,
        }
    finally:
        Fragile.__on_newer__ = "raise"


@pytest.mark.parametrize("bad", ["two", "", ["1"], float("nan"), True, {"v": 1}, "1" * 5000])
async def test_stored_version_that_is_not_a_version(db: Any, bad: Any) -> None:
    with pytest.raises(InvalidVersionError) as info:
        await restore_fragile({"name": "x", "__version__": bad})
    assert info.value.model == Fragile.__model__ and info.value.doc_id is not None
    assert len(str(info.value)) < 500, "the message stays one short line"


async def test_a_stored_double_is_the_version_it_holds(db: Any) -> None:
    with pytest.raises(GapError) as info:
        await restore_fragile({"name": "x", "__version__": 1.5})
    assert info.value.missing == "1.5"


async def test_migration_error_in_a_reference_is_raised_not_logged(
    db: Any, registry: MigrationRegistry, caplog: Any
) -> None:
    bad = await insert(Author, {"fullname": "Nobody", "__version__": "7"})
    _id = await insert(Article, {"title": "T", "__version__": "2", "author": ref(Author, bad)})
    with caplog.at_level(logging.WARNING, logger="atomdb"), pytest.raises(NewerDocumentError):
        await Article.restore(await stored(Article, _id))


def test_duplicate_step_is_refused_at_registration(registry: MigrationRegistry) -> None:
    with pytest.raises(DuplicateStepError, match="two steps leave version 1"):

        @step(Author, 1, 2)
        def another_split(doc: dict[str, Any]) -> None:
            pass


def test_cycle_is_refused_at_registration(registry: MigrationRegistry) -> None:
    with pytest.raises(CycleError):

        @step(Author, 3, 1)
        def back_to_one(doc: dict[str, Any]) -> None:
            pass


@pytest.mark.parametrize("bad", ["three", "", None, 2.5])
def test_model_version_that_is_not_a_version(bad: Any, registry: MigrationRegistry) -> None:
    with pytest.raises(InvalidVersionError, match="__version__"):

        class Broken(VersionedModel):
            __version__ = bad


def test_invalid_newer_policy(registry: MigrationRegistry) -> None:
    with pytest.raises(ValueError, match="__on_newer__"):

        class Broken(VersionedModel):
            __on_newer__ = "ignore"


def test_registry_knows_the_models() -> None:
    reg = MigrationRegistry.instance()
    assert reg.model(Author.__model__) is Author
    assert reg.model(Author) is Author
    assert [s.to_version for s in reg.plan_upgrade(Author, "0")] == ["1", "2", "3"]
    ours = {m.__model__ for m in (Author, Article)}
    assert [p for p in reg.problems() if p.model in ours] == []
    # Fragile's tests register its steps: without them it is at version 2 and
    # nothing leads there from unversioned documents.
    (gap,) = [p for p in reg.problems() if p.model == Fragile.__model__]
    assert "is at version 2 but has no step" in str(gap)


async def test_plans_are_cached_per_model_version(registry: MigrationRegistry) -> None:
    """Old and new code of one model in one process: each plans to its own version."""

    class OldCode(VersionedModel):
        __model__ = "test_model.Shared"
        __version__ = 2

    class NewCode(VersionedModel):
        __model__ = "test_model.Shared"
        __version__ = 3

    register_step(NewCode, 1, 2, lambda d: d.update(two=True))
    register_step(NewCode, 2, 3, lambda d: d.update(three=True))
    legacy = {"_id": 1, "__version__": "1"}
    assert await OldCode.upgrade_state(dict(legacy)) == {"_id": 1, "__version__": "2", "two": True}
    assert (await NewCode.upgrade_state(dict(legacy)))["__version__"] == "3"
    assert (await OldCode.upgrade_state(dict(legacy)))["__version__"] == "2"
    # A step added later is seen at once: the cached plans are dropped.
    register_step(NewCode, 0, 1, lambda d: d.update(one=True))
    assert (await NewCode.upgrade_state({"_id": 2}))["one"] is True
