"""`status`: where each model's stored documents are (read only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..driver.mongo import count_versions
from ..engine.survey import count_stored
from ..exceptions import MigrateError, short_repr
from ..steps.versions import BASE_VERSION, graph_forms, parse_version
from .workspace import Workspace

__all__ = ["ModelStatus", "status"]


@dataclass
class ModelStatus:
    """Where one model's stored documents are."""

    model: str
    version: str
    stored: dict[str, int]
    pending: int
    newer: int
    invalid: int
    #: Documents still in the collection of a former name (``ops.rename_model``),
    #: by that name; counted in `stored` and `pending` too.
    former: dict[str, int] = field(default_factory=dict)
    #: Documents without a version although an upgrade left none behind: when
    #: that upgrade finished, and how many there are now. Code that does not
    #: version the model (an old pod) still saves it, dropping the version and
    #: the fields it does not know.
    unversioned_since: datetime | None = None
    unversioned: int = 0

    @property
    def total(self) -> int:
        return sum(self.stored.values())


async def status(ws: Workspace, models: tuple[str, ...] | list[str] = ()) -> list[ModelStatus]:
    """Per model: the code's version and the stored documents at each version.

    One aggregation per collection; nothing is read into Python but the
    counts. Each stored version counts once, whatever its BSON form (the
    string ``"2"``, the int ``2``, the double ``2.0``).

    """
    classes = ws.models(models)
    await ws.connect()
    out: list[ModelStatus] = []
    names = set(await ws.database.list_collection_names())
    for cls in classes:
        forms = graph_forms(ws.registry.graph(cls), cls.__parsed_version__)
        rows = list(await count_stored(ws.database[cls.__model__], None, forms))
        former: dict[str, int] = {}
        for old in ws.registry.former_names(cls):
            if old in names:
                more = await count_versions(ws.database[old])
                former[old] = sum(n for _, n in more)
                rows += more
        head = cls.__parsed_version__
        census = ws.registry.graph(cls).census(rows, head, head=head)
        stored: dict[str, int] = {}
        for row in census.rows:
            stored_as = row.plan.stored
            name = _invalid_name(row.raw) if stored_as is None else str(stored_as)
            stored[name] = stored.get(name, 0) + row.count
        ordered = dict(sorted(stored.items(), key=lambda kv: _sort_key(kv[0])))
        # pending: a chain takes them to the code's version, or a step is missing
        found = ModelStatus(
            cls.__model__,
            cls.__version__,
            ordered,
            census.pending,
            census.newer,
            census.invalid,
            former,
        )
        unversioned = stored.get(BASE_VERSION, 0)
        if unversioned and cls.__parsed_version__ != parse_version(BASE_VERSION):
            since = await ws.history().last_complete(cls.__model__, cls.__version__)
            if since is not None:
                found.unversioned_since, found.unversioned = since, unversioned
        out.append(found)
    return out


def _invalid_name(raw: Any) -> str:
    """How an invalid stored version is shown: its repr, cut short."""
    return short_repr(raw, 40)


def _sort_key(version: str) -> tuple[int, Any]:
    try:
        return (0, parse_version(version))
    except MigrateError:
        return (1, version)
