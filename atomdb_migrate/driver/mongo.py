"""The one module that knows the drivers: PyMongo's async client, Motor, mongomock.

Everything else calls these functions and never asks which driver it holds:

- `bulk_update`: conditional updates in one unordered bulk write, with what
  each matched or why the server refused it;
- `count_versions`: documents per stored ``__version__`` value, each BSON
  form of a value counted apart; `count_each`: several queries counted in
  one read;
- `collection_names`: the collections (not the views) of a database;
- `connect` and `sync_database`: clients for a URL, checked;
- `runs_pipelines` and `exact_filters`: what the server behind a collection
  can do (mongomock runs no update pipeline, and pins fewer types);
- `memory_client`: the in-memory database behind ``mongomock://`` URLs;
- `wire_manager` and `ManagerState`: point atom-db's model manager at a
  database, and put it back as it was.

"""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from atomdb.nosql import NoSQLDatabaseProxy, NoSQLModelManager
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.max_key import MaxKey
from bson.min_key import MinKey
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure, PyMongoError

from ..core.bson_rules import same_value
from ..core.caches import SaidOnce
from ..core.documents import Document
from ..core.masking import invalid_url, mask, mask_url
from ..core.storage import VERSION_INDEX, VERSION_INDEX_KEYS, VERSION_KEY
from ..core.versions import version_key
from ..core.writes import Write, needs_expression
from ..exceptions import ConfigError, ConnectionFailedError, shorten
from ..schema.validators import Validator

#: URLs of this scheme name an in-memory database (mongomock), kept for the
#: life of the process: ``mongomock://memory/blog``. For examples and tests.
MEMORY_SCHEME = "mongomock://"

log = logging.getLogger("atomdb_migrate")


_MEMORY_CLIENTS: dict[str, Any] = {}


def runs_pipelines(collection: Any) -> bool:
    """Whether the server behind a collection runs update pipelines (mongomock does not)."""
    return not is_mongomock(collection)


def exact_filters(collection: Any) -> bool:
    """Whether filters may pin BSON types (``$type: "long"``, ``"null"``; mongomock has neither)."""
    return not is_mongomock(collection)


def is_mongomock(collection: Any) -> bool:
    """Whether a collection (or database) is mongomock's (mongomock-motor dresses it as Motor's).

    A model's ``objects`` (atom-db's proxy of its collection) is looked through.

    """
    if isinstance(collection, NoSQLDatabaseProxy):
        collection = collection.table
    return any(
        kind.__module__.split(".")[0] in ("mongomock", "mongomock_motor")
        for kind in type(collection).__mro__
    )


# ----------------------------------------------------------------------
# Writes
# ----------------------------------------------------------------------
@dataclass
class BulkResult:
    """What a bulk write of conditional updates did."""

    #: How many updates matched a document.
    matched: int = 0
    #: Why the server refused an update, by its index in the bulk.
    refused: dict[int, str] = field(default_factory=dict)


async def bulk_update(collection: Any, writes: Sequence[Write | tuple[Any, Any]]) -> BulkResult:
    """Send conditional updates in one unordered bulk write.

    An update the server refuses (a result over 16 MB, a field name it does
    not store) does not stop the others: it is reported by index, with the
    server's message (never the document, which may be 16 MB).

    A write whose filter matches large values by type and size only
    (`Write.loose`) is sent only if the stored document still holds them
    whole, read again just before: one that no longer does is not sent, and
    counts as not matched (changed since it was read).

    mongomock (the in-memory backend) cannot run PyMongo >= 4.11's bulk
    writes, so there each update is sent on its own, with the same filters.

    """
    if not writes:
        return BulkResult()
    changed = await changed_since_read(collection, writes)
    sent = [i for i in range(len(writes)) if i not in changed]
    if not sent:
        return BulkResult()
    if not is_mongomock(collection):
        requests = [UpdateOne(writes[i][0], writes[i][1]) for i in sent]
        try:
            result = await collection.bulk_write(requests, ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            if details.get("writeConcernErrors"):
                raise
            refused = {
                sent[int(e["index"])]: f"{shorten(str(e.get('errmsg', '')))} (code {e.get('code')})"
                for e in details.get("writeErrors", [])
            }
            return BulkResult(int(details.get("nMatched", 0)), refused)
        return BulkResult(int(result.matched_count))
    _say_once("mongomock: writing updates one at a time (no bulk writes)")
    out = BulkResult()
    for index in sent:
        query, update = writes[index][0], writes[index][1]
        try:
            out.matched += (await collection.update_one(query, update)).matched_count
        except Exception as exc:
            out.refused[index] = shorten(f"{type(exc).__name__}: {exc}")
    return out


async def changed_since_read(
    collection: Any, writes: Sequence[Write | tuple[Any, Any]]
) -> set[int]:
    """The writes whose large values, matched loosely (`Write.loose`), the stored
    document no longer holds as read (or which it no longer is at all), by index.

    The values are read again and compared as BSON stores them: one more
    read for the writes that have such values, none for the others.

    """
    loose = {i: w.loose for i, w in enumerate(writes) if isinstance(w, Write) and w.loose}
    if not loose:
        return set()
    ids = [writes[i][0]["_id"] for i in loose]
    names = sorted({k for values in loose.values() for k in values})
    projection = None if any(needs_expression(k) for k in names) else dict.fromkeys(names, 1)
    found = {
        version_key(d["_id"]): d
        for d in await to_list(collection.find({"_id": {"$in": ids}}, projection))
    }
    changed: set[int] = set()
    for i, values in loose.items():
        doc = found.get(version_key(writes[i][0]["_id"]))
        if doc is None or any(k not in doc or not same_value(doc[k], v) for k, v in values.items()):
            changed.add(i)
    return changed


# ----------------------------------------------------------------------
# Reads
# ----------------------------------------------------------------------
async def to_list(cursor: Any) -> list[Any]:
    """Every document of a cursor."""
    return list(await cursor.to_list(length=None))


async def batches(cursor: Any, size: int) -> AsyncIterator[list[Document]]:
    """A cursor's documents, `size` at a time."""
    batch: list[Document] = []
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


#: BSON's comparison order of types, as ``$type`` names, by bracket: an
#: ``_id`` sorts after every ``_id`` of an earlier bracket.
TYPE_BRACKETS: tuple[tuple[str, ...], ...] = (
    ("minKey",),
    ("null", "undefined"),
    ("number",),
    ("string", "symbol"),
    ("object",),
    ("array",),
    ("binData",),
    ("objectId",),
    ("bool",),
    ("date",),
    ("timestamp",),
    ("regex",),
    ("maxKey",),
)


def id_bracket(value: Any) -> int | None:
    """The bracket of an ``_id`` value in BSON's order of types, an index of
    `TYPE_BRACKETS` (None: a type not known here)."""
    if isinstance(value, bool):
        return 8
    if value is None:
        return 1
    if isinstance(value, (int, float, Int64, Decimal128)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, dict):
        return 4
    if isinstance(value, (bytes, Binary, uuid.UUID)):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, (datetime, DatetimeMS)):
        return 9
    if isinstance(value, Timestamp):
        return 10
    if isinstance(value, (Regex, re.Pattern)):
        return 11
    if isinstance(value, MinKey):
        return 0
    if isinstance(value, MaxKey):
        return 12
    return None


def after(query: dict[str, Any], last: Any) -> list[dict[str, Any]]:
    """Queries that find, read one after the other in ``_id`` order, what `query`
    finds after the ``_id`` `last`; ``[query]`` (all of it) for an ``_id`` of a
    type not known here.

    ``$gt`` compares within one type only, so the documents whose ``_id`` is
    of a later type in BSON's order are asked for on their own: each query
    keeps to the ``_id`` index.

    """
    bracket = id_bracket(last)
    if bracket is None:
        return [query]
    later = [name for names in TYPE_BRACKETS[bracket + 1 :] for name in names]
    # Nothing else sorts in the brackets of MinKey and null; and MinKey is
    # the one value "$gt" compares with every type.
    queries = [] if bracket < 2 else [_with_id(query, {"$gt": last})]
    if later:
        queries.append(_with_id(query, {"$type": later}))
    return queries


def _with_id(query: dict[str, Any], condition: dict[str, Any]) -> dict[str, Any]:
    """`query` and a condition on ``_id``: beside its other fields where it has no
    ``_id`` of its own (a plain range on the ``_id`` index), else under ``$and``."""
    if "_id" in query:
        return {"$and": [query, {"_id": condition}]}
    return {**query, "_id": condition}


async def aggregate(collection: Any, pipeline: list[dict[str, Any]], **options: Any) -> list[Any]:
    """The documents an aggregation gives (`options`: the driver's, ``allowDiskUse=True``)."""
    cursor = collection.aggregate(pipeline, **options)
    if inspect.isawaitable(cursor):  # PyMongo's async client; Motor returns the cursor
        cursor = await cursor
    return await to_list(cursor)


async def index_specs(collection: Any) -> list[dict[str, Any]]:
    """A collection's index specifications; none on mongomock, for a collection
    that does not exist, or without the right to list them."""
    if is_mongomock(collection):
        return []
    try:
        cursor = collection.list_indexes()  # a coroutine for PyMongo's, a cursor for Motor's
        if inspect.isawaitable(cursor):
            cursor = await cursor
        return await to_list(cursor)
    except PyMongoError:
        return []


async def has_version_index(collection: Any) -> bool:
    """Whether a collection has an index on ``{__version__: 1, _id: 1}`` (by any name)."""
    specs = await index_specs(collection)
    return any(list(spec.get("key", {}).items()) == VERSION_INDEX_KEYS for spec in specs)


async def ensure_version_index(collection: Any) -> bool:
    """Create the toolkit's index where there is none; return whether it was created."""
    if is_mongomock(collection) or await has_version_index(collection):
        return False
    await collection.create_index(VERSION_INDEX_KEYS, name=VERSION_INDEX)
    return True


async def count_versions(
    collection: Any, query: dict[str, Any] | None = None
) -> list[tuple[Any, int]]:
    """Documents per stored ``__version__`` value: ``[(value, count)]``.

    Each BSON form of a value is counted apart (the string ``"2"``, the int
    ``2`` and the double ``2.0``), so that each can be planned and matched
    as it is stored. Documents without a version, or with an explicit null,
    count under None.

    """
    counts: dict[Any, list[Any]] = {}
    if is_mongomock(collection):  # no $type in $group: count in Python
        cursor = collection.find(query or {}, {VERSION_KEY: 1, "_id": 0})
        for doc in await to_list(cursor):
            raw = doc.get(VERSION_KEY)
            counts.setdefault(version_key(raw), [raw, 0])[1] += 1
        return [(raw, n) for raw, n in counts.values()]
    matched: list[dict[str, Any]] = [{"$match": query}] if query else []
    rows = await aggregate(collection, [*matched, _BY_VALUE])
    if not all(_grouped_exactly(row["_id"]) for row in rows):
        # Numbers of one value in several BSON types share a group, and so
        # may arrays and documents holding them: those group again by type.
        rows = [row for row in rows if _grouped_exactly(row["_id"])]
        typed = await aggregate(collection, [*matched, _NOT_EXACT, _BY_VALUE_AND_TYPE])
        rows += [{"_id": row["_id"].get("v"), "n": row["n"]} for row in typed]
    for row in rows:
        raw = row["_id"]
        counts.setdefault(version_key(raw), [raw, 0])[1] += row["n"]
    return [(raw, n) for raw, n in counts.values()]


async def count_each(collection: Any, queries: Sequence[dict[str, Any]]) -> list[int]:
    """How many documents each query finds, in one read of the collection.

    Several queries are counted by one aggregation: the documents any of them
    finds, then one ``$facet`` per query (the same query, counted), where
    ``count_documents`` would read the collection once per query. One query
    (or none), or mongomock, is counted with ``count_documents``.

    """
    if len(queries) < 2 or is_mongomock(collection):
        return [int(await collection.count_documents(q)) for q in queries]
    facets = {str(i): [{"$match": q}, {"$count": "n"}] for i, q in enumerate(queries)}
    (row,) = await aggregate(collection, [{"$match": {"$or": list(queries)}}, {"$facet": facets}])
    return [int(row[str(i)][0]["n"]) if row[str(i)] else 0 for i in range(len(queries))]


#: The survey's one stage: documents per stored version value. Strings are
#: grouped by their bytes and null with missing (both counted under None),
#: as each form is to be counted; other values may share a group across
#: BSON types (the int 2 with the double 2.0), and are grouped again with
#: `_BY_VALUE_AND_TYPE`. Grouping by the type as well in every case costs
#: SecantusDB a third more per document (``benchmarks/notes.md``).
_BY_VALUE: dict[str, Any] = {"$group": {"_id": f"${VERSION_KEY}", "n": {"$sum": 1}}}

#: Documents per stored version value and BSON type.
_BY_VALUE_AND_TYPE: dict[str, Any] = {
    "$group": {
        "_id": {"v": f"${VERSION_KEY}", "t": {"$type": f"${VERSION_KEY}"}},
        "n": {"$sum": 1},
    }
}

#: The documents whose version `_BY_VALUE` does not group exactly (the
#: expression's ``$type`` does not look into arrays, as a query's would).
_NOT_EXACT: dict[str, Any] = {
    "$match": {
        "$expr": {"$not": [{"$in": [{"$type": f"${VERSION_KEY}"}, ["string", "null", "missing"]]}]}
    }
}


def _grouped_exactly(raw: Any) -> bool:
    """Whether `_BY_VALUE` counts the stored value `raw` apart from every other form."""
    return raw is None or isinstance(raw, str)


async def collection_names(database: Any) -> set[str]:
    """The names of a database's collections: no views, no ``system.`` collections."""
    if is_mongomock(database):  # no list_collections: mongomock has no views
        names = await database.list_collection_names()
    else:
        cursor = await database.list_collections(filter={"type": "collection"})
        names = [c["name"] for c in await to_list(cursor)]
    return {n for n in names if not n.startswith("system.")}


# ----------------------------------------------------------------------
# atom-db's model manager, and the in-memory client
# ----------------------------------------------------------------------
def memory_client(url: str) -> Any:
    """The in-memory client for a ``mongomock://`` URL (one per host part, per process)."""
    host = url[len(MEMORY_SCHEME) :].split("/", 1)[0]
    client = _MEMORY_CLIENTS.get(host)
    if client is None:
        try:
            from mongomock_motor import AsyncMongoMockClient
        except ImportError as exc:
            raise ConfigError(
                f"mongomock:// URLs need mongomock-motor ({exc}): "
                "pip install 'atomdb-migrate[memory]'"
            ) from None
        client = _MEMORY_CLIENTS[host] = AsyncMongoMockClient()
    return client


async def open_client(url: str, timeout: float) -> Any:
    """Open PyMongo's async client on a URL and check the server answers.

    Raises
    ------
    ConfigError
        If the driver refuses the URL (its secrets masked in the message).
    ConnectionFailedError
        If the server cannot be reached within `timeout` seconds, or refuses
        the credentials.

    """
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError

    try:
        client: Any = AsyncMongoClient(url, **timeouts(url, timeout))
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise invalid_url(url, exc) from None
    try:
        await _ping(client.admin, url, timeout)
    except BaseException:
        await client.close()
        raise
    return client


async def check_database(client: Any, url: str, name: str, timeout: float) -> Any:
    """A database of an open client, pinged: credentials scoped to one database
    are checked on first use (raises as `open_client` does)."""
    database = client[name]
    await _ping(database, url, timeout, where=f" (database {name})")
    return database


async def _ping(database: Any, url: str, timeout: float, where: str = "") -> None:
    from pymongo.errors import OperationFailure, PyMongoError

    try:
        await database.command("ping")
    except OperationFailure as exc:
        reason = "authentication failed" if exc.code in (13, 18) else "refused"
        raise ConnectionFailedError(
            f"{mask_url(url)}{where}: {reason}: {mask(str(exc.details or exc), url)}"
        ) from None
    except PyMongoError as exc:
        raise ConnectionFailedError(
            f"cannot reach {mask_url(url)} within {timeout:g}s: {mask(_first_reason(exc), url)}"
        ) from None


def timeouts(url: str, timeout: float) -> dict[str, Any]:
    """The client's timeouts: `timeout` to reach the server; a timeout the URL sets
    itself is the URL's.

    No socket timeout unless the URL sets one (``socketTimeoutMS``): a run's
    calls may rightly take minutes (a server step's update of a million
    documents, a first batch the server must sort), and a timeout would fail
    them, and their retries, for good. A dead peer is found by the driver's
    TCP keepalive; a server that answers nothing is a fault retried as any.

    """
    ms = int(timeout * 1000)
    wanted = {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms}
    given = {
        part.split("=", 1)[0].lower() for part in url.partition("?")[2].split("&") if "=" in part
    }
    return {k: v for k, v in wanted.items() if k.lower() not in given}


def _first_reason(exc: Exception) -> str:
    """PyMongo's reason, without its timeouts and topology description."""
    text = str(exc).splitlines()[0].split(", Timeout:")[0]
    return re.sub(r" \(configured timeouts:[^)]*\)", "", text)


def sync_database(url: str, name: str, timeout: float) -> tuple[Any, Any]:
    """A synchronous client and database for a URL, for work beside the event loop.

    Returns the client to close (None for an in-memory URL) and the database.

    """
    if url.startswith(MEMORY_SCHEME):
        inner = vars(memory_client(url)).get("_AsyncMongoMockClient__client")
        if inner is None:  # pragma: no cover - a mongomock-motor that hides its client
            raise ConfigError("this mongomock-motor does not expose its synchronous client")
        return None, inner[name]
    from pymongo import MongoClient

    client: Any = MongoClient(url, **timeouts(url, timeout))
    return client, client[name]


def drop_memory_database(database: Any) -> None:
    """Drop an in-memory (mongomock) database, without an event loop."""
    inner = vars(database).get("_AsyncMongoMockDatabase__database")
    if inner is not None:
        inner.client.drop_database(database.name)


def wire_manager(database: Any) -> None:
    """Point atom-db's model manager at a database, with a new object cache."""
    manager: Any = NoSQLModelManager.instance()
    manager.database = database
    manager.proxies = {}


class ManagerState:
    """atom-db's model manager as it is now: its database, proxies and object cache.

    Taken before pointing the manager elsewhere, and put back after, so that
    nothing of ours leaves the app's manager other than we found it::

        saved = ManagerState()
        wire_manager(database)
        ...
        saved.restore()

    States may be put back in any order (two workspaces closed in the order
    they were opened): the manager ends as it was before the first.

    """

    #: The states taken and not put back yet, oldest first.
    _taken: ClassVar[list[ManagerState]] = []

    def __init__(self) -> None:
        manager: Any = NoSQLModelManager.instance()
        self._database = manager.get_member("database").get_slot(manager)
        self._proxies = manager.get_member("proxies").get_slot(manager)
        ManagerState._taken.append(self)

    def restore(self) -> None:
        """Put the manager back as it was (or, if a later state is still taken, hand
        what this one found to it, to put back when it is)."""
        taken = ManagerState._taken
        if self not in taken:
            return
        index = taken.index(self)
        taken.pop(index)
        if index < len(taken):
            later = taken[index]
            later._database, later._proxies = self._database, self._proxies
            return
        manager: Any = NoSQLModelManager.instance()
        for name, value in (("database", self._database), ("proxies", self._proxies)):
            member = manager.get_member(name)
            if value is None:
                member.del_slot(manager)
            else:
                member.set_slot(manager, value)


#: What the driver logs once per process (`atomdb_migrate.core.caches.reset`
#: forgets it).
_SAID = SaidOnce(f"{__name__}._SAID", log.info)
_say_once = _SAID


#: The collection's validator: read and written here, with the driver.
async def read_validator(collection: Any) -> Validator:
    """The collection's validator (`NO_VALIDATOR` for a collection that does not exist)."""
    options = await collection.options()
    return Validator(
        options.get("validator") or None,
        options.get("validationLevel", "strict"),
        options.get("validationAction", "error"),
    )


async def write_validator(collection: Any, validator: Validator) -> None:
    """Set (or, with `NO_VALIDATOR`, remove) the collection's validator.

    A collection that does not exist is created with it (``collMod`` fails
    on a missing collection); one created meanwhile by someone else is
    then modified. Removing the validator of a missing collection does
    nothing.

    """
    database = collection.database
    for _ in range(3):
        try:
            await database.command("collMod", collection.name, **validator.options())
            return
        except OperationFailure as exc:
            if exc.code != 26:  # NamespaceNotFound
                raise
        if not validator:
            return
        try:
            await database.create_collection(collection.name, **validator.options())
            return
        except CollectionInvalid:
            continue  # created meanwhile: modify it
        except OperationFailure as exc:
            if exc.code != 48:  # NamespaceExists
                raise
    raise CollectionInvalid(f"{collection.name} kept appearing and disappearing")
