"""The stored versions of a model's documents: surveyed, planned and respelled.

Upgrading, the toolkit's index on ``{__version__: 1, _id: 1}`` is made
first (`version_index`), so that the reads of the documents behind use it.
The survey counts the documents at each stored ``__version__`` value with one
aggregation, and buckets them by plan (`StepGraph.census`); a run refuses to
start if a chain is broken, before anything is written. The documents at the
target stored in another form are rewritten in the canonical one
(`respell_versions`).

"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..core.storage import VERSION_KEY
from ..driver.index_counts import indexed_version_counts
from ..driver.mongo import count_versions, ensure_version_index, has_version_index
from ..driver.retry import Retry
from ..exceptions import short_repr
from ..steps.versions import Census, graph_forms
from .leg import Leg, label, version_name
from .report import ModelReport, Survey


async def version_index(leg: Leg, retry: Retry, *, wanted: bool, dry_run: bool) -> None:
    """Upgrading, create the toolkit's index on ``{__version__: 1, _id: 1}`` where
    `wanted` (the ``version-index`` setting); a dry run only says it is missing."""
    if not wanted or leg.direction.down:
        return
    if dry_run:
        if not await has_version_index(leg.collection):
            leg.report.version_index = "missing"
    elif await retry.call(
        f"creating the version index of {leg.collection.name}",
        partial(ensure_version_index, leg.collection),
    ):
        leg.report.version_index = "created"


async def survey(
    leg: Leg, retry: Retry, merged: tuple[Any, ...] = (), *, continue_on_error: bool = False
) -> Survey:
    """Survey every document (not only those a stream finds: ``{$ne: target}``
    leaves out an array holding the target, which is no version).

    `merged` are collections whose documents a dry run counts too: those
    of former names the run would merge (a document both hold counts twice).

    Raises
    ------
    MigrateError
        If documents sit at a version no chain leads from (unless the run
        goes on past errors).

    """
    report = leg.report
    rows: list[tuple[Any, int]] = []
    for collection in (leg.collection, *merged):
        rows += await retry.call(
            f"counting the versions in {collection.name}",
            partial(count_stored, collection, leg.scope() or None, leg_forms(leg)),
        )
    census = leg.census(sorted(rows, key=lambda r: short_repr(r[0])))
    for i, row in enumerate(census.rows):
        if row.plan.kind == "current":
            continue  # the target, perhaps in another BSON form (the int 2 for "2")
        name = version_name(row.raw)
        report.by_version[name] = report.by_version.get(name, 0) + row.count
        if row.plan.kind == "newer":
            report.newer_versions[name] = report.newer_versions.get(name, 0) + row.count
        if row.plan.error is not None and not continue_on_error:
            count_steps(report, Census(census.rows[:i]))  # the values counted before it
            raise row.plan.error
    count_steps(report, census)
    others = census.count("newer", "beyond", "invalid", "missing")
    return Survey(report, rows, census.chain, others)


def leg_forms(leg: Leg) -> list[Any]:
    """The known forms of every version a leg's chain and model name (`known_forms`)."""
    return graph_forms(leg.graph, leg.target, leg.cls.__parsed_version__)


async def count_stored(
    collection: Any, query: dict[str, Any] | None, forms: list[Any]
) -> list[tuple[Any, int]]:
    """Documents per stored ``__version__`` value: counted on the version index where
    the server can (`indexed_version_counts`; all documents only), else by a scan."""
    if not query:
        found = await indexed_version_counts(collection, forms)
        if found is not None:
            return found
    return await count_versions(collection, query)


def count_steps(report: ModelReport, census: Census) -> None:
    """Add to `report.steps` the documents each step of `census` takes, in the
    order the stored values first reach it."""
    for s, n in census.through().items():
        report.steps[label(s)] = report.steps.get(label(s), 0) + n


async def respell_versions(
    leg: Leg, rows: list[tuple[Any, int]], retry: Retry, *, dry_run: bool
) -> None:
    """Rewrite the ``__version__`` of documents at the target stored in another
    form (``1.0``, ``Int64(1)``, ``"1.0"``) as the canonical string.

    No step touches them, as they are current; but a validator takes only
    the string (`atomdb_migrate.schema.validators.json_schema`), and a query's
    default clauses only the forms `versions.version_forms` lists. A
    storage-only change: the filter names the form as surveyed (an array
    holding it is no version, and is left alone), so a document written
    meanwhile is left as its writer left it.

    """
    canonical = str(leg.target)
    for row in leg.census(rows).of("current"):
        raw = row.raw
        if raw is None or (type(raw) is str and raw == canonical):
            continue
        if dry_run:
            leg.report.respelled += row.count
            continue
        query = {
            **leg.scope(),
            "$and": [{VERSION_KEY: raw}, {VERSION_KEY: {"$not": {"$type": "array"}}}],
        }
        done = await retry.call(
            f"rewriting the __version__ {short_repr(raw)} of {leg.collection.name} as "
            f"{canonical!r}",
            partial(leg.collection.update_many, query, {"$set": {VERSION_KEY: canonical}}),
        )
        leg.report.respelled += done.modified_count
