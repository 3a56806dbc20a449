"""A rolling deploy with nothing refused, proven against SecantusDB.

Hypothesis draws a chain of two steps of declarative operations with an
inverse (renames and moves between top-level and nested paths, copies,
added fields, removals with a default), documents stored at versions 1 to
3, and a sequence of actions interleaved at random:

- the old code (version 1, ``__on_newer__ = "downgrade"``, the chain
  shipped) reads a document into one of two objects, or edits an object's
  fields and saves it, or inserts a new object;
- the new code (version 3) reads a document, or edits and saves its object;
- ``upgrade`` runs.

An oracle keeps each document as it must be stored. It knows the chain
only through the operations' own ``apply`` and ``inverse`` (trusted here,
tested elsewhere): which old field each newer field holds (a label sent
forward through the chain), and what the old code reads (the document
taken back). An old save of an object read from a newer document must
write exactly its changes, each to every field that holds it in the newer
shape, at the stored version; it must be refused with `NewerDocumentError`
naming a field and a step exactly where a changed field does not come back
through the chain (the newer version removed it), and fail with
`ConflictError` exactly where a field it changed was changed by another
writer since its object read it. After every action the stored documents
equal the oracle's, and no stored version ever goes down; at the end, an
upgrade leaves them equal to the oracle's, upgraded.

Values that Python finds equal and BSON stores apart (``1``, ``1.0``,
``True``, ``Int64(1)``, ``Decimal128("1")``) are drawn too, and compared as
BSON stores them.

``ROLLING_EXAMPLES`` sets the number of examples (default 60).

"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from atom.api import Value
from bson import Decimal128, Int64
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.core.bson_rules import same_value
from atomdb_migrate.core.documents import copy_document, copy_value
from atomdb_migrate.driver.mongo import is_mongomock
from atomdb_migrate.engine.runner import Runner
from atomdb_migrate.exceptions import ConflictError, NewerDocumentError
from atomdb_migrate.operations.base import Operation
from atomdb_migrate.operations.paths import MISSING, get_path, set_path

NAME = "rolling.Prop"

#: The old code's fields (version 1): top-level, and inside the document ``m``.
V1_LEAVES = ("a", "b", "c", "m.x", "m.y")

#: The values documents, edits and operations hold: some Python finds equal
#: that BSON stores apart (1, 1.0, True; [1, 2] and [1.0, 2]).
VALUES = [0, 1, 2, "x", "y", None, [1, 2], True, 1.0, [1.0, 2]]

#: The values documents and edits hold besides (operations take no BSON types).
DOC_VALUES = [*VALUES, Int64(1), Decimal128("1")]

#: The keys compared apart from the fields.
OWN = ("_id", "__ref__")


# ---------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------
@st.composite
def chains(draw: st.DrawFn) -> list[list[Operation]]:
    """Two steps of one or two operations each, on the leaves there at each version."""
    leaves = list(V1_LEAVES)
    fresh = itertools.count()
    chain: list[list[Operation]] = []
    for _ in range(2):
        step: list[Operation] = []
        for _ in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["rename", "move", "copy", "add", "remove"]))
            nested = draw(st.booleans())
            new = f"m.n{next(fresh)}" if nested else f"f{next(fresh)}"
            if kind == "add":
                step.append(ops.add_field(new, draw(st.sampled_from(VALUES))))
                leaves.append(new)
                continue
            if not leaves:
                continue
            src = draw(st.sampled_from(leaves))
            if kind == "remove":
                step.append(ops.remove_field(src, draw(st.sampled_from(VALUES))))
                leaves.remove(src)
            elif kind == "copy":
                step.append(ops.copy_field(src, new))
                leaves.append(new)
            elif kind == "rename":
                step.append(ops.rename_field(src, new.rpartition(".")[2]))
                leaves[leaves.index(src)] = ".".join([*src.split(".")[:-1], new.split(".")[-1]])
            else:
                step.append(ops.move_field(src, new))
                leaves[leaves.index(src)] = new
        chain.append(step)
    return chain


def leaf_values() -> Any:
    return st.fixed_dictionaries({leaf: st.sampled_from(DOC_VALUES) for leaf in V1_LEAVES})


ACTIONS = st.one_of(
    st.tuples(st.just("old_read"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(
        st.just("old_save"),
        st.integers(0, 1),
        st.lists(
            st.tuples(st.sampled_from(V1_LEAVES), st.sampled_from(DOC_VALUES)),
            min_size=1,
            max_size=2,
        ),
    ),
    st.tuples(st.just("new_read"), st.integers(0, 2)),
    st.tuples(
        st.just("new_save"),
        st.lists(
            st.tuples(st.integers(0, 20), st.sampled_from(DOC_VALUES)), min_size=1, max_size=2
        ),
    ),
    st.tuples(st.just("upgrade")),
    st.tuples(st.just("old_insert"), leaf_values()),
)


# ---------------------------------------------------------------------------
# The oracle: the chain through the operations' own apply and inverse
# ---------------------------------------------------------------------------
def nest(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"m": {}}
    for path, value in flat.items():
        set_path(doc, tuple(path.split(".")), value)
    return doc


def leaves_of(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in doc.items():
        if not prefix and key in (*OWN, "__model__", "__version__"):
            continue
        if isinstance(value, dict):
            found.update(leaves_of(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def up(chain: list[list[Operation]], doc: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    doc = copy_document(doc)
    for step in chain[start - 1 : end - 1]:
        for op in step:
            op.apply(doc)
    doc["__version__"] = str(end)
    return doc


def down(chain: list[list[Operation]], doc: dict[str, Any], start: int) -> dict[str, Any]:
    doc = copy_document(doc)
    for step in reversed(chain[: start - 1]):
        for op in reversed(step):
            op.inverse().apply(doc)
    doc["__version__"] = "1"
    return doc


class Oracle:
    """The documents as they must be stored, and what each version's fields hold."""

    def __init__(self, chain: list[list[Operation]]) -> None:
        self.chain = chain
        self.docs: dict[Any, dict[str, Any]] = {}
        labels = nest({leaf: f"L:{leaf}" for leaf in V1_LEAVES})
        #: For each version, the newer fields holding each old field, and the old
        #: fields that come back through the chain (their change can be mapped).
        self.targets: dict[int, dict[str, list[str]]] = {}
        self.mapped: dict[int, set[str]] = {}
        for version in (1, 2, 3):
            after = up(chain, {**labels, "__version__": "1"}, 1, version)
            held = leaves_of(after)
            self.targets[version] = {
                leaf: [q for q, v in held.items() if v == f"L:{leaf}"] for leaf in V1_LEAVES
            }
            back = leaves_of(down(chain, after, version))
            self.mapped[version] = {leaf for leaf in V1_LEAVES if back.get(leaf) == f"L:{leaf}"}
        self.v3_leaves = sorted(leaves_of(up(chain, {**labels, "__version__": "1"}, 1, 3)))

    def version(self, _id: Any) -> int:
        return int(self.docs[_id]["__version__"])

    def old_view(self, _id: Any) -> dict[str, Any]:
        """The leaves the old code reads of a document."""
        return leaves_of(down(self.chain, self.docs[_id], self.version(_id)))

    def new_view(self, _id: Any) -> dict[str, Any]:
        return up(self.chain, self.docs[_id], self.version(_id), 3)


def differ(a: Any, b: Any) -> bool:
    """Whether two values are stored apart, as BSON stores them (1 and 1.0 are)."""
    return not same_value(a, b)


def _number(value: Any) -> Any:
    """A number's value (None: not a number; a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Int64, Decimal128)):
        return None
    return value.to_decimal() if isinstance(value, Decimal128) else value


def by_value(a: Any, b: Any) -> bool:
    """Whether two values are equal as the server compares them inside a document
    or an array: numbers by value whatever their type, everything else exactly."""
    if _number(a) is not None and _number(b) is not None:
        return bool(_number(a) == _number(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(by_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(by_value(a[k], b[k]) for k in a)
    return same_value(a, b)


def guard_sees(now: Any, read: Any, nested: bool) -> bool:
    """Whether the write guard tells a stored value from the value read: a top-level
    scalar by value and BSON type; numbers inside arrays and embedded documents
    (so at a nested path) by value alone (the guard's documented limit,
    `core.writes.unchanged_filter`)."""
    if not nested and not isinstance(read, (list, dict)):
        return differ(now, read)
    if isinstance(read, (list, dict)) and type(now) is not type(read):
        return True
    return not by_value(now, read)


# ---------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------
def models(chain: list[list[Operation]], v3_leaves: list[str]) -> tuple[Any, Any]:
    """The old code's model and the new code's, made for the drawn chain."""
    old_fields = {leaf.split(".")[0]: Value() for leaf in V1_LEAVES}
    new_fields = {leaf.split(".")[0]: Value() for leaf in v3_leaves}
    new_fields.setdefault("m", Value())
    old = type(
        "Old",
        (VersionedModel,),
        {"__model__": NAME, "__version__": 1, "__on_newer__": "downgrade", **old_fields},
    )
    new = type("New", (VersionedModel,), {"__model__": NAME, "__version__": 3, **new_fields})
    return old, new


SETTINGS = settings(
    max_examples=int(os.environ.get("ROLLING_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(
    chain=chains(),
    docs=st.lists(st.tuples(leaf_values(), st.integers(1, 3)), min_size=1, max_size=3),
    actions=st.lists(ACTIONS, min_size=1, max_size=12),
)
# New code wrote back, as an int, a nested number an old save made a double: a
# type-only change inside a document, which the guard does not see (written).
@example(
    chain=[[ops.rename_field("a", "f0")], [ops.rename_field("f0", "f1")]],
    docs=[({"a": 0, "b": 0, "c": 0, "m.x": 0, "m.y": 1}, 3)],
    actions=[
        ("new_read", 0),
        ("old_save", 0, [("m.y", 1.0)]),
        ("new_save", [(0, 0)]),
        ("old_save", 0, [("m.y", 0)]),
    ],
)
# A save that changed nothing read the document again; a later save of a field
# new code changed meanwhile (to the value it then writes) is a conflict.
@example(
    chain=[[ops.rename_field("a", "f0")], [ops.copy_field("f0", "f1")]],
    docs=[({"a": 0, "b": 0, "c": 0, "m.x": 0, "m.y": 0}, 1)],
    actions=[
        ("old_read", 0, 1),
        ("new_save", [(17, 1)]),
        ("old_save", 1, [("a", 0)]),
        ("old_save", 1, [("m.y", 1)]),
    ],
)
# A change copied on the way, and the copy removed by a later step: still mapped.
@example(
    chain=[[ops.copy_field("a", "f0"), ops.copy_field("m.y", "f1")], [ops.remove_field("f1", 0)]],
    docs=[({"a": 0, "b": 0, "c": 0, "m.x": 0, "m.y": 0}, 3)],
    actions=[("old_save", 0, [("m.y", 1)])],
)
async def test_old_code_s_saves_of_newer_documents_land_through_the_steps(
    db: Any,
    chain: list[list[Operation]],
    docs: list[tuple[dict[str, Any], int]],
    actions: list[Any],
) -> None:
    if is_mongomock(db):
        pytest.skip("compared on SecantusDB (BSON types, conditional writes as a server runs them)")
    collection = db[NAME]
    await collection.delete_many({})
    with MigrationRegistry.instance().isolated():
        for start, step in enumerate(chain, 1):
            register_step(NAME, start, start + 1, operations=step)
        await Run(db, chain).run(docs, actions)


async def fresh(model: Any, doc: dict[str, Any]) -> Any:
    """An object restored from `doc`, not the one atom-db caches (another process's)."""
    obj = model.__new__(model)
    await obj.__restorestate__(doc)
    return obj


class Run:
    """One example: the actions on the server, beside the oracle."""

    def __init__(self, db: Any, chain: list[list[Operation]]) -> None:
        self.db = db
        self.oracle = Oracle(chain)
        self.old, self.new = models(chain, self.oracle.v3_leaves)
        self.ids: list[Any] = []
        #: The old code's objects: (object, its _id, the leaves it was restored from).
        self.old_slots: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
        self.new_slot: tuple[Any, Any, dict[str, Any]] | None = None
        self.versions: dict[Any, int] = {}

    async def run(self, docs: list[tuple[dict[str, Any], int]], actions: list[Any]) -> None:
        for flat, version in docs:
            doc = up(self.oracle.chain, {**nest(flat), "__model__": NAME}, 1, version)
            _id = (await self.db[NAME].insert_one(copy_document(doc))).inserted_id
            self.ids.append(_id)
            self.oracle.docs[_id] = {**doc, "_id": _id}
        for action in actions:
            await getattr(self, action[0])(*action[1:])
            await self.check()
        await Runner(self.db).upgrade(self.new)
        for _id in self.ids:
            self.oracle.docs[_id] = self.oracle.new_view(_id)
        await self.check()

    async def check(self) -> None:
        for _id in self.ids:
            stored = await self.db[NAME].find_one({"_id": _id})
            assert stored is not None
            expected = self.oracle.docs[_id]
            got = {k: v for k, v in stored.items() if k not in OWN}
            want = {k: v for k, v in expected.items() if k not in OWN}
            assert got == want, f"document {_id}:\nstored   {got!r}\nexpected {want!r}"
            version = int(stored["__version__"])
            assert version >= self.versions.get(_id, 0), "a stored version went down"
            self.versions[_id] = version

    async def old_read(self, index: int, slot: int) -> None:
        _id = self.ids[index % len(self.ids)]
        obj = await fresh(self.old, await self.db[NAME].find_one({"_id": _id}))
        self.old_slots[slot] = (obj, _id, self.oracle.old_view(_id))

    async def old_insert(self, flat: dict[str, Any]) -> None:
        obj = self.old(**nest(flat))
        await obj.save()
        doc = {**nest(flat), "__model__": NAME, "__version__": "1", "_id": obj._id}
        self.ids.append(obj._id)
        self.oracle.docs[obj._id] = doc
        self.old_slots[len(self.old_slots) % 2] = (obj, obj._id, leaves_of(doc))

    async def old_save(self, slot: int, edits: list[tuple[str, Any]]) -> None:
        if slot not in self.old_slots:
            await self.old_read(slot, slot)  # read first
        obj, _id, basis = self.old_slots[slot]
        state = {**leaves_of(obj.__getstate__())}
        for leaf, value in edits:
            state[leaf] = value
            top = leaf.split(".")[0]
            setattr(obj, top, nest({k: v for k, v in state.items() if k.split(".")[0] == top})[top])
        changed = {leaf: state[leaf] for leaf in V1_LEAVES if differ(state[leaf], basis[leaf])}
        expected = self.expect(_id, basis, changed)
        try:
            await obj.save()
        except NewerDocumentError as exc:
            assert "refused" in expected, f"refused: {exc}; expected {expected}"
            assert exc.field and exc.step, exc
            event("old save: refused, naming field and step")
            return
        except ConflictError as exc:
            assert "conflict" in expected, f"conflict: {exc}; expected {expected}"
            event("old save: conflict")
            return
        assert expected == {"written"}, f"written; expected {expected}"
        self.apply_old(_id, state, changed)
        self.old_slots[slot] = (obj, _id, {**basis, **changed})

    def expect(self, _id: Any, basis: dict[str, Any], changed: dict[str, Any]) -> set[str]:
        """What an old save must do: be written, refused, or conflict (either, where both)."""
        version = self.oracle.version(_id)
        if version == 1:
            return {"written"}  # replaced at the code's version, as ever
        event(f"old save of a document stored at {version}")
        outcome = set()
        if any(leaf not in self.oracle.mapped[version] for leaf in changed):
            outcome.add("refused")
        now = self.oracle.old_view(_id)
        targets = self.oracle.targets[version]
        for leaf in changed:
            nested = any("." in t for t in targets[leaf])
            if guard_sees(now[leaf], basis[leaf], nested):
                outcome.add("conflict")
            elif differ(now[leaf], basis[leaf]):
                event("a type-only change inside a document: not seen by the guard")
        return outcome or {"written"}

    def apply_old(self, _id: Any, state: dict[str, Any], changed: dict[str, Any]) -> None:
        doc = self.oracle.docs[_id]
        version = self.oracle.version(_id)
        if version == 1:
            self.oracle.docs[_id] = {
                **nest(state),
                "__model__": NAME,
                "__version__": "1",
                "_id": _id,
            }
            return
        event("old save written through the steps" if changed else "old save: nothing changed")
        for leaf, value in changed.items():
            for target in self.oracle.targets[version][leaf]:
                set_path(doc, tuple(target.split(".")), copy_value(value))

    async def new_read(self, index: int) -> None:
        _id = self.ids[index % len(self.ids)]
        obj = await fresh(self.new, await self.db[NAME].find_one({"_id": _id}))
        self.new_slot = (obj, _id, leaves_of(self.oracle.new_view(_id)))

    async def new_save(self, edits: list[tuple[int, Any]]) -> None:
        if self.new_slot is None:
            await self.new_read(len(edits))  # read first
        assert self.new_slot is not None
        obj, _id, state = self.new_slot
        leaves = self.oracle.v3_leaves
        for index, value in edits:
            leaf = leaves[index % len(leaves)]
            state[leaf] = value
            top = leaf.split(".")[0]
            setattr(obj, top, nest({k: v for k, v in state.items() if k.split(".")[0] == top})[top])
        await obj.save()
        self.oracle.docs[_id] = {**nest(state), "__model__": NAME, "__version__": "3", "_id": _id}
        event("new save")

    async def upgrade(self) -> None:
        await Runner(self.db).upgrade(self.new)
        for _id in self.ids:
            self.oracle.docs[_id] = self.oracle.new_view(_id)
        event("upgrade between")


def test_the_oracle_knows_a_removed_field_cannot_be_mapped() -> None:
    oracle = Oracle([[ops.rename_field("a", "z")], [ops.remove_field("b", 0)]])
    assert oracle.targets[3]["a"] == ["z"] and oracle.targets[3]["b"] == []
    assert "a" in oracle.mapped[3] and "b" not in oracle.mapped[3]
    assert get_path({"m": {}}, ("m", "x")) is MISSING
