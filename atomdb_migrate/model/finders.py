"""Query a versioned model across versions: `find`, `find_one`, `count`.

Each takes a filter on the model's current fields, translates it with
`version_filter`, runs it on the model's collection and, for `find` and
`find_one`, restores the objects (legacy documents are upgraded as they
are restored, as every read does)::

    pages = await Page.find({"title": "Intro"})
    n = await Page.count({"views": 0}, stored=True)

With ``stored=True`` the clauses are made only for the versions the
collection still holds, from a survey of its ``__version__`` values (the
aggregation ``status`` runs) kept for `SURVEY_MAX_AGE` seconds. Once
``upgrade`` has run, a query then costs what the original costs.

"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..core.caches import resettable
from ..driver.index_counts import indexed_version_counts
from ..driver.mongo import count_versions, to_list
from ..exceptions import MigrateError
from ..queries.version_filters import model_of, version_filter
from ..steps.versions import Census, graph_forms

log = logging.getLogger("atomdb_migrate")

#: How long a survey of the stored versions is trusted, in seconds.
SURVEY_MAX_AGE = 60.0

#: What `find` does with a matched document that cannot be restored.
OnError = Literal["raise", "skip"]


class Found(list[Any]):
    """The objects `find` restored: a list, with the documents it had to leave out.

    With ``on_error="skip"``, a matched document whose restore raises an
    atomdb-migrate error (a step that fails on it, a version it cannot be
    taken from, a value a member refuses: `RestoreFailedError`) is left
    out of the list; its error, which names its
    ``_id`` (``doc_id``), the step and the versions, is in `skipped`, and
    is logged as a warning on the ``atomdb_migrate`` logger.

    """

    #: The errors of the documents left out, in the order they were read.
    skipped: list[MigrateError]

    def __init__(self, objects: Iterable[Any] = (), skipped: Iterable[MigrateError] = ()) -> None:
        super().__init__(objects)
        self.skipped = list(skipped)


@dataclass(frozen=True)
class VersionCounts:
    """The documents of a collection per stored ``__version__`` value, and when counted."""

    #: ``[(value as stored, documents)]``, each BSON form apart.
    counts: tuple[tuple[Any, int], ...]
    #: `time.monotonic` when the counts were taken.
    taken: float

    @property
    def values(self) -> list[Any]:
        """The stored ``__version__`` values (None for documents without one)."""
        return [raw for raw, n in self.counts if n]


_surveys: dict[tuple[str, str, int], VersionCounts] = {}


def collection_of(model: Any) -> Any:
    """A model's collection, as atom-db's manager gives it (without any guard)."""
    proxy = model.objects
    return getattr(proxy, "table", proxy)


def _survey_key(model: Any, collection: Any) -> tuple[str, str, int]:
    name = getattr(collection, "full_name", None) or getattr(collection, "name", "")
    return (model.__model__, str(name), id(getattr(collection, "database", collection)))


async def survey(model: Any, *, max_age: float = SURVEY_MAX_AGE) -> VersionCounts:
    """The stored versions of a model's documents: counted, or taken from the cache.

    Parameters
    ----------
    model: VersionedModel subclass
        The model whose collection is surveyed.
    max_age: float
        Count again when the cached survey is older than this (seconds);
        0 always counts.

    """
    collection = collection_of(model)
    key = _survey_key(model, collection)
    found = _surveys.get(key)
    now = time.monotonic()
    if found is None or now - found.taken > max_age:
        _, head, graph = model_of(model)
        counts = await indexed_version_counts(collection, graph_forms(graph, head))
        if counts is None:  # the index does not serve the count: one scan
            counts = await count_versions(collection)
        found = _surveys[key] = VersionCounts(tuple(counts), time.monotonic())
    return found


async def stored_census(model: Any, *, max_age: float = SURVEY_MAX_AGE) -> Census:
    """A model's stored versions bucketed by plan at its own version (`StepGraph.census`),
    from its cached survey (see `survey`)."""
    _, head, graph = model_of(model)
    return graph.census((await survey(model, max_age=max_age)).counts, head, head=head)


def forget_surveys(model: Any = None) -> None:
    """Drop the cached surveys (of one model, or all): the next query counts again."""
    for key in list(_surveys):
        if model is None or key[0] == model.__model__:
            del _surveys[key]


resettable(f"{__name__}._surveys", forget_surveys)


async def translate(
    model: Any,
    query: dict[str, Any] | None,
    *,
    stored: bool = False,
    versions: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """`version_filter` of a query; with ``stored=True``, for the versions still stored."""
    model_of(model)  # an unknown model fails before anything is counted
    if stored and versions is None:
        versions = (await survey(model)).values
    return version_filter(model, query, versions=versions)


async def find(
    model: Any,
    query: dict[str, Any] | None = None,
    *,
    stored: bool = False,
    versions: Iterable[Any] | None = None,
    limit: int = 0,
    on_error: OnError = "raise",
) -> Found:
    """The objects whose documents match `query` once upgraded, restored.

    Parameters
    ----------
    model: VersionedModel subclass
        The model to query.
    query: dict, optional
        A filter on the model's current fields (docs/queries.md).
    stored: bool
        Make clauses only for the versions a cached survey finds stored.
    versions: iterable, optional
        The older versions still stored, as the caller knows them (see
        `version_filter`).
    limit: int
        At most this many documents read (0: no limit).
    on_error: str
        What a matched document that cannot be restored does: ``"raise"``
        (the default) raises its error, which names its ``_id``;
        ``"skip"`` leaves it out and keeps its error in the result's
        `Found.skipped` (and logs it as a warning).

    Returns
    -------
    objects: Found
        A list of the restored objects, with `Found.skipped`.

    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    collection = collection_of(model)
    cursor = collection.find(await translate(model, query, stored=stored, versions=versions))
    if limit:
        cursor = cursor.limit(limit)
    found = Found()
    for doc in await to_list(cursor):
        try:
            found.append(await model.restore(doc))
        except MigrateError as exc:
            if on_error == "raise":
                raise
            log.warning("find(%s): left out: %s", model.__model__, exc)
            found.skipped.append(exc)
    return found


async def find_one(
    model: Any,
    query: dict[str, Any] | None = None,
    *,
    stored: bool = False,
    versions: Iterable[Any] | None = None,
) -> Any:
    """One object whose document matches `query` once upgraded, restored; or None."""
    translated = await translate(model, query, stored=stored, versions=versions)
    doc = await collection_of(model).find_one(translated)
    return None if doc is None else await model.restore(doc)


async def count(
    model: Any,
    query: dict[str, Any] | None = None,
    *,
    stored: bool = False,
    versions: Iterable[Any] | None = None,
) -> int:
    """How many documents match `query` once upgraded."""
    translated = await translate(model, query, stored=stored, versions=versions)
    return int(await collection_of(model).count_documents(translated))


__all__ = [
    "SURVEY_MAX_AGE",
    "Found",
    "OnError",
    "VersionCounts",
    "count",
    "find",
    "find_one",
    "forget_surveys",
    "stored_census",
    "survey",
]
