"""`find(on_error="skip")` against a model of what each document does, over generated collections.

Hypothesis draws collections of documents stored at every version (legacy
ones, current ones, one newer than the code, one whose version is not a
version, one with none), some of which a step fails on, and some whose
upgraded value a member refuses (the model raises on restore, atom-db's
``__on_error__ = "raise"``). For a filter on a field no step changes:

- ``find(query, on_error="skip")`` returns exactly the documents predicted
  to restore, with the values predicted, and keeps one error per other
  matched document, of the predicted class, naming its ``_id``;
- objects and errors together are what ``count(query)`` counts;
- ``find(query)`` raises one of those errors, or none when none fails;
- a second read, while the first one's errors are kept, says the same.

``FIND_SKIP_EXAMPLES`` sets the number of examples (default 60).

"""

from __future__ import annotations

import os
from typing import Any

import pytest
from atom.api import Int, Str
from bson import Int64, ObjectId
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    InvalidVersionError,
    MigrateError,
    MigrationRegistry,
    NewerDocumentError,
    RestoreFailedError,
    StepFailedError,
    VersionedModel,
    ops,
    register_step,
)


class Ledger(VersionedModel):
    __model__ = "find_skip.Ledger"
    __version__ = 3
    __on_error__ = "raise"

    title = Str()
    total = Int()


def lift(doc: dict[str, Any]) -> None:
    """1 -> 2: ``amount`` becomes ``total``; a document marked ``boom`` makes it fail."""
    if doc.pop("boom", False):
        raise ValueError("this document cannot be lifted")
    doc["total"] = doc.pop("amount", 0)


def steps() -> None:
    register_step(Ledger, 0, 1, operations=[ops.add_field("amount", 0)])
    register_step(Ledger, 1, 2, lift, changes=["amount", "total", "boom"])
    register_step(Ledger, 2, 3, operations=[ops.set_default_where_missing("note", "")])


#: Stored values of the amount/total field: Int takes ints (Int64 is one), not the rest.
VALUES = [0, 7, -3, Int64(5), 2**40, "7", 7.0, None, [7]]

#: Stored versions: legacy ones in several spellings, the head, a newer one, no
#: version at all, and one that is not a version.
VERSIONS = ["1", 1, 1.0, "2", Int64(2), "3", "9", None, "one"]


def _accepted(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def predict(doc: dict[str, Any]) -> tuple[type[MigrateError] | None, Any]:
    """What restoring `doc` gives: the class of its error (None: it restores) and its total."""
    version = doc.get("__version__", 0)
    if version == "one":
        return InvalidVersionError, None
    if version == "9":
        return NewerDocumentError, None
    if version in (None, 0):  # version 0: the first step adds amount 0 (no value kept)
        return None, 0
    if float(version) < 2:
        if doc.get("boom"):
            return StepFailedError, None
        value = doc.get("amount", 0)
    else:
        value = doc.get("total", 0)
    return (None, value) if _accepted(value) else (RestoreFailedError, None)


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs = []
    for i in range(draw(st.integers(1, 8))):
        doc: dict[str, Any] = {"_id": ObjectId(f"{i + 1:024x}")}
        doc["title"] = draw(st.sampled_from(["A", "B"]))
        version = draw(st.sampled_from(VERSIONS))
        if version is not None:
            doc["__version__"] = version
        field = "amount" if version in (1, 1.0, "1") else "total"
        if version is not None and draw(st.booleans()):
            doc[field] = draw(st.sampled_from(VALUES))
        if field == "amount" and draw(st.booleans()):
            doc["boom"] = True
        docs.append(doc)
    return docs


@settings(
    max_examples=int(os.environ.get("FIND_SKIP_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=documents(), query=st.sampled_from([{}, {"title": "A"}]))
async def test_skip_leaves_out_exactly_the_documents_that_fail_and_names_them(
    db: Any, docs: list[dict[str, Any]], query: dict[str, Any]
) -> None:
    collection = db[Ledger.__model__]
    await collection.delete_many({})
    Ledger.objects.cache.clear()
    await collection.insert_many([dict(d) for d in docs])
    matched = [d for d in docs if query.get("title", d["title"]) == d["title"]]
    predicted = {d["_id"]: predict(d) for d in matched}
    failing = {i: kind for i, (kind, _) in predicted.items() if kind is not None}
    event(f"{len(failing)} of {len(matched)} fail")
    with MigrationRegistry.instance().isolated():
        steps()
        found = await Ledger.find(query, on_error="skip")
        assert {o._id: o.total for o in found} == {
            i: total for i, (kind, total) in predicted.items() if kind is None
        }
        assert {e.doc_id: type(e) for e in found.skipped} == failing
        for error in found.skipped:
            assert f"_id={error.doc_id!r}" in str(error), error
        assert len(found) + len(found.skipped) == await Ledger.count(query)
        # The errors kept hold the objects that failed: a second read is the same.
        again = await Ledger.find(query, on_error="skip")
        assert sorted(o._id for o in again) == sorted(o._id for o in found)
        assert [e.doc_id for e in again.skipped] == [e.doc_id for e in found.skipped]
        Ledger.objects.cache.clear()
        if failing:
            with pytest.raises(MigrateError) as raised:
                await Ledger.find(query)
            assert failing.get(raised.value.doc_id) is type(raised.value)
        else:
            assert len(await Ledger.find(query)) == len(matched)
