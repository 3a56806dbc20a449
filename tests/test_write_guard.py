"""The narrow write guard, proven against a real server.

The runner's conditional write matches a document's ``_id``, its version as
read, and the fields its steps looked at or wrote, as read. Hypothesis draws
documents, a chain of steps (Python steps reading and writing some fields,
and declarative operations), and concurrent writes that land between the
runner's read and its write: a field set or removed, the whole document
replaced by old code, or saved by new code at the head version. Whatever
they touch:

- every document ends as the steps applied to the last concurrent write
  (the lazy path, run on the document as the concurrent write left it);
- so no concurrent write is lost: a change to a field the steps never
  looked at is kept without a re-read, and a change to one they did look at
  makes the runner read the document again.

"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate import runner as runner_module
from atomdb_migrate.mongo import is_mongomock
from atomdb_migrate.runner import Runner, RunOptions
from atomdb_migrate.writes import same_value

FIELDS = ("a", "b", "c", "d")
value = st.one_of(st.integers(-3, 3), st.text("xyz", max_size=2), st.none())


class Guarded(VersionedModel):
    __model__ = "guard.Guarded"
    __version__ = 3


def python_step(reads: tuple[str, ...], writes: str, removes: str | None) -> Any:
    def step(doc: dict[str, Any]) -> None:
        seen = [str(doc.get(name)) for name in reads]
        doc[writes] = "|".join(seen)
        if removes is not None:
            doc.pop(removes, None)

    return step


python_steps = st.builds(
    python_step,
    st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True).map(tuple),
    st.sampled_from(FIELDS),
    st.one_of(st.none(), st.sampled_from(FIELDS)),
)
operation_steps = st.one_of(
    st.builds(ops.set_default_where_missing, st.sampled_from(FIELDS), value),
    st.builds(ops.add_field, st.sampled_from(FIELDS), value),
    st.sampled_from(FIELDS).flatmap(
        lambda a: st.sampled_from([f for f in FIELDS if f != a]).map(
            lambda b: ops.rename_field(a, b)
        )
    ),
)

concurrent = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), value),
    st.tuples(st.just("unset"), st.sampled_from(FIELDS)),
    st.tuples(st.just("replace"), st.dictionaries(st.sampled_from(FIELDS), value, max_size=3)),
    st.tuples(st.just("save-new"), st.dictionaries(st.sampled_from(FIELDS), value, max_size=3)),
)


def canon(doc: dict[str, Any]) -> dict[str, Any]:
    """A document with its top-level fields in name order (updates append new ones)."""
    return dict(sorted(doc.items()))


@pytest.fixture
def server_db(db: Any) -> Any:
    if is_mongomock(db):
        pytest.skip("the guard's interleaving needs a real server; mongomock runs the same code")
    return db


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    docs=st.lists(
        st.dictionaries(st.sampled_from(FIELDS), value, max_size=4), min_size=1, max_size=5
    ),
    first=st.one_of(python_steps, operation_steps),
    second=st.one_of(python_steps, operation_steps),
    meddling=st.lists(st.tuples(st.integers(0, 4), concurrent), max_size=4),
    batch_size=st.integers(1, 4),
)
async def test_every_document_ends_as_its_steps_applied_to_the_last_concurrent_write(
    server_db: Any,
    monkeypatch: pytest.MonkeyPatch,
    docs: list[dict[str, Any]],
    first: Any,
    second: Any,
    meddling: list[tuple[int, tuple[Any, ...]]],
    batch_size: int,
) -> None:
    collection = server_db[Guarded.__model__]
    await collection.delete_many({})
    await collection.insert_many(
        [{"_id": i, **doc, "__version__": "1"} for i, doc in enumerate(docs)]
    )
    expected: dict[int, dict[str, Any]] = {}
    pending = list(meddling)
    real_bulk_update = runner_module.bulk_update

    async def meddle_then_write(target: Any, writes: list[Any]) -> Any:
        # Between the runner's read and its write: another process writes.
        for _id, change in list(pending):
            if _id >= len(docs) or not any(q["_id"] == _id for q, _ in writes):
                continue
            pending.remove((_id, change))
            kind, *args = change
            if kind == "set":
                await target.update_one({"_id": _id}, {"$set": {args[0]: args[1]}})
            elif kind == "unset":
                await target.update_one({"_id": _id}, {"$unset": {args[0]: ""}})
            else:
                stored = await target.find_one({"_id": _id})
                version = "3" if kind == "save-new" else stored.get("__version__")
                await target.replace_one({"_id": _id}, {**args[0], "__version__": version})
            expected[_id] = await Guarded.upgrade_state(await target.find_one({"_id": _id}))
        return await real_bulk_update(target, writes)

    with MigrationRegistry.instance().isolated():
        for start, step in ((1, first), (2, second)):
            if isinstance(step, ops.Operation):
                register_step(Guarded, start, start + 1, operations=[step])
            else:
                register_step(Guarded, start, start + 1, step)
        lazy = {d["_id"]: await Guarded.upgrade_state(d) async for d in collection.find({})}
        monkeypatch.setattr(runner_module, "bulk_update", meddle_then_write)
        report = await Runner(server_db, RunOptions(batch_size=batch_size)).upgrade(Guarded)
        monkeypatch.undo()
    assert report.skipped == 0, "each document changed once at most: one re-read suffices"
    final = {d["_id"]: d async for d in collection.find({})}
    for _id, doc in final.items():
        want = expected.get(_id, lazy[_id])
        assert same_value(canon(doc), canon(want)), (
            f"_id {_id}: stored {doc!r}, expected {want!r}; steps {first!r}, {second!r}; "
            f"writes {meddling!r}"
        )
