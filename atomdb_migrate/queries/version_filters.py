"""Version-aware filters: a filter on today's fields that finds legacy documents too.

Until ``atomdb-migrate upgrade`` has run, a collection holds documents at
older versions. `version_filter` takes a filter written against the
model's current fields and maps each condition back through the steps of
every older version: where a field was renamed or moved, the condition is
asked of the old path; where a step set a constant (``add_field``), it is
decided in Python, once; where ``convert`` changed a value, it is asked of
the converted value with ``$expr``. The clause of each version goes under
``$or`` with the version's ``__version__`` values.

The mapping is exact: on a collection of documents at any version of the
chain, the result selects what the original filter selects once every
document is upgraded. Where it cannot be (a field a Python step computes),
`UntranslatableQueryError` says so; a Python step can declare what it
changes (``changes = [...]``) to let conditions on other fields through.

"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson import Decimal128
from packaging.version import Version

from ..core.caches import resettable
from ..core.conditions import Formula, freeze, key_of, render
from ..core.storage import VERSION_KEY
from ..exceptions import InvalidQueryError
from ..steps.registry import MigrationRegistry
from ..steps.versions import Step, StepGraph, version_forms, version_key
from .formulas import parse
from .matching import Unsure
from .renamed_models import through_reference_scans
from .translation import through_downgrade, through_step


def _forms(version: Version) -> list[Any]:
    """The ``__version__`` values a version is stored as (`version_forms`), and as a
    Decimal128 for a decimal version (``Decimal128("1.5")`` is not the double 1.5)."""
    forms = version_forms(version)
    if isinstance(forms[-1], float):
        forms.append(Decimal128(str(version)))
    return forms


def model_of(model: Any) -> tuple[str, Version, StepGraph]:
    registry = MigrationRegistry.instance()
    name = registry.resolve(model if isinstance(model, str) else model.__model__)
    cls = registry.models.get(name)
    if cls is None:
        from ..exceptions import UnknownModelError

        raise UnknownModelError(name, list(registry.models))
    return name, cls.__parsed_version__, registry.graph(name)


def _legacy_versions(graph: StepGraph, head: Version) -> dict[Version, tuple[Step, ...]]:
    """Every version the chain upgrades to `head` from, with its steps."""
    below = [(str(s.from_key), 0) for s in graph.steps if s.from_key < head]
    return {
        row.version: row.plan.steps for row in graph.census(below, head, head=head).of("migrate")
    }


def _encoded(query: dict[str, Any]) -> bytes | str:
    try:
        return bson.encode({"q": query})
    except Exception:  # a value BSON cannot hold: the server refuses it anyway
        return repr(query)


def version_filter(
    model: Any, query: dict[str, Any] | None = None, *, versions: Iterable[Any] | None = None
) -> dict[str, Any]:
    """A filter on the model's current fields that selects legacy documents too.

    Parameters
    ----------
    model: type or str
        The versioned model, or its ``__model__`` name.
    query: dict
        A filter written against the model's current fields (see
        docs/queries.md for the operators).
    versions: iterable, optional
        The older ``__version__`` values still stored (as read, or as
        versions; None for documents without one). Clauses are made for
        these only; by default, for every version the model's steps
        upgrade from. The current version is always matched.

    Returns
    -------
    filter: dict
        The filter itself where no stored version needs another clause;
        otherwise an ``$or`` of one clause per group of versions.

    Raises
    ------
    InvalidQueryError
        For a filter outside the grammar.
    UntranslatableQueryError
        Where a Python step computes (or may change) a field the filter
        names, for a version still stored.

    """
    if isinstance(versions, (str, bytes)):
        raise TypeError(f"versions must be a list of stored versions, not {versions!r}")
    # Nothing kept (in the cache, in the result) may be the caller's own list or dict.
    original = _detached(query)
    stored = None if versions is None else _detached(list(versions))
    try:
        key = _cache_key(model, original, stored)
    except Exception:  # a value that has no key: translate it each time
        key = None
    found = _cache.get(key) if key is not None else None
    if found is None:
        try:
            found = _version_filter(model, original, stored)
        except Unsure as exc:
            raise InvalidQueryError(None, f"a value version_filter cannot compare: {exc}") from None
        if key is not None:
            if len(_cache) >= CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
            _cache[key] = found
    return copy.deepcopy(found)


def _detached(query: Any) -> Any:
    """A deep copy of a filter (or of stored versions), sharing nothing with the caller's."""
    if query is None:
        return {}
    try:
        return copy.deepcopy(dict(query) if isinstance(query, Mapping) else query)
    except Exception:  # a value that cannot be copied: the server refuses it anyway
        return dict(query) if isinstance(query, Mapping) else query


#: How many translated filters are kept (the query guard translates each query).
CACHE_SIZE = 512

_cache: dict[Any, dict[str, Any]] = {}
resettable(f"{__name__}._cache", _cache.clear)


def _cache_key(model: Any, query: dict[str, Any], versions: list[Any] | None) -> Any:
    name = model if isinstance(model, str) else getattr(model, "__model__", None)
    registry = MigrationRegistry.instance()
    stored = None if versions is None else tuple(freeze(v) for v in versions)
    return (name, registry.generation, id(registry), freeze(query), stored)


def _version_filter(
    model: Any, original: dict[str, Any], versions: Iterable[Any] | None
) -> dict[str, Any]:
    formula = parse(original)
    name, head, graph = model_of(model)
    groups = _groups(name, graph, head, versions)
    if not groups and not _newer_groups(name, graph, head, versions):
        return original
    # The upgrade rewrites the references of every document, at any version.
    everywhere = through_reference_scans(formula, graph, head)
    if key_of(everywhere) != key_of(formula):
        formula, original = everywhere, render(everywhere)
        if everywhere is False:
            return original  # no document matches once upgraded
    plain = _encoded(render(formula))
    clauses: dict[bytes | str, tuple[list[Any], dict[str, Any]]] = {}
    excluded: list[Any] = []  # versions none of whose documents can match
    newer = _newer_groups(name, graph, head, versions)
    # Asked for the versions given (stored), or for every one the chain knows.
    given = versions is not None
    for version, (steps, forms) in [*groups.items(), *newer.items()]:
        translated: Formula = formula
        for s in reversed(steps):
            if version > head:  # read back through the downgrades, the latest first
                translated = through_downgrade(translated, s, version=str(version), stored=given)
            else:
                translated = through_step(translated, s, version=str(version), stored=given)
        if translated is False:
            excluded.extend(forms)
            continue
        clause = render(translated)
        key = _encoded(clause)
        if key == plain:
            continue  # the filter as it is selects the right ones
        entry = clauses.setdefault(key, ([], clause))
        entry[0].extend(f for f in forms if not any(_same(f, g) for g in entry[0]))
    if not clauses and not excluded:
        return original
    translated_forms = excluded + [f for forms, _ in clauses.values() for f in forms]
    rest = _with_version({"$nin": translated_forms}, original)
    if not clauses:
        return rest
    joined = [rest] + [_with_version({"$in": forms}, clause) for forms, clause in clauses.values()]
    return {"$or": joined}


def _same(a: Any, b: Any) -> bool:
    return version_key(a) == version_key(b)


def _with_version(condition: Any, clause: dict[str, Any]) -> dict[str, Any]:
    if VERSION_KEY in clause:  # pragma: no cover - the parser refuses it
        return {"$and": [{VERSION_KEY: condition}, clause]}
    return {VERSION_KEY: condition, **clause}


def reads_newer_downgraded(name: str) -> bool:
    """Whether the model's code reads a document newer than itself through the downgrades."""
    cls = MigrationRegistry.instance().models.get(name)
    return getattr(cls, "__on_newer__", None) == "downgrade"


def _newer_groups(
    name: str, graph: StepGraph, head: Version, versions: Iterable[Any] | None
) -> dict[Version, tuple[tuple[Step, ...], list[Any]]]:
    """The versions newer than the code that it reads back through downgrades (``__on_newer__
    = "downgrade"``): their downgrade steps, latest first, and ``__version__`` values."""
    if not reads_newer_downgraded(name):
        return {}
    found: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    raws: list[Any] = (
        sorted({str(v) for v in graph.known_versions() if v > head})
        if versions is None
        else list(versions)
    )
    for row in graph.census([(raw, 0) for raw in raws], head, head=head).of("newer"):
        raw = row.raw
        back = graph.plan(raw, head, head=row.version, downgrade=True)
        if back.kind != "migrate":
            continue  # no way back: reading such a document raises
        _, forms = found.setdefault(row.version, (back.steps, _forms(row.version)))
        if not isinstance(raw, Version) and not any(_same(raw, f) for f in forms):
            forms.append(raw)
    return found


def _groups(
    name: str, graph: StepGraph, head: Version, versions: Iterable[Any] | None
) -> dict[Version, tuple[tuple[Step, ...], list[Any]]]:
    """The legacy versions to make clauses for: their steps and ``__version__`` values."""
    legacy = _legacy_versions(graph, head)
    if versions is None:
        return {v: (steps, _forms(v)) for v, steps in legacy.items()}
    groups: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    given = list(versions)  # a Version given is planned as its string
    asked = [(str(raw) if isinstance(raw, Version) else raw, 0) for raw in given]
    for raw, row in zip(given, graph.census(asked, head, head=head).rows, strict=True):
        if row.plan.kind != "migrate":
            continue
        _, forms = groups.setdefault(row.version, (row.plan.steps, _forms(row.version)))
        if not isinstance(raw, Version) and not any(_same(raw, f) for f in forms):
            forms.append(raw)
    return groups


__all__ = ["CACHE_SIZE", "model_of", "reads_newer_downgraded", "version_filter"]
