"""How `history` names a downgrade of releases, over generated records: what
was asked (``--release -N`` or ``--to-release NAME``), the releases taken back,
and whether it took them back (only a run that succeeded did)."""

from __future__ import annotations

import os
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.releases import release_label

#: Examples of the property test; raise it with RELEASE_LABEL_EXAMPLES.
RELEASE_LABEL_EXAMPLES = int(os.environ.get("RELEASE_LABEL_EXAMPLES", "200"))

OUTCOMES = ["running", "succeeded", "failed", "interrupted", "abandoned"]
names = st.text(string.ascii_letters + string.digits + ".=,_", min_size=1, max_size=12)


@settings(max_examples=RELEASE_LABEL_EXAMPLES, deadline=None)
@given(
    back=st.one_of(st.integers(1, 99), st.none()),
    name=names,
    undone=st.lists(names, min_size=1, max_size=4),
    outcome=st.sampled_from(OUTCOMES),
)
def test_a_downgrade_of_releases_says_what_it_took_back(
    back: int | None, name: str, undone: list[str], outcome: str
) -> None:
    asked = f"-{back}" if back is not None else name
    run = {
        "command": "downgrade",
        "outcome": outcome,
        "arguments": {
            "release": asked,
            "undone": [{"id": i, "release": u} for i, u in enumerate(undone)],
        },
    }
    label = release_label(run)
    listed = ", ".join(undone)
    verb = {"succeeded": "took back", "running": "taking back"}.get(outcome, "to take back")
    said = f"release {asked}" if back is not None else f"to release {asked}"
    assert label == f" {said} ({verb} {listed})"
    assert ("took back" in label) == (outcome == "succeeded")


@given(name=names)
def test_an_upgrade_names_its_release(name: str) -> None:
    run = {"command": "upgrade", "outcome": "succeeded", "arguments": {"release": name}}
    assert release_label(run) == f" release {name}"
