"""The path checks agree in all their forms, on generated documents.

"The value at a path is there" and "a value can be set at a path" are
written once in Python (`get_path`, `settable`), once as aggregation
expressions (`exists_expr`, `settable_expr`) and once as formulas
(`exists_formula`, `settable_formula`); the query conditions of a step's
fast form (`exists_query`, `settable_query`) are those formulas rendered.
For generated documents, paths and embedded models (references among
them), each form must say the same of each document:

- the Python form;
- the formula, evaluated in Python (where Python can decide it: a path
  into a list is the server's to follow);
- the formula rendered, and the query conditions, as a filter on the store;
- the aggregation expression, as ``$expr`` (on a real server only:
  mongomock has no ``$type`` in expressions).

mongomock does not implement ``{"$type": "null"}`` either: there, the
formula of a carried value (which asks for a null embedded model) is
compared in Python only; the count of those is printed.

The stores: mongomock, and SecantusDB (``--backend`` narrows them).
``PATH_FORMS_EXAMPLES`` sets the examples (default 100).

"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.core.conditions import Formula, filters_of, missing_satisfies, render
from atomdb_migrate.operations.paths import (
    MISSING,
    ModelPaths,
    exists_expr,
    exists_formula,
    exists_query,
    get_path,
    settable,
    settable_expr,
    settable_formula,
    settable_query,
)
from atomdb_migrate.queries.formulas import evaluate
from atomdb_migrate.queries.matching import Unsure

#: Examples of the property (raise it for a longer run).
EXAMPLES = int(os.environ.get("PATH_FORMS_EXAMPLES", "100"))

KEYS = ("a", "b", "c")
key = st.sampled_from(KEYS)
path = st.lists(key, min_size=1, max_size=4).map(tuple)
scalar = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["x", ""]))
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(key, inner, max_size=3),
        st.builds(lambda d: {**d, "__model__": "m.A"}, st.dictionaries(key, inner, max_size=2)),
    ),
    max_leaves=8,
)
documents = st.lists(st.dictionaries(key, value, max_size=3), min_size=1, max_size=6)
short_paths = st.lists(key, min_size=1, max_size=3).map(tuple)
models = st.builds(
    ModelPaths,
    st.dictionaries(short_paths, st.just("m.A"), max_size=3),
    st.lists(short_paths, max_size=1),
)


def stores() -> list[str]:
    return ["mongomock", "secantus"]


@pytest.fixture(params=stores())
def store(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """A collection on the store, through a synchronous client."""
    chosen = request.config.getoption("--backend")
    if chosen and not any(b.startswith(request.param) for b in chosen):
        pytest.skip(f"{request.param} is not among the backends asked for ({', '.join(chosen)})")
    if request.param == "mongomock":
        import mongomock

        client: Any = mongomock.MongoClient()
    else:
        from pymongo import MongoClient

        client = MongoClient(request.getfixturevalue("secantus_url"))
    database = client[f"path_forms_{uuid.uuid4().hex[:10]}"]
    try:
        yield request.param, database["docs"]
    finally:
        client.drop_database(database.name)
        client.close()


def matched(collection: Any, conditions: list[dict[str, Any]], ids: list[int]) -> set[int]:
    """The ``_id``s among `ids` the conditions all select."""
    query = {"$and": [{"_id": {"$in": ids}}, *conditions]}
    return {d["_id"] for d in collection.find(query, {"_id": 1})}


def decided(formula: Formula, doc: dict[str, Any]) -> bool | None:
    """The formula evaluated in Python; None where only the server decides it."""
    try:
        return evaluate(formula, doc)
    except Unsure:
        return None


def test_the_path_checks_agree_in_every_form(store: tuple[str, Any]) -> None:
    name, collection = store
    compared = {
        "python": 0,
        "formula in Python": 0,
        "query": 0,
        "aggregation": 0,
        "not on mongomock: $type null": 0,
    }

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(documents, path, models, st.booleans())
    def check(
        docs: list[dict[str, Any]], parts: tuple[str, ...], embedded: Any, carry: bool
    ) -> None:
        collection.delete_many({})
        collection.insert_many([{**d, "_id": i} for i, d in enumerate(docs)])
        ids = list(range(len(docs)))
        forms: dict[str, tuple[Formula, list[dict[str, Any]], Any, set[int]]] = {
            "exists": (
                exists_formula(parts),
                exists_query(parts),
                exists_expr(parts),
                {i for i, d in enumerate(docs) if get_path(d, parts) is not MISSING},
            ),
            "settable": (
                settable_formula(parts, embedded, carry),
                settable_query(parts, embedded) if not carry else [],
                settable_expr(parts, embedded, carry),
                {i for i, d in enumerate(docs) if settable(d, parts, embedded, carry=carry)},
            ),
        }
        for what, (formula, query, expr, python) in forms.items():
            where = (what, parts, dict(embedded), embedded.references, carry, docs)
            compared["python"] += 1
            for i, doc in enumerate(docs):
                in_python = decided(formula, doc)
                if in_python is not None:
                    assert in_python == (i in python), where
                    compared["formula in Python"] += 1
            if name == "mongomock" and what == "settable" and carry:
                compared["not on mongomock: $type null"] += 1
                continue  # mongomock does not implement {"$type": "null"}
            assert matched(collection, filters_of(formula), ids) == python, where
            assert matched(collection, [render(formula)], ids) == python, where
            if what == "exists" or not carry:
                assert query == filters_of(formula), where  # the query form is derived
                assert matched(collection, query, ids) == python, where
            compared["query"] += 1
            if name != "mongomock":
                assert matched(collection, [{"$expr": expr}], ids) == python, where
                compared["aggregation"] += 1

    check()
    print(f"\n{name}: forms compared {compared}")
    assert compared["formula in Python"] > 0 and compared["query"] > 0
    assert name == "mongomock" or compared["aggregation"] > 0


#: Conditions on a field, each with what a missing value is asked.
CONDITIONS: list[tuple[str, Any]] = [
    ("$exists", True),
    ("$exists", False),
    ("$eq", None),
    ("$eq", 0),
    ("$in", [1, None]),
    ("$in", [1, 2]),
    ("$gte", None),
    ("$lte", None),
    ("$gt", None),
    ("$lt", None),
    ("$gte", 0),
    ("$lt", 5),
    ("$type", "null"),
    ("$regex", "^$"),
]


@pytest.mark.parametrize(("op", "arg"), CONDITIONS, ids=[f"{op} {arg!r}" for op, arg in CONDITIONS])
def test_a_missing_value_satisfies_what_the_store_says(
    store: tuple[str, Any], op: str, arg: Any
) -> None:
    """The one rule for missing values (which the formulas simplify with)."""
    name, collection = store
    if name == "mongomock":
        pytest.skip("mongomock's rules for a missing value are not the servers' ($gte: null)")
    collection.insert_one({"_id": 1})
    expected = collection.count_documents({"f": {op: arg}}) == 1
    assert missing_satisfies(op, arg if op != "$type" else frozenset({arg})) is expected
