"""Each operation's server form gives what its Python form gives, on generated documents.

The documents are stored on a real server (SecantusDB, and MongoDB when
``MONGO_URL`` is set), read back, and changed twice: by the step's update
pipeline on the server, and by the Python form on the documents as read.
Every document must come out the same; where the Python form fails (a value
that does not convert) the server must leave the document as it was.

"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient

from atomdb_migrate import (
    MigrationRegistry,
    VersionedModel,
    ops,
    register_step,
)
from atomdb_migrate.core.documents import copy_document
from atomdb_migrate.engine.runner import Runner
from atomdb_migrate.operations.paths import CONVERSIONS, get_path
from atomdb_migrate.operations.rename_model import rename_references

# ----------------------------------------------------------------------
# Generated documents and operations
# ----------------------------------------------------------------------
KEYS = ("a", "b", "c")
key = st.sampled_from(KEYS)
# Short paths first: they meet the generated documents' fields more often.
path = st.one_of(key, st.lists(key, min_size=2, max_size=3).map(".".join))

NUMERIC_TEXT = [
    "0", "-0", "+7", "42", "007", "-12", "1.5", "-2.25", "1e3", "1E-2", ".5", "5.", "abc",
    "", " 1", "1 ", "1\n", "9223372036854775807", "9223372036854775808", "1e400", "inf",
    "NaN", "true", "False", "TRUE", "1", "yes", "0x10", "1_000",
]  # fmt: skip

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6).map(lambda f: round(f, 3)),
    st.text(max_size=6),
    st.sampled_from(NUMERIC_TEXT),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
)

json_date = st.fixed_dictionaries(
    {
        "__py__": st.sampled_from(["datetime.datetime", "datetime.date", "decimal"]),
        "year": st.one_of(st.integers(-1, 10000), st.integers(1990, 2030)),
        "month": st.integers(0, 13),
        "day": st.integers(0, 32),
    },
    optional={
        "hour": st.one_of(st.integers(-1, 24), st.none(), st.just("1")),
        "minute": st.integers(0, 60),
        "second": st.integers(0, 60),
        "microsecond": st.integers(-1, 1_000_000),
    },
)

#: The ``__model__`` names of the embedded models in generated documents.
MODELS = ("m.A", "m.B")


def as_embedded(fields: dict[str, Any], name: str) -> dict[str, Any]:
    """An embedded model as atom-db stores one: its fields, and its ``__model__``."""
    return {**fields, "__model__": name}


value = st.recursive(
    st.one_of(scalar, json_date),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(key, inner, max_size=3),
        # embedded models, alone or in lists, as atom-db stores them
        st.builds(as_embedded, st.dictionaries(key, inner, max_size=3), st.sampled_from(MODELS)),
        st.lists(
            st.builds(
                as_embedded, st.dictionaries(key, inner, max_size=2), st.sampled_from(MODELS)
            ),
            max_size=2,
        ),
    ),
    max_leaves=8,
)
# Null and missing parents: the keys a path goes through are often null or left out.
document = st.dictionaries(key, st.one_of(st.none(), value), max_size=3)
documents = st.lists(document, min_size=1, max_size=8)

#: Which paths the step knows to hold an embedded model (as a step's schema
#: or its model class says): none, or some of the paths the documents use.
embedded = st.dictionaries(
    st.lists(key, min_size=1, max_size=2).map(tuple), st.sampled_from(MODELS), max_size=3
)
default = st.one_of(scalar, st.lists(scalar, max_size=2), st.dictionaries(key, scalar, max_size=2))


def made(make: Callable[..., ops.Operation], *args: Any) -> ops.Operation | None:
    """The operation, or None where the arguments are refused (overlapping paths)."""
    try:
        return make(*args)
    except ValueError:
        return None


def two_paths(make: Callable[..., ops.Operation]) -> st.SearchStrategy[ops.Operation]:
    targets = st.one_of(path, key)
    return st.builds(made, st.just(make), path, targets).filter(lambda op: op is not None)  # type: ignore[return-value]


OPERATIONS: dict[str, st.SearchStrategy[ops.Operation]] = {
    "add_field": st.builds(ops.add_field, path, default),
    "set_default_where_missing": st.builds(ops.set_default_where_missing, path, default),
    "remove_field": st.builds(ops.remove_field, path),
    "rename_field": two_paths(ops.rename_field),
    "copy_field": two_paths(ops.copy_field),
    "move_field": two_paths(ops.move_field),
    "convert": st.builds(ops.convert, path, st.sampled_from(CONVERSIONS)),
}
any_operation = st.one_of(*OPERATIONS.values())


# ----------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------
def servers() -> list[str]:
    found = ["secantus"]
    if os.environ.get("MONGO_URL"):
        found.append("mongo")
    return found


@pytest.fixture(params=servers())
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A database on a real server, through the synchronous driver."""
    if request.param == "mongo":
        url = os.environ["MONGO_URL"]
    else:
        url = request.getfixturevalue("secantus_url")
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    database = client[f"ops_{uuid.uuid4().hex[:10]}"]
    try:
        yield database
    finally:
        client.drop_database(database.name)
        client.close()


def normal(value: Any) -> Any:
    """A value to compare: NaN equal to NaN, and key order ignored."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, float):
        return ("float", value, math.copysign(1, value))
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def both_ways(
    database: Any,
    operations: list[ops.Operation],
    docs: list[dict[str, Any]],
    models: dict[tuple[str, ...], str] | None = None,
) -> int:
    """Run the operations both ways, knowing the embedded models `models`; return
    how many documents failed (were refused) in Python."""
    collection = database["docs"]
    collection.delete_many({})
    collection.insert_many([{**d, "_id": i, "__version__": "1"} for i, d in enumerate(docs)])
    stored = {d["_id"]: d for d in collection.find()}
    steps = ops.Operations(operations, embedded=models)

    expected: dict[int, Any] = {}
    failed = 0
    for _id, doc in stored.items():
        mine = copy_document(doc)
        try:
            steps(mine)
            mine["__version__"] = "2"
        except ops.OperationError:
            mine = doc  # the server leaves it as it was, for the client to report
            failed += 1
        expected[_id] = mine

    for query, pipeline in steps.server_updates({"__version__": "1"}, "2"):
        collection.update_many(query, pipeline)
    result = {d["_id"]: d for d in collection.find()}
    for _id, mine in expected.items():
        assert normal(result[_id]) == normal(mine), (
            f"operations {operations!r}\nstored   {stored[_id]!r}\n"
            f"python   {mine!r}\nserver   {result[_id]!r}"
        )
    refused = collection.count_documents({"__version__": "1"})
    assert refused == failed, f"{operations!r}: the server left {refused}, Python refused {failed}"
    return failed


SEEN: dict[str, list[int]] = {}


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_python_and_server_agree(name: str, server: Any, long: bool) -> None:
    counts = SEEN.setdefault(name, [0, 0])

    @settings(
        max_examples=1000 if long else 100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(st.lists(OPERATIONS[name], min_size=1, max_size=2), documents, embedded)
    def check(
        operations: list[ops.Operation], docs: list[dict[str, Any]], models: dict[Any, str]
    ) -> None:
        counts[1] += both_ways(server, operations, docs, models)
        counts[0] += 1

    check()
    assert counts[0] > 0


@pytest.mark.timeout(1800)
def test_mixed_steps_agree(server: Any, long: bool) -> None:
    """Any operations in any order: each sees the document the previous one left."""

    @settings(
        max_examples=600 if long else 60, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(any_operation, min_size=2, max_size=5), documents, embedded)
    def check(
        operations: list[ops.Operation], docs: list[dict[str, Any]], models: dict[Any, str]
    ) -> None:
        both_ways(server, operations, docs, models)

    check()


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("to", CONVERSIONS)
def test_conversions_agree_value_by_value(to: str, server: Any, long: bool) -> None:
    """Every kind of value, at the converted path, through each conversion."""
    counts = SEEN.setdefault(f"convert to {to}", [0, 0])

    @settings(
        max_examples=1000 if long else 100, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(st.one_of(scalar, json_date), min_size=1, max_size=12))
    def check(values: list[Any]) -> None:
        counts[1] += both_ways(server, [ops.convert("a", to)], [{"a": v} for v in values])
        counts[0] += 1

    check()
    assert counts[0] > 0


@pytest.mark.timeout(1800)
def test_the_fast_form_agrees_alone(server: Any, long: bool) -> None:
    """The plain stages, where their conditions hold, give what Python gives."""
    fast_ones = st.one_of(*(s for name, s in OPERATIONS.items() if name != "convert"))
    used = [0]

    @settings(
        max_examples=600 if long else 60, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(fast_ones, min_size=1, max_size=3), documents, embedded)
    def check(
        operations: list[ops.Operation], docs: list[dict[str, Any]], models: dict[Any, str]
    ) -> None:
        steps = ops.Operations(operations, embedded=models)
        fast = steps.fast_update("2")
        if fast is None:
            return
        collection = server["docs"]
        collection.delete_many({})
        collection.insert_many([{**d, "_id": i, "__version__": "1"} for i, d in enumerate(docs)])
        stored = {d["_id"]: d for d in collection.find()}
        conditions, stages = fast
        collection.update_many({"$and": [{"__version__": "1"}, *conditions]}, stages)
        for d in collection.find({"__version__": "2"}):
            mine = copy_document(stored[d["_id"]])
            steps(mine)
            mine["__version__"] = "2"
            assert normal(d) == normal(mine), (operations, stored[d["_id"]], d, mine)
            used[0] += 1

    check()
    assert used[0] > 0  # the fast form did run on some documents


#: Examples of the property test below; raise it with REFERENCE_EXAMPLES.
REFERENCE_EXAMPLES = int(os.environ.get("REFERENCE_EXAMPLES", "60"))

#: A reference as atom-db stores one: the referenced model, its ``_id``, a ``__ref__``.
STUB = {"__model__": "m.R", "__ref__": 7, "_id": 5}

# Documents whose values are often references (or null, or left out, as unset ones are).
referring_document = st.dictionaries(
    key, st.one_of(st.none(), st.just(STUB), st.dictionaries(key, st.just(STUB)), value), max_size=3
)


#: The operations that set a value somewhere.
writing = st.one_of(
    *(OPERATIONS[name] for name in OPERATIONS if name not in ("remove_field", "convert"))
)


@st.composite
def model_paths(draw: st.DrawFn) -> ops.ModelPaths:
    """Embedded models and references on the documents' paths (never the same path)."""
    models = draw(embedded)
    paths = st.one_of(key.map(lambda k: (k,)), st.lists(key, min_size=2, max_size=2).map(tuple))
    references = draw(st.sets(paths, min_size=1, max_size=3))
    return ops.ModelPaths(models, references - set(models))


def _leaves_alone(op: ops.Operation, path: tuple[str, ...]) -> bool:
    """Whether an operation is meant to leave the value at `path` as it is: it sets
    nothing at or above it (replacing it whole) and moves nothing out of it."""
    if isinstance(op, ops.AddField):
        written = [op.parts]
    else:
        assert isinstance(op, ops.MoveField | ops.CopyField)
        written = [op.dst_parts]
        if isinstance(op, ops.MoveField):
            src = op.src_parts
            if src[: len(path)] == path or path[: len(src)] == src:
                return False
    return not any(path[: len(p)] == p for p in written)


@pytest.mark.timeout(1800)
def test_nothing_is_set_through_a_reference(server: Any, long: bool) -> None:
    """Both forms agree where paths go through references, and neither sets a value
    inside one (atom-db reads the referenced document instead): what each reference
    path holds is what it held, or the document is refused."""
    counts = SEEN.setdefault("through references", [0, 0])

    @settings(
        max_examples=REFERENCE_EXAMPLES * (10 if long else 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.one_of(
            st.lists(any_operation, min_size=1, max_size=3),
            st.lists(writing, min_size=1, max_size=2),
        ),
        st.lists(referring_document, min_size=1, max_size=6),
        model_paths(),
    )
    def check(
        operations: list[ops.Operation], docs: list[dict[str, Any]], paths: ops.ModelPaths
    ) -> None:
        counts[1] += both_ways(server, operations, docs, paths)
        counts[0] += 1
        steps = ops.Operations(operations, embedded=paths)
        writers = (ops.AddField, ops.CopyField, ops.MoveField)
        if not all(isinstance(op, writers) for op in operations):
            return  # a removal or a conversion may change a stub on its own
        for doc in docs:
            after = copy_document(doc)
            try:
                steps(after)
            except ops.OperationError:
                continue
            for path in paths.references:
                was, now = get_path(doc, path), get_path(after, path)
                if not all(_leaves_alone(op, path) for op in operations):
                    continue  # replaced whole, or a value moved out of it
                assert normal(now) == normal(was), (operations, path, doc, after)

    check()
    assert counts[0] > 0


def test_the_fast_form_takes_the_common_shape(server: Any) -> None:
    step = [
        ops.rename_field("heading", "title"),
        ops.move_field("meta.status", "status"),
        ops.add_field("views", 0),
    ]
    updates = ops.Operations(step).server_updates({"__version__": "1"}, "2")
    assert len(updates) == 2
    collection = server["docs"]
    docs = [
        {"heading": "H", "meta": {"status": "s", "k": i}, "__version__": "1"} for i in range(40)
    ]
    docs += [{"heading": "H", "meta": "not a document", "__version__": "1"}]
    collection.insert_many(docs)
    first, second = (collection.update_many(q, p).modified_count for q, p in updates)
    assert (first, second) == (40, 1)
    assert collection.count_documents({"__version__": "2", "views": 0}) == 41


AWKWARD: list[dict[str, Any]] = [
    {},
    {"a": 1},
    {"a": None},
    {"a": []},
    {"a": [{"b": 1}, {"b": {"c": 2}}]},
    {"a": {"b": [{"c": 1}]}},
    {"a": {"b": "text"}, "c": [1]},
    {"a": {"b": {"c": 3}}, "b": {"a": 1}},
    {"a": {}, "b": [], "c": {"a": {"b": 1}}},
]


@pytest.mark.parametrize(
    "op",
    [
        ops.add_field("a.b.c", 1),
        ops.set_default_where_missing("a.b", 1),
        ops.remove_field("a.b"),
        ops.remove_field("a.b.c"),
        ops.rename_field("a.b", "z"),
        ops.move_field("a.b.c", "c.a"),
        ops.move_field("b.a", "a.b.c"),
        ops.copy_field("a.b", "c.a.b"),
        ops.copy_field("c", "b.a"),
    ],
    ids=repr,
)
def test_every_shape_on_the_way(op: ops.Operation, server: Any) -> None:
    """Scalars, nulls, lists and documents on a path: the fast form's conditions hold exactly."""
    assert ops.Operations([op]).fast_update("2") is not None
    both_ways(server, [op], AWKWARD)


EMBEDDED_SHAPES: list[dict[str, Any]] = [
    {},
    {"a": None, "c": 1},
    {"a": {"__model__": "m.A"}, "c": "x"},
    {"a": {"__model__": "m.A", "b": None}, "c": [1]},
    {"a": {"__model__": "m.A", "b": {"__model__": "m.B", "c": 2}}, "c": {"a": 1}},
    {"a": [{"__model__": "m.A", "b": 1}], "c": 3},
    {"a": "text", "c": 4},
    {"b": None, "c": 5},
    {"b": {"a": None}, "c": 6},
]


@pytest.mark.parametrize(
    "op",
    [
        ops.move_field("c", "a.b.c"),
        ops.copy_field("c", "a.b"),
        ops.rename_field("c", "a.c"),
        ops.move_field("c", "b.a.c"),
        ops.add_field("a.b.c", 0),
        ops.set_default_where_missing("a.b", 0),
        ops.set_default_where_missing("b.a.b", 0),
    ],
    ids=repr,
)
def test_every_shape_through_embedded_models(op: ops.Operation, server: Any) -> None:
    """``a`` and ``a.b`` are embedded models, ``b.a`` one inside a plain document:
    null, missing, there, in a list, or in the way."""
    models = {("a",): "m.A", ("a", "b"): "m.B", ("b", "a"): "m.C"}
    failed = both_ways(server, [op], EMBEDDED_SHAPES, models)
    # Refused: where "a" is text or a list, or (for "b.a") "b" is a plain null.
    refusing = {"b": 1, "a": 2} if isinstance(op, (ops.MoveField, ops.CopyField)) else {}
    assert failed == refusing.get(op.dst_parts[0] if refusing else "", 0)


def test_conversions_do_convert(server: Any) -> None:
    """Not only agreement: the examples above include real conversions."""
    docs: list[dict[str, Any]] = [
        {"a": "42"}, {"a": 2.9}, {"a": "x"}, {"a": None}, {},
        {"a": {"__py__": "datetime.datetime", "year": 2020, "month": 1, "day": 31,
               "hour": 1, "minute": 2, "second": 3, "microsecond": 4567}},
    ]  # fmt: skip
    assert both_ways(server, [ops.convert("a", int)], docs[:5]) == 1
    got = {d["_id"]: d.get("a") for d in server["docs"].find()}
    assert got == {0: 42, 1: 2, 2: "x", 3: None, 4: None}
    assert both_ways(server, [ops.convert("a", "datetime")], docs[5:]) == 0
    assert server["docs"].find_one()["a"] == datetime(2020, 1, 31, 1, 2, 3, 4000)


# ----------------------------------------------------------------------
# rename_model: the Python form against the eager run (collection renamed,
# references rewritten in every collection, then the step on the server)
# ----------------------------------------------------------------------
OLD_MODEL, NEW_MODEL, OTHER_MODEL = "old.Thing", "test_ops_server.Thing", "x.Other"
reference = st.fixed_dictionaries(
    {
        "_id": st.integers(0, 5),
        "__ref__": st.integers(0, 9),
        "__model__": st.sampled_from([OLD_MODEL, OTHER_MODEL]),
    }
)
holding = st.recursive(
    st.one_of(scalar, reference),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(key, inner, max_size=3)),
    max_leaves=8,
)
holders = st.lists(st.dictionaries(key, holding, max_size=3), min_size=1, max_size=6)


class Thing(VersionedModel):
    __model__ = NEW_MODEL
    __version__ = 1


@pytest.mark.timeout(1800)
def test_rename_model_agrees(secantus_url: str, long: bool) -> None:
    with MigrationRegistry.instance().isolated() as registry:
        register_step(Thing, 0, 1, operations=[ops.rename_model(OLD_MODEL, NEW_MODEL)])
        runs = [0]

        @settings(
            max_examples=300 if long else 30, deadline=None, suppress_health_check=list(HealthCheck)
        )
        @given(holders, holders)
        def check(own: list[dict[str, Any]], others: list[dict[str, Any]]) -> None:
            asyncio.run(rename_both_ways(secantus_url, registry, own, others))
            runs[0] += 1

        check()
        assert runs[0] > 0


async def rename_both_ways(
    url: str, registry: MigrationRegistry, own: list[dict[str, Any]], others: list[dict[str, Any]]
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client[f"rename_{uuid.uuid4().hex[:10]}"]
    try:
        await db[OLD_MODEL].insert_many(
            [{**d, "_id": i, "__model__": OLD_MODEL} for i, d in enumerate(own)]
        )
        await db["holders"].insert_many([{**d, "_id": i} for i, d in enumerate(others)])
        before = {
            name: [d async for d in db[name].find().sort("_id")] for name in (OLD_MODEL, "holders")
        }
        report = await Runner(db, registry=registry).upgrade(Thing)
        assert report.server_steps == {"0 -> 1": len(own)}

        expected_own = []
        for d in before[OLD_MODEL]:
            mine = copy_document(d)
            ops.rename_model(OLD_MODEL, NEW_MODEL).apply(mine)
            expected_own.append({**mine, "__version__": "1"})
        expected_holders = []
        for d in before["holders"]:
            mine = copy_document(d)
            rename_references(mine, OLD_MODEL, NEW_MODEL)
            expected_holders.append(mine)
        assert OLD_MODEL not in await db.list_collection_names()
        got_own = [d async for d in db[NEW_MODEL].find().sort("_id")]
        got_holders = [d async for d in db["holders"].find().sort("_id")]
        assert normal(got_own) == normal(expected_own)
        assert normal(got_holders) == normal(expected_holders)
    finally:
        await client.drop_database(db.name)
        await client.close()
