"""Each operation's query-source form: registered by type, and true to its Python form.

`atomdb_migrate.queries.sources` says, for an operation and a path, where
the value at the path comes from after the operation, case by case, each
case under a condition on the document as stored. Each operation on
documents registers its own form by type, so a new operation adds its form
in one place (as Alembic registers each operation's implementation).

The property: for generated operations (of every kind the factories
make), documents and paths, exactly one case holds on the stored document,
and the value the Python form leaves at the path is what that case says:
the stored value at another path, a constant, a converted value, a
document, or a value of the same kind. Where the Python form refuses a
document (a value that does not convert, a destination that cannot be set),
the step leaves it as stored, and the case that holds must say so too.
``QUERY_SOURCES_EXAMPLES`` sets the examples (default 300).

"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step, version_filter
from atomdb_migrate.core.documents import Document, copy_document
from atomdb_migrate.core.writes import same_value
from atomdb_migrate.exceptions import ConversionError
from atomdb_migrate.operations.base import Operation
from atomdb_migrate.operations.collection import CollectionOperation
from atomdb_migrate.operations.conversions import convert_value
from atomdb_migrate.operations.paths import MISSING, MODEL_KEY, ModelPaths
from atomdb_migrate.operations.rename_model import RenameModel
from atomdb_migrate.queries.expressions import Converted, Field
from atomdb_migrate.queries.formulas import evaluate
from atomdb_migrate.queries.matching import Unsure, type_of, values_at
from atomdb_migrate.queries.sources import Const, Doc, Refused, Shape, Source, sources

from .test_ops_server import OPERATIONS, document
from .test_ops_server import embedded as embedded_models

#: Examples of the property (raise it for a longer run).
EXAMPLES = int(os.environ.get("QUERY_SOURCES_EXAMPLES", "300"))


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(all_subclasses(c) for c in found)) if found else set()


def operations_on_documents() -> list[type[Operation]]:
    """The operation classes of the package that change documents."""
    return sorted(
        (
            c
            for c in all_subclasses(Operation)
            if c.__module__.startswith("atomdb_migrate.")
            and not c.__name__.startswith("_")
            and not issubclass(c, (CollectionOperation, RenameModel))
        ),
        key=lambda c: c.__name__,
    )


def test_every_operation_on_documents_has_a_form_registered_by_type() -> None:
    found = operations_on_documents()
    assert {c.__name__ for c in found} >= {"AddField", "Convert", "MoveField", "RemoveField"}
    for cls in found:
        assert sources.dispatch(cls) is not sources.dispatch(Operation), cls
    # A default is kept where the value is there: its own form, not add_field's.
    assert sources.dispatch(ops.SetDefaultWhereMissing) is not sources.dispatch(ops.AddField)


class Stamp(Operation):
    """An operation the package does not have: a constant in every document."""

    __op_name__ = "stamp"

    def __init__(self, field: str, value: Any) -> None:
        self.field, self.value = field, value

    def arguments(self) -> tuple[Any, ...]:
        return (self.field, self.value)

    def apply(self, doc: Document) -> None:
        doc[self.field] = self.value

    def stages(self) -> list[dict[str, Any]]:
        return [{"$set": {self.field: {"$literal": self.value}}}]

    def touches(self) -> set[str]:
        return {self.field}


class Stamped(VersionedModel):
    __model__ = "sources.Stamped"
    __version__ = 2


def test_a_new_operation_adds_its_query_form_in_one_place(registry: MigrationRegistry) -> None:
    register_step(Stamped, 1, 2, operations=[Stamp("stamp", 7)])
    with pytest.raises(TypeError):
        version_filter(Stamped, {"stamp": 7})  # no form yet: nothing to translate with

    @sources.register(Stamp)
    def _stamp(op: Stamp, path: tuple[str, ...]) -> list[tuple[Any, Source]] | None:
        if path[:1] != (op.field,):
            return None
        return [(True, Const(op.value, path[1:]))]

    # Every document stored at 1 has stamp 7 once upgraded; none has stamp 8.
    assert version_filter(Stamped, {"stamp": 7}) == {
        "$or": [
            {"__version__": {"$nin": ["1", 1]}, "stamp": 7},
            {"__version__": {"$in": ["1", 1]}},
        ]
    }
    assert version_filter(Stamped, {"stamp": 8}) == {"__version__": {"$nin": ["1", 1]}, "stamp": 8}


# ----------------------------------------------------------------------
# The property
# ----------------------------------------------------------------------
KEYS = ("a", "b", "c")
query_path = st.tuples(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(tuple),
    st.sampled_from([(), (), (MODEL_KEY,)]),
).map(lambda t: t[0] + t[1])
references = st.lists(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=2).map(tuple), max_size=1
)


def related_paths(op: Operation) -> list[tuple[str, ...]]:
    """The paths an operation names, the paths on the way to them and one step inside
    them, and an embedded model's name there: where its cases differ."""
    named = [getattr(op, a) for a in ("parts", "src_parts", "dst_parts") if hasattr(op, a)]
    found: set[tuple[str, ...]] = set()
    for parts in named:
        found.update(tuple(parts[:i]) for i in range(1, len(parts) + 1))
        found.update((*parts, k) for k in KEYS)
    found.update((*p, MODEL_KEY) for p in list(found))
    return sorted(found)


def at(doc: Any, parts: tuple[str, ...]) -> Any:
    """The value at a path, as a query sees it (`Unsure` through a list)."""
    return values_at(doc, parts)


def kinds(value: Any) -> set[str]:
    """What ``$exists`` and ``$type`` see of a value."""
    if value is MISSING:
        return {"missing"}
    found = {type_of(value)}
    if isinstance(value, list):
        found.update(type_of(v) for v in value)
    return found


def same(a: Any, b: Any) -> bool:
    return a is b if MISSING in (a, b) else same_value(a, b)


def expected_holds(source: Source, before: Document, got: Any) -> bool:
    """Whether the value `got` at the path after the operation is what `source` says."""
    if isinstance(source, Field):
        return same(got, at(before, source.parts))
    if isinstance(source, Const):
        return same(got, values_at(source.value, source.rest) if source.rest else source.value)
    if isinstance(source, Converted):
        assert isinstance(source.inner, Field)
        stored = at(before, source.inner.parts)
        if stored is MISSING or stored is None:
            return same(got, stored)
        try:
            return same(got, convert_value(stored, source.to))
        except ConversionError:
            return same(got, stored)
    if isinstance(source, Doc):
        return isinstance(got, dict)
    assert isinstance(source, Shape)
    return kinds(got) == kinds(at(before, source.parts))


def test_each_form_says_what_the_python_form_does() -> None:
    counts = {"compared": 0, "left alone": 0, "refused documents": 0, "undecided": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(*OPERATIONS.values()), document, st.data(), embedded_models, references)
    def check(
        op: Operation,
        doc: Document,
        data: st.DataObject,
        models: dict[Any, str],
        refs: list[tuple[str, ...]],
    ) -> None:
        parts = data.draw(st.one_of(st.sampled_from(related_paths(op)), query_path))
        bound = ops.Operations([op], embedded=ModelPaths(models, refs)).operations[0]
        after = copy_document(doc)
        try:
            bound.apply(after)
        except ops.OperationError:
            # The step fails there: the document stays as stored, and the form
            # must say so (a conversion that fails leaves the value).
            after = doc
            counts["refused documents"] += 1
        try:
            cases = sources(bound, parts)
            got = at(after, parts)
            if cases is None:
                assert same(got, at(doc, parts)), (op, doc, parts, after)
                counts["left alone"] += 1
                return
            holding = [source for guard, source in cases if evaluate(guard, doc)]
            assert len(holding) == 1, (op, doc, parts, cases)
            assert expected_holds(holding[0], doc, got), (op, doc, parts, after, holding[0])
        except (Unsure, Refused):
            counts["undecided"] += 1  # a path into a list: the server's to follow
            return
        counts["compared"] += 1

    check()
    print(f"\nquery sources against the Python form: {counts}")
    assert counts["compared"] > 0
