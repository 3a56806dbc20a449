"""Every path stores the same bytes: lazy, eager on the client, eager on the
server, and write-back, for steps that change types only.

Python holds ``3 == 3.0 == Int64(3)`` and ``1 == True``; BSON does not. The
documents are generated over every BSON type atom-db meets (int32, int64,
Int64, double with NaN, infinities and -0.0, bool, Decimal128, date, null,
string, bytes, ObjectId, embedded documents and lists of them), changed by
steps that only change types, and the documents each path stores are
compared as encoded BSON.

"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import bson
import pytest
from bson import Int64, ObjectId
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrateError, MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.driver.mongo import is_mongomock, wire_manager
from atomdb_migrate.engine.runner import Runner, RunOptions

from .conftest import make_client

KEYS = ("a", "b", "c")
RAW = CodecOptions(document_class=RawBSONDocument)

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 3.0, 2.5, -7.0, 1e16]),
    st.decimals(allow_nan=False, places=2, min_value=-1000, max_value=1000).map(
        lambda d: Decimal128(str(d))
    ),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
    st.text(max_size=5),
    st.sampled_from(["1", "2.5", "-3", "true", "0", "x"]),
    st.binary(max_size=4),
    st.builds(ObjectId),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
document = st.dictionaries(st.sampled_from(KEYS), value, min_size=1, max_size=3)


def retype(value: Any) -> Any:
    """A change of type only, as a careless or a careful step makes it."""
    kind = type(value)
    if kind is bool:
        return int(value)
    if kind is Int64:
        return int(value)
    if kind is int:
        return Int64(value) if value % 2 else float(value)
    if kind is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if kind is dict:
        return {k: retype(v) for k, v in value.items()}
    if kind is list:
        return [retype(v) for v in value]
    return value


def python_step(doc: dict[str, Any]) -> None:
    for key in KEYS:
        if key in doc:
            doc[key] = retype(doc[key])


class Typed(VersionedModel):
    __model__ = "bson_exact.Typed"
    __version__ = 2
    __write_back__ = True


@pytest.fixture
async def databases(backend: str, request: pytest.FixtureRequest) -> Any:
    if backend not in ("mongomock", "secantus-pymongo", "mongo-pymongo"):
        pytest.skip("one client per server is enough: the stored bytes do not depend on it")
    client = make_client(backend, request)
    names = [f"bson_exact_{uuid.uuid4().hex[:10]}_{i}" for i in range(3)]
    yield [client.get_database(n) for n in names]
    for name in names:
        await client.drop_database(name)
    result = client.close()
    if hasattr(result, "__await__"):
        await result


async def _raw(database: Any) -> dict[Any, bytes]:
    if is_mongomock(database):  # it keeps Python values: encode them as a driver sends them
        found = database[Typed.__model__].find({}, sort=[("_id", 1)])
        return {d["_id"]: bson.encode(d) async for d in found}
    collection = database.get_collection(Typed.__model__, codec_options=RAW)
    return {
        bson.decode(d.raw)["_id"]: bytes(d.raw)
        async for d in collection.find({}, sort=[("_id", 1)])
    }


async def stored_by_every_path(
    databases: list[Any], docs: list[dict[str, Any]], server: bool
) -> dict[str, dict[Any, bytes]]:
    """The bytes each path stores, by ``_id``."""
    for database in databases:
        await database[Typed.__model__].delete_many({})
        await database[Typed.__model__].insert_many([dict(d) for d in docs])
    eager_client, eager_server, written_back = databases
    out: dict[str, dict[Any, bytes]] = {"original": await _raw(eager_client)}
    await Runner(eager_client, RunOptions(server_side=False, continue_on_error=True)).upgrade(Typed)
    out["eager-client"] = await _raw(eager_client)
    if server:
        await Runner(eager_server, RunOptions(continue_on_error=True)).upgrade(Typed)
        out["eager-server"] = await _raw(eager_server)
    wire_manager(written_back)
    lazy: dict[Any, bytes] = {}
    for doc in docs:
        stored = await Typed.objects.find_one({"_id": doc["_id"]})
        try:
            lazy[doc["_id"]] = bson.encode(await Typed.upgrade_state(stored))
            await Typed.restore(stored)
        except MigrateError:
            lazy[doc["_id"]] = out["original"][doc["_id"]]
    out["lazy"] = lazy
    out["write-back"] = await _raw(written_back)
    return out


def _legacy(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"_id": i, **d, "__version__": "1"} for i, d in enumerate(docs)]


def _same(found: dict[str, dict[Any, bytes]]) -> None:
    lazy = found["lazy"]
    for name, stored in found.items():
        if name in ("original", "lazy"):
            continue
        for _id, raw in lazy.items():
            assert stored[_id] == raw, (
                f"{name} stored {bson.decode(stored[_id])!r}, the lazy path gives "
                f"{bson.decode(raw)!r} (from {bson.decode(found['original'][_id])!r})"
            )


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(docs=st.lists(document, min_size=1, max_size=4))
async def test_a_python_step_changing_types_stores_the_same_bytes_everywhere(
    databases: list[Any], docs: list[dict[str, Any]]
) -> None:
    with MigrationRegistry.instance().isolated():
        register_step(Typed, 1, 2, python_step)
        _same(await stored_by_every_path(databases, _legacy(docs), server=False))


@PROPERTY
@given(
    docs=st.lists(document, min_size=1, max_size=4),
    conversions=st.lists(
        st.tuples(
            st.sampled_from(KEYS).flatmap(lambda k: st.sampled_from([k, f"{k}.a", f"{k}.b"])),
            st.sampled_from(["int", "float", "str", "bool"]),
        ),
        min_size=1,
        max_size=2,
        unique_by=lambda c: c[0].split(".")[0],
    ),
)
async def test_conversions_store_the_same_bytes_everywhere(
    databases: list[Any], docs: list[dict[str, Any]], conversions: list[tuple[str, str]]
) -> None:
    server = not is_mongomock(databases[0])
    with MigrationRegistry.instance().isolated():
        register_step(Typed, 1, 2, operations=[ops.convert(p, to) for p, to in conversions])
        _same(await stored_by_every_path(databases, _legacy(docs), server=server))


async def test_int_conversions_store_int32_where_it_fits_on_both_paths(
    databases: list[Any],
) -> None:
    docs = _legacy(
        [
            {"a": 3.0},
            {"a": "7"},
            {"a": Int64(5)},
            {"a": True},
            {"a": 2**40 + 0.0},
            {"a": str(2**40)},
        ]
    )
    with MigrationRegistry.instance().isolated():
        register_step(Typed, 1, 2, operations=[ops.convert("a", int)])
        found = await stored_by_every_path(databases, docs, server=not is_mongomock(databases[0]))
    _same(found)
    kinds = [type(bson.decode(found["lazy"][i])["a"]) for i in range(len(docs))]
    assert kinds == [int, int, Int64, int, Int64, Int64], "int32 where it fits; Int64 kept"
