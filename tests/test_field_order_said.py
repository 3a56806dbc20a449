"""A step test's expected document whose fields are in another order: at the
top level it is no difference (`assert_upgrades` sorts it), inside an embedded
document it is one, and the failure says why (the server compares embedded
documents in order), over generated documents and orders."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.testing import first_difference

#: Examples of the property test; raise it with FIELD_ORDER_EXAMPLES.
FIELD_ORDER_EXAMPLES = int(os.environ.get("FIELD_ORDER_EXAMPLES", "200"))

keys = st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=6, unique=True)
values = st.one_of(st.integers(-5, 5), st.text(max_size=3))


@settings(max_examples=FIELD_ORDER_EXAMPLES, deadline=None)
@given(names=keys, data=st.data())
def test_another_order_of_an_embedded_document_says_why(names: list[str], data: Any) -> None:
    inner = {name: data.draw(values) for name in names}
    order = data.draw(st.permutations(names).filter(lambda p: list(p) != names))
    shuffled = {name: inner[name] for name in order}
    found = first_difference({"address": inner}, {"address": shuffled})
    assert found is not None
    assert found.startswith("at 'address': the same fields in another order"), found
    assert "compared in order, as the server compares them" in found, found
    # The top level alone: another order, but nothing said about embedded documents.
    top = first_difference(inner, shuffled)
    assert top is not None and "embedded" not in top, top
