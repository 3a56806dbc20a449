"""Version-aware filters, proven against a server: the property the issue asks for.

Hypothesis draws a chain of three steps of random declarative operations
(renames, moves and copies between top-level and nested paths, added
fields and defaults, lists of lists among them, removals, conversions),
Python steps that declare what they change, documents of random shapes
(ObjectIds, bytes, Timestamps, lists of lists, values a conversion fails
on) stored at random versions (written as strings, ints and doubles, or
with no ``__version__`` at all), and random filters of the grammar on the
current fields. For each filter:

- `version_filter` run on the mixed collection selects exactly the ``_id``s
  the original filter selects on a copy that ``atomdb-migrate upgrade``
  (the `Runner`) took to the head; a document a conversion fails on is
  left by the Runner, and its copy is the chain applied with the failing
  conversions leaving their values (what the translation promises);
- or it raises `UntranslatableQueryError`, and the refusal is counted.

A second property rolls the code back: the model is at version 2 with
``__on_newer__ = "downgrade"`` and the chain's third step shipped;
documents stored at 3 are compared as the model reads them (through the
downgrades).

``QUERY_EXAMPLES`` sets the examples of each property (default 150).

"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    MigrateError,
    MigrationRegistry,
    UntranslatableQueryError,
    VersionedModel,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.driver.mongo import is_mongomock, to_list
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.operations.rename_model import RenameModel, rename_references
from atomdb_migrate.ops import ConversionError, Convert


class Mixed(VersionedModel):
    __model__ = "queries.Mixed"
    __version__ = 3


#: The paths operations and filters use: top level, and inside the document ``m``.
PATHS = ("a", "b", "c", "m.x", "m.y")


class Rolled(VersionedModel):
    """The code rolled back to version 2, reading documents stored at 3 through downgrades."""

    __model__ = "queries.Rolled"
    __version__ = 2
    __on_newer__ = "downgrade"


#: The model's former name, which a ``rename_model`` step drawn in a chain replaces.
OLD_NAME = "queries.OldMixed"

#: What a document holds of model names: its own, and references at any depth.
REFERENCES: list[Any] = [
    OLD_NAME,
    "queries.Mixed",
    {"__model__": OLD_NAME},
    {"__model__": "queries.Mixed"},
    [{"__model__": OLD_NAME}, {"__model__": "queries.Other"}],
    [[{"__model__": OLD_NAME}]],
    [{"__model__": "queries.Other"}],
]

#: Conditions on a model name.
NAME_CONDITIONS: list[Any] = [
    OLD_NAME,
    "queries.Mixed",
    {"$ne": "queries.Mixed"},
    {"$regex": "^queries.Old"},
    {"$not": {"$regex": "^queries.O"}},
    {"$in": ["x", re.compile("Mixed$")]},
    {"$nin": [re.compile("^queries.Old")]},
    {"$lt": "queries.P"},
    {"$gte": OLD_NAME},
    {"$not": {"$gt": "queries.N"}},
    {"$exists": True},
]

#: Values no conversion makes, which a conversion fails on (kept as stored).
OTHER_KINDS = [ObjectId("0123456789abcdef01234567"), b"\x01", Timestamp(5, 1)]

#: Scalars for the real servers; mongomock holds ``1 == True`` as Python does, so it gets no bools.
SCALARS = [0, 1, 2, -1, 1.0, 2.5, -0.5, True, False, None, "1", "2", "x", "ab", "", Int64(1)]
MOCK_SCALARS = [v for v in SCALARS if not isinstance(v, bool)]
SCALARS += OTHER_KINDS
TYPES = ["string", "number", "bool", "null", "object", "array"]
MOCK_TYPES = ["string", "number", "object", "array"]  # mongomock has no $type "null"


class PythonStep:
    """A Python step after a step's operations: counts ``b``'s characters into ``c``.

    It declares ``changes = ["c"]``: conditions on other fields pass
    through it; those on ``c`` are refused.

    """

    changes = ("c",)

    def __call__(self, doc: dict[str, Any]) -> None:
        doc["c"] = len(str(doc.get("b")))

    def __repr__(self) -> str:
        return "PythonStep()"


def _apart(a: str, b: str) -> bool:
    pa, pb = a.split("."), b.split(".")
    shortest = min(len(pa), len(pb))
    return pa[:shortest] != pb[:shortest]


def chains_documents_and_filters(mock: bool, rollback: bool = False) -> Any:
    """The strategies: a chain of three steps, stored documents, filters.

    With `rollback`, the third step is made of operations with an inverse
    (renames, moves, copies, added fields), so documents stored at 3 have a
    way back to 2, and documents are stored at 3 more often.

    """
    scalars = st.sampled_from(MOCK_SCALARS if mock else SCALARS)
    nested = st.lists(st.lists(st.sampled_from([0, 1, 2, "x"]), max_size=2), min_size=1, max_size=2)
    values = st.one_of(
        scalars,
        scalars,
        st.lists(st.sampled_from([0, 1, 2, "x", None]), max_size=2),
        st.fixed_dictionaries({"x": scalars}),
        # (mongomock looks into a list inside the list; the servers do not)
        *([] if mock else [nested]),
    )
    # mongomock does not match a missing value with {"$gte": None}, as MongoDB does.
    ordered = scalars.filter(
        lambda v: not isinstance(v, (bytes, Timestamp)) and (v is not None or not mock)
    )
    embedded = st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2)
    # mongomock does not look through a scalar or a list on a dotted path as
    # MongoDB does ({"m": 0} and {"m.x": {"$not": ...}}): it gets documents only.
    inner = (
        embedded
        if mock
        else st.one_of(
            embedded, embedded, values, st.lists(st.fixed_dictionaries({"x": scalars}), max_size=2)
        )
    )
    documents = st.dictionaries(st.sampled_from(["a", "b", "c", "m"]), values, max_size=4).flatmap(
        lambda d: inner.map(lambda m: {**d, "m": m}) if "m" in d else st.just(d)
    )
    if not mock:  # references to the model under its former name, at any depth
        documents = st.tuples(
            documents,
            st.dictionaries(
                st.sampled_from(["r", "__model__"]), st.sampled_from(REFERENCES), max_size=2
            ),
        ).map(lambda pair: {**pair[0], **pair[1]})
    # An operation's default is what atom-db stores as given (no ObjectId, bytes, Timestamp).
    defaults = scalars.filter(lambda v: not any(v is o for o in OTHER_KINDS))
    pairs = st.sampled_from([(a, b) for a in PATHS for b in PATHS if _apart(a, b)])
    choices = [
        pairs.map(lambda p: ops.rename_field(p[0], p[1])),
        pairs.map(lambda p: ops.move_field(*p)),
        pairs.map(lambda p: ops.copy_field(*p)),
        st.builds(ops.add_field, st.sampled_from(PATHS), defaults),
        st.builds(ops.set_default_where_missing, st.sampled_from(PATHS), defaults),
        st.builds(ops.add_field, st.sampled_from(PATHS), st.fixed_dictionaries({"x": defaults})),
        *([] if mock else [st.builds(ops.add_field, st.sampled_from(PATHS), nested)]),
        st.builds(ops.remove_field, st.sampled_from(PATHS)),
    ]
    if not mock:  # mongomock evaluates no $expr with $convert: conversions run on servers
        conversions = st.sampled_from(["int", "str", "float", "bool"])
        choices.append(st.builds(ops.convert, st.sampled_from(PATHS), conversions))
        choices.append(st.just(ops.rename_model(OLD_NAME, Mixed.__model__)))
    step = st.one_of(
        st.lists(st.one_of(*choices), min_size=1, max_size=2),
        st.lists(st.one_of(*choices), max_size=1).map(lambda o: [*o, PythonStep()]),
    )
    chain = st.lists(step, min_size=3, max_size=3)
    if rollback:
        invertible = st.one_of(*choices[:4], choices[6])  # renames, moves, copies, add_field
        chain = st.tuples(
            st.lists(step, min_size=2, max_size=2), st.lists(invertible, min_size=1, max_size=2)
        ).map(lambda pair: [*pair[0], pair[1]])
    # How a document's version is stored: as this package writes it, and as a shell might.
    versions = st.sampled_from([None, "1", "2", "3", 1, 2.0, 3, "3"])
    if rollback:
        versions = st.one_of(versions, st.sampled_from(["3", 3, 3.0]))
    paths = st.sampled_from((*PATHS, "m", "_id"))
    conditions = st.one_of(
        scalars,
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$eq", "$ne"]), values),
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
        st.builds(
            lambda op, v: {op: v}, st.sampled_from(["$in", "$nin"]), st.lists(values, max_size=3)
        ),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
        st.builds(lambda p: {"$regex": p}, st.sampled_from(["^a", "b", "^$", "1", "^[0-9]+$"])),
        st.builds(re.compile, st.sampled_from(["^a", "x"])),
        st.builds(lambda v: {"$not": {"$gt": v}}, ordered),
        st.builds(lambda v: {"$not": {"$in": [v]}}, scalars),
        st.builds(lambda v: {"$elemMatch": {"$gte": v}}, ordered),
        st.builds(lambda v: {"$elemMatch": {"x": v}}, scalars),
        st.sampled_from(
            [{"$elemMatch": {"$exists": True}}]
            if mock
            else [
                {"$elemMatch": {"$type": "array"}},
                {"$elemMatch": {"$eq": [1, 2]}},
                {"$elemMatch": {"$exists": True}},
                {"$elemMatch": {"$ne": 1}},
                {"$elemMatch": {}},
            ]
        ),
        st.builds(lambda t: {"$type": t}, st.sampled_from(MOCK_TYPES if mock else TYPES)),
        st.builds(lambda a, b: {"$gt": a, "$lt": b}, st.integers(-1, 1), st.integers(0, 3)),
    )
    field_filters = st.builds(lambda p, c: {p: c}, paths, conditions)
    if not mock:
        on_names = st.builds(
            lambda p, c: {p: c},
            st.sampled_from(["__model__", "r.__model__", "r.0.__model__", "r.0.0.__model__"]),
            st.sampled_from(NAME_CONDITIONS),
        )
        field_filters = st.one_of(field_filters, on_names)
    filters = st.recursive(
        field_filters,
        lambda children: st.one_of(
            st.builds(
                lambda op, fs: {op: fs},
                st.sampled_from(["$and", "$or", "$nor"]),
                st.lists(children, min_size=1, max_size=3),
            ),
            st.builds(lambda a, b: {**a, **b}, field_filters, field_filters),
        ),
        max_leaves=4,
    )
    return {
        "chain": chain,
        "docs": st.lists(st.tuples(documents, versions), min_size=1, max_size=8),
        "queries": st.lists(filters, min_size=1, max_size=6),
    }


SETTINGS = settings(
    max_examples=int(os.environ.get("QUERY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(**chains_documents_and_filters(mock=False))
# A failing conversion after a Python step, in a pass of two server steps.
@example(
    chain=[
        [PythonStep()],
        [ops.rename_field("a", "b")],
        [ops.convert("m.x", "int"), ops.remove_field("m.x")],
    ],
    docs=[({"m": {"x": "x"}}, None), ({"m": {"x": "1"}, "a": 1}, None)],
    queries=[{"m.x": {"$exists": True}}, {"b": 1}],
)
# A reference to a renamed model in a document stored after the rename, which a
# conversion then fails: the upgrade rewrote the reference all the same.
@example(
    chain=[
        [ops.rename_model("queries.OldMixed", "queries.Mixed"), ops.rename_field("c", "m.y")],
        [PythonStep()],
        [ops.convert("a", "int"), ops.rename_field("a", "b")],
    ],
    docs=[
        ({"a": 0, "r": "queries.OldMixed"}, None),
        ({"a": [0, 0], "b": 0, "c": 0, "r": {"__model__": "queries.OldMixed"}}, "1"),
        ({"b": "ab"}, "3"),
    ],
    queries=[{"r.__model__": "queries.OldMixed"}, {"r.__model__": "queries.Mixed"}],
)
async def test_on_a_server_the_translated_filter_selects_what_the_filter_selects_after_upgrade(
    db: Any, chain: list[list[Any]], docs: list[tuple[dict[str, Any], Any]], queries: list[Any]
) -> None:
    if is_mongomock(db):
        pytest.skip("mongomock has its own variant (no bools, no conversions): see below")
    await check_translation(db, chain, docs, queries)


@SETTINGS
@given(**chains_documents_and_filters(mock=True))
async def test_on_mongomock_the_translated_filter_selects_what_the_filter_selects_after_upgrade(
    db: Any, chain: list[list[Any]], docs: list[tuple[dict[str, Any], Any]], queries: list[Any]
) -> None:
    if not is_mongomock(db):
        pytest.skip("the server variant draws bools and conversions too: see above")
    await check_translation(db, chain, docs, queries)


async def check_translation(
    db: Any, chain: list[list[Any]], docs: list[tuple[dict[str, Any], Any]], queries: list[Any]
) -> None:
    """The property: on the mixed collection, the translation selects what the filter
    selects on an upgraded copy (or the translation is refused)."""
    # In another database: a rename's reference scan rewrites every collection of db.
    mixed, upgraded = db.client[db.name + "_mixed"]["mixed"], db[Mixed.__model__]
    await mixed.delete_many({})
    await upgraded.delete_many({})
    with MigrationRegistry.instance().isolated():
        for start, operations_ in enumerate(chain):
            python = [o for o in operations_ if isinstance(o, PythonStep)]
            register_step(
                Mixed,
                start,
                start + 1,
                python[0] if python else None,
                operations=[o for o in operations_ if not isinstance(o, PythonStep)],
                changes=PythonStep.changes if python else None,
            )
        stored, failing = [], []
        for i, (doc, version) in enumerate(docs):
            doc = {"_id": i, **doc}
            if version is not None:
                doc["__version__"] = version
            try:
                await Mixed.upgrade_state(dict(doc))
            except MigrateError:
                try:
                    leniently_upgraded(doc, chain)
                except MigrateError:
                    continue  # another failure (a path blocked by a scalar): not compared
                failing.append(doc)  # a conversion that fails: upgrade leaves the document
                continue
            stored.append(doc)
        if not stored + failing:
            event("no document to compare")
            return
        await mixed.insert_many([dict(d) for d in stored + failing])
        await upgraded.insert_many([dict(d) for d in stored + failing])
        options = RunOptions(batch_size=3, continue_on_error=True)
        report = await Runner(db, options).upgrade(Mixed)
        assert report.failed == len(failing), report
        if failing:
            event("a conversion fails on some documents")
            # What the translation promises for them: the chain, the failing
            # conversions leaving their values as stored.
            await upgraded.delete_many({"_id": {"$in": [d["_id"] for d in failing]}})
            await upgraded.insert_many([leniently_upgraded(d, chain) for d in failing])
        try:
            await compare(db, mixed, upgraded, Mixed, chain, stored + failing, queries)
        finally:
            await db.client.drop_database(db.name + "_mixed")


def leniently_upgraded(doc: dict[str, Any], chain: list[list[Any]]) -> dict[str, Any]:
    """A document taken through the chain, each failing conversion leaving its value."""
    from atomdb_migrate.steps.versions import stored_version

    done = copy.deepcopy(doc)  # the operations change nested documents in place
    raw = done.get("__version__")
    start = 0 if raw is None else int(stored_version(raw).major)
    # The upgrade rewrites a renamed model's references in every document,
    # whatever its version: in one stored after the rename too.
    for operations_ in chain[:start]:
        for op in operations_:
            if isinstance(op, RenameModel):
                rename_references(done, op.old_name, op.new_name, top=False)
    for operations_ in chain[start:]:
        for op in operations_:
            if isinstance(op, PythonStep):
                op(done)
            elif isinstance(op, Convert):
                with contextlib.suppress(ConversionError):
                    op.apply(done)
            else:
                op.apply(done)
    done["__version__"] = str(len(chain))
    return done


async def compare(
    db: Any,
    mixed: Any,
    upgraded: Any,
    model: Any,
    chain: list[list[Any]],
    stored: list[dict[str, Any]],
    queries: list[Any],
) -> None:
    """Each query: its translation on `mixed` selects what it selects on `upgraded`."""
    if True:
        for query in queries:
            try:
                translated = version_filter(model, query)
            except UntranslatableQueryError as exc:
                event("refused")
                event(f"refused: {exc.reason.split(' (')[0]}")
                continue
            try:
                want = sorted(d["_id"] for d in await to_list(upgraded.find(query, {"_id": 1})))
            except NotImplementedError:
                assert is_mongomock(db)  # mongomock has no $type "null", for one
                continue
            got = sorted(d["_id"] for d in await to_list(mixed.find(translated, {"_id": 1})))
            event("compared")
            event("compared, some selected" if want else "compared, none selected")
            assert got == want, (
                f"filter {query!r}\ntranslated {translated!r}\nchain {chain!r}\n"
                f"documents {stored!r}\nupgraded {await to_list(upgraded.find({}))!r}"
            )


@SETTINGS
@given(**chains_documents_and_filters(mock=False, rollback=True))
async def test_during_a_rollback_newer_documents_are_asked_as_the_code_reads_them(
    db: Any, chain: list[list[Any]], docs: list[tuple[dict[str, Any], Any]], queries: list[Any]
) -> None:
    if is_mongomock(db):
        pytest.skip("the rollback is compared on the real servers (bools, conversions)")
    mixed, read = db["queries.mixed"], db[Rolled.__model__]
    await mixed.delete_many({})
    await read.delete_many({})
    # The drawn renames rename this model (its own name, in documents and filters alike).
    chain = [[renamed_for(o, Rolled) for o in operations_] for operations_ in chain]
    queries = [renamed_for(q, Rolled) for q in queries]
    docs = [(renamed_for(d, Rolled), v) for d, v in docs]
    with MigrationRegistry.instance().isolated():
        for start, operations_ in enumerate(chain):
            python = [o for o in operations_ if isinstance(o, PythonStep)]
            register_step(
                Rolled,
                start,
                start + 1,
                python[0] if python else None,
                operations=[o for o in operations_ if not isinstance(o, PythonStep)],
                changes=PythonStep.changes if python else None,
            )
        stored, as_read = [], []
        for i, (doc, version) in enumerate(docs):
            doc = {"_id": i, **doc}
            if version is not None:
                doc["__version__"] = version
            try:
                as_read.append(await Rolled.upgrade_state(dict(doc)))
            except MigrateError:
                continue  # no way back (a Python step, a conversion), or a conversion fails
            stored.append(doc)
        if not stored:
            event("no document can be read")
            return
        if any(str(d.get("__version__")) in ("3", "3.0") for d in stored):
            event("newer documents read through downgrades")
        # upgrade's scan renames the references of every document, whatever its version
        # (the steps up to the code's version): the query asks them renamed.
        from atomdb_migrate.operations.rename_model import rename_references
        from atomdb_migrate.ops import RenameModel

        for op in (o for step in chain[:2] for o in step if isinstance(o, RenameModel)):
            for doc in as_read:
                rename_references(doc, op.old_name, op.new_name, top=False)
        await mixed.insert_many([dict(d) for d in stored])
        await read.insert_many(as_read)
        await compare(db, mixed, read, Rolled, chain, stored, queries)


def renamed_for(value: Any, model: Any) -> Any:
    """An operation, filter or document with the name "queries.Mixed" as `model`'s."""
    from atomdb_migrate.ops import RenameModel

    if isinstance(value, RenameModel):
        return ops.rename_model(value.old_name, model.__model__)
    if isinstance(value, dict):
        return {k: renamed_for(v, model) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed_for(v, model) for v in value]
    if value == Mixed.__model__:
        return model.__model__
    return value
