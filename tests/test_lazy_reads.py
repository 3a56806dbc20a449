"""Reads of legacy documents through compiled chains (`compile_read`, `read_chain`).

A read that writes nothing back copies only what its steps may change: a
chain of confined operations copies the fields they name, any other chain
runs on a `LazyCopy`. Both must leave the stored document unchanged and give
what the steps give on a deep copy, whatever the steps do to nested values.

``LAZY_READ_EXAMPLES`` sets the number of generated cases (default 150).

"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Callable
from typing import Any

import pytest
from atom.api import (
    Bool,
    Coerced,
    Dict,
    Enum,
    Float,
    Instance,
    Int,
    List,
    Set,
    Str,
    Typed,
)
from atomdb.nosql import NoSQLModel
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import VersionedModel, ops, register_step
from atomdb_migrate.core.documents import LazyCopy, copy_document
from atomdb_migrate.exceptions import MigrateError
from atomdb_migrate.model.reads import read_chain
from atomdb_migrate.steps.chain import compile_read, run_chain
from atomdb_migrate.steps.definition import define_step
from atomdb_migrate.steps.versions import Step

EXAMPLES = int(os.environ.get("LAZY_READ_EXAMPLES", "150"))

NAMES = ["a", "b", "c", "d"]

scalars = st.one_of(st.none(), st.integers(-5, 5), st.text("xyz", max_size=2), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(NAMES), values, max_size=4).map(
    lambda d: {"_id": 1, "__version__": "1", **d}
)


def _mutate_nested(value: Any, token: int) -> None:
    """Change a nested value in place, however deep its first container is."""
    if isinstance(value, dict):
        if value:
            first = next(iter(value))
            if isinstance(value[first], (dict, list)):
                _mutate_nested(value[first], token)
                return
        value["z"] = token
    elif isinstance(value, list):
        if value and isinstance(value[0], (dict, list)):
            _mutate_nested(value[0], token)
        else:
            value.append(token)


#: What a random Python step does to the document it is given, through the
#: document's own methods (as normal step code does).
ACTIONS: dict[str, Callable[[dict[str, Any], str, int], Any]] = {
    "getitem": lambda doc, k, t: k in doc and _mutate_nested(doc[k], t),
    "get": lambda doc, k, t: _mutate_nested(doc.get(k), t),
    "setdefault": lambda doc, k, t: _mutate_nested(doc.setdefault(k, []), t),
    "pop and put back": lambda doc, k, t: doc.__setitem__(k, doc.pop(k, [t])),
    "values": lambda doc, k, t: [_mutate_nested(v, t) for v in doc.values()],
    "items": lambda doc, k, t: [_mutate_nested(v, t) for _, v in doc.items()],
    "set": lambda doc, k, t: doc.__setitem__(k, {"new": t}),
    "delete": lambda doc, k, t: doc.pop(k, None),
    "update": lambda doc, k, t: doc.update({k: [t]}),
    "alias": lambda doc, k, t: k in doc and doc.__setitem__("d", doc[k]),
}

#: Steps that return a new dict built from the document.
RETURNS: dict[str, Callable[[dict[str, Any], str, int], dict[str, Any]]] = {
    "unpack": lambda doc, k, t: {**doc},
    "dict()": lambda doc, k, t: dict(doc),
    "copy.copy": lambda doc, k, t: copy.copy(doc),
    "doc.copy": lambda doc, k, t: doc.copy(),
    "or": lambda doc, k, t: doc | {},
}


def python_step(action: str, key: str, token: int, version: int) -> Step:
    def upgrade(doc: dict[str, Any]) -> dict[str, Any] | None:
        if action in RETURNS:
            new = RETURNS[action](doc, key, token)
            for v in new.values():
                _mutate_nested(v, token)
            return new
        ACTIONS[action](doc, key, token)
        return None

    return Step(
        model="M", from_version=str(version), to_version=str(version + 1), upgrade_fn=upgrade
    )


python_steps = st.lists(
    st.tuples(st.sampled_from([*ACTIONS, *RETURNS]), st.sampled_from(NAMES), st.integers(0, 99)),
    min_size=1,
    max_size=4,
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", await fn()
    except MigrateError as exc:
        return "error", type(exc).__name__


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, python_steps)
def test_python_steps_never_change_the_stored_document(
    doc: dict[str, Any], spec: list[tuple[str, str, int]]
) -> None:
    chain = [python_step(a, k, t, i + 1) for i, (a, k, t) in enumerate(spec)]
    before = copy.deepcopy(doc)
    expected = run(outcome(lambda: run_chain(chain, copy_document(doc))))
    got = run(outcome(lambda: compile_read(chain)(doc)))
    assert doc == before
    assert got == expected
    if got[0] == "ok":
        assert type(got[1]) is dict


def field_ops(name: str) -> st.SearchStrategy[Any]:
    path = st.sampled_from([*NAMES, "a.b", "b.c", "c.a"])
    source = st.sampled_from(["a", "b", "c", "a.b", "b.c", "c.a"])
    return st.one_of(
        st.builds(ops.add_field, path, values),
        st.builds(ops.remove_field, path),
        st.builds(ops.rename_field, st.just(name), st.sampled_from(["d", "d.x"])),
        st.builds(ops.copy_field, source, st.sampled_from(["d", "d.y"])),
        st.builds(ops.move_field, st.sampled_from(["a.b", "b"]), st.just("c.m")),
    )


def ops_step(operations: list[Any], version: int) -> Step:
    return define_step("M", version, version + 1, operations=operations)


operation_lists = st.lists(
    st.lists(st.sampled_from(["a", "b", "c"]).flatmap(field_ops), min_size=1, max_size=3),
    min_size=1,
    max_size=3,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, operation_lists)
def test_compiled_operations_equal_the_deep_copy_form(
    doc: dict[str, Any], spec: list[list[Any]]
) -> None:
    try:
        chain = [ops_step(o, i + 1) for i, o in enumerate(spec)]
    except (ValueError, MigrateError):
        return  # overlapping paths in one operation: refused when made
    before = copy.deepcopy(doc)
    expected = run(outcome(lambda: run_chain(chain, copy_document(doc))))
    got = run(outcome(lambda: compile_read(chain)(doc)))
    assert doc == before
    assert got == expected
    if got[0] == "ok":  # changing what the operations reached leaves the stored document alone
        fields = set().union(*(s.operations.confined_fields() for s in chain))
        for key in fields & got[1].keys():
            _mutate_nested(got[1][key], 1000)
        assert doc == before


def test_confined_operations_copy_only_their_fields() -> None:
    doc = {"_id": 1, "__version__": "1", "kept": {"x": [1]}, "old": {"y": 2}, "tags": ["a"]}
    chain = [ops_step([ops.rename_field("old", "new")], 1), ops_step([ops.add_field("n", 0)], 2)]
    got = run(compile_read(chain)(doc))
    assert got == {
        "_id": 1,
        "__version__": "3",
        "kept": {"x": [1]},
        "new": {"y": 2},
        "tags": ["a"],
        "n": 0,
    }
    assert got["kept"] is doc["kept"] and got["tags"] is doc["tags"]  # not copied
    assert got["new"] is not doc["old"]
    got["new"]["y"] = 3
    assert doc["old"] == {"y": 2}


def test_rename_model_is_not_confined() -> None:
    # rename_model rewrites references at any depth: the chain takes the lazy copy.
    ref = {"_id": 2, "__model__": "old.Model"}
    doc = {"_id": 1, "__version__": "1", "refs": [ref]}
    chain = [define_step("M", 1, 2, operations=[ops.rename_model("old.Model", "new.Model")])]
    got = run(compile_read(chain)(doc))
    assert got["refs"][0]["__model__"] == "new.Model"
    assert ref["__model__"] == "old.Model"


def test_a_step_function_replaced_after_compiling_is_run() -> None:
    doc = {"_id": 1, "__version__": "1", "a": {"x": 1}}
    step = ops_step([ops.add_field("n", 0)], 1)
    read = compile_read([step])

    def replaced(d: dict[str, Any]) -> None:
        d["a"]["x"] = 2

    step.upgrade_fn = replaced
    got = run(read(doc))
    assert got["a"] == {"x": 2} and doc["a"] == {"x": 1}


def test_lazy_copy_hands_out_copies() -> None:
    source = {"a": {"x": [1]}, "b": [1, 2], "c": 1}
    lazy = LazyCopy.of(source)
    lazy["a"]["x"].append(2)
    lazy.get("b").append(3)
    assert source == {"a": {"x": [1]}, "b": [1, 2], "c": 1}
    assert lazy.result() == {"a": {"x": [1, 2]}, "b": [1, 2, 3], "c": 1}
    plain = {**LazyCopy.of(source)}
    plain["a"]["x"].append(9)
    assert source["a"] == {"x": [1]}


class LazyReader(VersionedModel):
    __version__ = 3
    name = Str()
    tags = List(str)
    settings = Dict()


@pytest.fixture
def reader_steps(registry: Any) -> Any:
    register_step(LazyReader, 1, 2, operations=[ops.rename_field("title", "name")])

    def tag(doc: dict[str, Any]) -> None:
        doc.setdefault("tags", []).append("read")
        doc["settings"]["seen"] = True

    return register_step(LazyReader, 2, 3, tag)


def test_restore_of_a_legacy_document_uses_the_compiled_chain(reader_steps: Any) -> None:
    state = {"_id": 7, "__version__": "1", "title": "t", "tags": ["x"], "settings": {"a": 1}}
    before = copy.deepcopy(state)
    chain = read_chain(LazyReader, "1")
    assert chain is not None
    assert read_chain(LazyReader, "1") is chain  # compiled once
    assert read_chain(LazyReader, "3") is None  # current: nothing to run
    assert read_chain(LazyReader, {"not": "a version"}) is None  # not a key: general path
    got = run(chain(state))
    assert got == {
        "_id": 7,
        "__version__": "3",
        "name": "t",
        "tags": ["x", "read"],
        "settings": {"a": 1, "seen": True},
    }
    assert state == before
    assert run(LazyReader.upgrade_state(state)) == got


def test_a_new_step_compiles_the_chains_again(reader_steps: Any) -> None:
    first = read_chain(LazyReader, "0")
    assert first is None  # no step leaves version 0
    register_step(LazyReader, 0, 1, operations=[ops.add_field("title", "")])
    again = read_chain(LazyReader, "0")
    assert again is not None
    got = run(again({"_id": 1, "__version__": "0", "settings": {}}))
    assert got["name"] == "" and got["__version__"] == "3"


class SetHolder(VersionedModel):
    __version__ = 2
    name = Str()
    labels = Set()
    extra = Dict()


@pytest.mark.parametrize("kind", ["python step", "confined operations"])
def test_restore_leaves_flattened_values_in_the_stored_document(registry: Any, kind: str) -> None:
    """atom-db's restore pops ``__py__`` from the state: a read shares nothing it pops."""
    if kind == "python step":
        register_step(SetHolder, 1, 2, lambda doc: doc.__setitem__("name", doc.get("title")))
    else:
        register_step(SetHolder, 1, 2, operations=[ops.rename_field("title", "name")])
    state = {
        "_id": ObjectId(),
        "__version__": "1",
        "title": "t",
        "labels": {"__py__": "set", "values": [1, 2]},
        "extra": {"inner": [{"__py__": "set", "values": [3]}]},
    }
    before = copy.deepcopy(state)
    obj = SetHolder()
    run(obj.__restorestate__(state))
    assert state == before
    assert set(obj.labels) == {1, 2} and obj.extra == {"inner": [{3}]}
    again = SetHolder()
    run(again.__restorestate__(state))
    assert set(again.labels) == {1, 2}


def test_a_lazy_copy_a_step_makes_itself_works() -> None:
    """``type(doc)(...)`` and ``doc.fromkeys`` make a LazyCopy sharing nothing stored."""

    def rebuild(doc: dict[str, Any]) -> dict[str, Any]:
        made = type(doc)(doc)
        made["a"]["x"].append(2)
        keys = doc.fromkeys(["k"])
        keys["k"] = [1]
        made["k"] = keys["k"]
        return made

    source = {"_id": 1, "__version__": "1", "a": {"x": [1]}}
    before = copy.deepcopy(source)
    chain = compile_read([define_step("lazy.M", "1", "2", rebuild)])
    got = run(chain(source))
    assert source == before
    expected = {**rebuild(copy.deepcopy(before)), "__version__": "2"}
    assert got == expected == {**before, "__version__": "2", "a": {"x": [1, 2]}, "k": [1]}


def _holds_py_reference(value: Any) -> bool:
    """The reference: a dict with ``__py__`` anywhere inside, found by recursion."""
    if isinstance(value, dict):
        return "__py__" in value or any(_holds_py_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_py_reference(v) for v in value)
    return False


nested_values = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=3), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "__py__", "values"]), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(st.sampled_from(["x", "y", "z", "_id"]), nested_values, max_size=4))
def test_own_flattened_copies_exactly_the_shared_values_holding_a_flattened_one(
    source: dict[str, Any],
) -> None:
    """`own_flattened` copies a nested value shared with the stored document when,
    and only when, it holds a ``__py__`` dict at some depth; the rest stays shared."""
    from atomdb_migrate.core.documents import own_flattened

    doc = dict(source)
    own_flattened(doc, source)
    for key, value in source.items():
        copied = doc[key] is not value
        assert copied == (isinstance(value, dict | list) and _holds_py_reference(value)), key
        assert doc[key] == value


class Related(NoSQLModel):
    label = Str()


def _own_unflatten(value: Any, scope: Any) -> Any:
    if isinstance(value, dict):
        value.pop("__py__", None)  # a custom function may change anything
    return value


class ManyMembers(VersionedModel):
    """One member of each kind atom-db restores one way or the other."""

    __version__ = 2
    __on_error__ = "ignore"  # a value of the wrong type must not stop the walk
    text = Str()
    number = Int()
    ratio = Float()
    flag = Bool()
    words = List(str)
    records = List(dict)
    anything = List()
    mapping = Dict()
    typed_mapping = Dict(str, int)
    labels = Set()
    related = Typed(Related)
    instance = Instance(object)
    coerced = Coerced(int)
    choice = Enum("a", "b")
    custom = Str().tag(unflatten=_own_unflatten)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_restore_changes_no_field_left_out_of_restored_fields(data: Any) -> None:
    """`restored_fields` leaves out only fields atom-db's generated restore assigns as
    stored: given a flattened value (``__py__``) under every field, the restore
    changes none of those left out, and does change one it names."""
    from atomdb_migrate.model.reads import restored_fields

    names = [n for n in ManyMembers.members() if n not in ("__ref__", "__restored__")]
    flattened = st.sampled_from(
        [
            {"__py__": "set", "values": [1, 2]},
            [{"__py__": "set", "values": [3]}],
            {"inner": {"__py__": "tuple", "values": [4]}},
        ]
    )
    state = {n: copy.deepcopy(data.draw(flattened, label=n)) for n in names}
    state["_id"] = ObjectId()
    before = copy.deepcopy(state)
    run(ManyMembers().__generated_restorestate__(state, None))
    restored = restored_fields(ManyMembers)
    changed = {n for n in names if state[n] != before[n]}
    assert not changed - restored, changed - restored
    assert {"text", "number", "words"}.isdisjoint(restored)
    assert {"mapping", "labels", "related", "custom"} <= restored
