"""The query guard: a query that misses legacy documents is reported.

During a rollout, code that queries a model's collection directly
(``Page.objects.find({"title": "Intro"})``) silently misses the pages
still stored with ``heading``. With the guard on, every query made through
a versioned model's manager is checked against the versions still stored
(the census of a cached survey, `finders.stored_census`): where `version_filter`
would translate it, the query misses documents, and the guard says how
many, as a `LegacyQueryWarning` or, set to "error", a `LegacyQueryError`
raised before the query runs::

    atomdb_migrate.guard_queries("error")   # in tests and staging

It guards ``find`` and ``find_raw_batches`` (every read of the cursor waits
for the check, until one passes; its clones and ``distinct`` too),
``find_one``, ``count_documents``, ``distinct``, ``replace_one``,
``update_one``/``update_many``, ``delete_one``/``delete_many``, the
``find_one_and_*`` methods and the filters of ``bulk_write``'s requests;
not ``aggregate``, nor Motor's ``fetch_next``. Filters on ``_id`` alone,
and the toolkit's own (which name ``__version__``), pass unchecked; so does
a filter outside `version_filter`'s grammar.

"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable
from typing import Any, Literal

from atom.api import Float, Str, Value
from atomdb.nosql import NoSQLDatabaseProxy, NoSQLModelManager

from ..core.storage import VERSION_KEY
from ..exceptions import (
    ConfigError,
    InvalidVersionError,
    LegacyQueryError,
    LegacyQueryWarning,
    QueryError,
    UntranslatableQueryError,
    short_repr,
)
from ..queries.version_filters import model_of, reads_newer_downgraded, version_filter
from ..steps.registry import MigrationRegistry
from ..steps.versions import PlanKind, stored_version
from .finders import SURVEY_MAX_AGE, stored_census

#: What the guard does with a query that misses legacy documents.
GuardAction = Literal["warn", "error", "off"]


def _unchecked(query: Any) -> bool:
    return not isinstance(query, dict) or not query or VERSION_KEY in query or set(query) <= {"_id"}


async def check_query(
    model: Any,
    collection: Any,
    query: Any,
    *,
    action: str,
    max_age: float = SURVEY_MAX_AGE,
    stacklevel: int = 2,
) -> None:
    """Report `query` if it gives another answer than once every document is upgraded.

    It misses a legacy document the translated filter selects, or selects
    one the translated filter does not (a stray field an operation will
    overwrite); both are counted on the server.

    Parameters
    ----------
    stacklevel: int
        Where the warning points, counted from the caller of `check_query`.

    Raises
    ------
    LegacyQueryError
        With ``action="error"``, where it gives another answer.

    """
    if action == "off" or _unchecked(query):
        return
    census = await stored_census(model, max_age=max_age)
    kinds: tuple[PlanKind, ...] = ("migrate",)
    if reads_newer_downgraded(model_of(model)[0]):
        kinds += ("newer",)
    legacy = [(row.raw, row.count) for row in census.of(*kinds)]
    if not legacy:
        return
    try:
        translated = version_filter(model, query, versions=[raw for raw, _ in legacy])
    except UntranslatableQueryError as exc:
        stored = sum(n for _, n in legacy)
        what = f"may miss or mismatch the {stored} document(s) stored at"
        _report(model, query, action, (stored, 0), legacy, what, f" ({exc})", stacklevel + 1)
        return
    except (QueryError, TypeError):
        return  # outside the grammar: not for the guard to judge
    if translated == query:
        return
    missed = int(await collection.count_documents({"$and": [translated, {"$nor": [query]}]}))
    extra = int(await collection.count_documents({"$and": [query, {"$nor": [translated]}]}))
    if not missed and not extra:
        return  # it selects what it would select once they are upgraded
    if not extra:
        what = f"misses {missed} document(s) stored at"
    else:
        parts = [f"misses {missed} document(s)"] if missed else []
        parts.append(f"selects {extra} document(s) it would not select once upgraded")
        what = f"{' and '.join(parts)}, of those stored at"
    _report(model, query, action, (missed, extra), legacy, what, "", stacklevel + 1)


def _report(
    model: Any,
    query: Any,
    action: str,
    counts: tuple[int, int],
    legacy: list[tuple[Any, int]],
    what: str,
    more: str,
    stacklevel: int,
) -> None:
    versions: list[str] = []
    for raw, _ in legacy:
        try:
            text = str(stored_version(raw))
        except InvalidVersionError:  # pragma: no cover - a "migrate" plan has a version
            text = short_repr(raw, 40)
        if text not in versions:
            versions.append(text)
    message = (
        f"{model.__model__}: the query {short_repr(query, 200)} {what} "
        f"version{'s' if len(versions) > 1 else ''} {', '.join(versions)}, until "
        f"`atomdb-migrate upgrade` has run{more}; query with {model.__name__}.find() or "
        "atomdb_migrate.version_filter() to find them"
    )
    missed, extra = counts
    if action == "error":
        raise LegacyQueryError(message, missed=missed, extra=extra, versions=versions)
    warnings.warn(LegacyQueryWarning(message), stacklevel=stacklevel + 1)


class GuardedCursor:
    """A cursor that checks its query before the first document is read."""

    def __init__(self, proxy: GuardedProxy, cursor: Any, query: Any) -> None:
        self._proxy = proxy
        self._cursor = cursor
        self._query = query
        self._passed = False
        self._checking = asyncio.Lock()

    async def _check(self) -> None:
        # Every read waits for the check; one refused is refused again.
        async with self._checking:
            if not self._passed:
                # The warning points at the caller of to_list(), next() or async for.
                await self._proxy.check(self._query, stacklevel=4)
                self._passed = True

    async def __aenter__(self) -> GuardedCursor:
        enter = getattr(self._cursor, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        leave = getattr(self._cursor, "__aexit__", None)
        return None if leave is None else await leave(*exc)

    async def distinct(self, key: str) -> Any:
        await self._check()
        return await self._cursor.distinct(key)

    def __aiter__(self) -> GuardedCursor:
        return self

    async def __anext__(self) -> Any:
        await self._check()
        return await self._cursor.__anext__()

    async def to_list(self, *args: Any, **kwargs: Any) -> Any:
        await self._check()
        return await self._cursor.to_list(*args, **kwargs)

    async def next(self) -> Any:
        await self._check()
        return await self._cursor.next()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cursor, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if result is self._cursor:  # sort(), limit()...
                return self
            if type(result) is type(self._cursor):  # clone(): a new cursor, checked too
                return GuardedCursor(self._proxy, result, self._query)
            return result

        return call


class GuardedProxy(NoSQLDatabaseProxy):
    """atom-db's collection proxy with the query guard in front of the queries."""

    #: The model whose collection this is.
    model = Value()

    #: "warn" or "error".
    action = Str("warn")

    #: How long a survey of the stored versions is trusted, in seconds.
    max_age = Float(SURVEY_MAX_AGE)

    async def check(self, query: Any, *, stacklevel: int = 3) -> None:
        """Report `query` (see `check_query`); the warning points at the caller's caller."""
        await check_query(
            self.model,
            self.table,
            query,
            action=self.action,
            max_age=self.max_age,
            stacklevel=stacklevel,
        )

    def find(self, filter: Any = None, *args: Any, **kwargs: Any) -> GuardedCursor:
        return GuardedCursor(self, self.table.find(filter, *args, **kwargs), filter)

    def find_raw_batches(self, filter: Any = None, *args: Any, **kwargs: Any) -> GuardedCursor:
        return GuardedCursor(self, self.table.find_raw_batches(filter, *args, **kwargs), filter)

    async def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.find_one(filter, *args, **kwargs)

    async def count_documents(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.count_documents(filter, *args, **kwargs)

    async def distinct(self, key: str, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.distinct(key, filter, *args, **kwargs)

    async def replace_one(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.replace_one(filter, *args, **kwargs)

    async def update_one(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.update_one(filter, *args, **kwargs)

    async def update_many(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.update_many(filter, *args, **kwargs)

    async def delete_one(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.delete_one(filter, *args, **kwargs)

    async def delete_many(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.delete_many(filter, *args, **kwargs)

    async def find_one_and_update(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.find_one_and_update(filter, *args, **kwargs)

    async def find_one_and_replace(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.find_one_and_replace(filter, *args, **kwargs)

    async def find_one_and_delete(self, filter: Any, *args: Any, **kwargs: Any) -> Any:
        await self.check(filter)
        return await self.table.find_one_and_delete(filter, *args, **kwargs)

    async def bulk_write(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
        """Check the filter of every update, replace and delete, before any runs."""
        requests = list(requests)
        for request in requests:
            await self.check(_filter_of(request))
        return await self.table.bulk_write(requests, *args, **kwargs)


def _filter_of(request: Any) -> Any:
    """The filter of a bulk write's request (None for an insert: left unchecked)."""
    return getattr(request, "_filter", None)


def guard_queries(
    action: GuardAction = "warn",
    *,
    models: Iterable[Any] | None = None,
    max_age: float = SURVEY_MAX_AGE,
) -> None:
    """Turn the query guard on ("warn", "error") or off ("off").

    Call it after atom-db's database is set
    (``NoSQLModelManager.instance().database = db``): it puts a guarded
    proxy in front of each versioned model's collection.

    Parameters
    ----------
    action: str
        "warn" issues a `LegacyQueryWarning`; "error" raises
        `LegacyQueryError` before the query runs; "off" removes the guard.
    models: iterable of VersionedModel subclasses, optional
        The models to guard; by default every registered versioned model.
    max_age: float
        How long a survey of the stored versions is trusted, in seconds.

    Raises
    ------
    ConfigError
        For an unknown action, or when no database is set.

    """
    if action not in ("warn", "error", "off"):
        raise ConfigError(f"guard_queries: action must be 'warn', 'error' or 'off', not {action!r}")
    manager: Any = NoSQLModelManager.instance()
    try:
        database = manager.database
    except OSError:
        raise ConfigError(
            "guard_queries: set atom-db's database first "
            "(NoSQLModelManager.instance().database = db)"
        ) from None
    chosen = (
        list(models) if models is not None else list(MigrationRegistry.instance().models.values())
    )
    for cls in sorted(chosen, key=lambda c: c.__model__):
        before = manager.proxies.get(cls)
        table = before.table if before is not None else database[cls.__model__]
        if action == "off":
            proxy: NoSQLDatabaseProxy = NoSQLDatabaseProxy(table=table)
        else:
            proxy = GuardedProxy(table=table, model=cls, action=action, max_age=max_age)
        if before is not None:
            proxy.cache = before.cache  # the objects already restored stay the same objects
        manager.proxies[cls] = proxy


__all__ = ["GuardedProxy", "check_query", "guard_queries"]
