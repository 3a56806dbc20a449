"""Messages that say the right thing: a run's steps named in its direction,
every one of them; the history's line of a model that had nothing to do and
of ``stamp --accept-checksums``; a dry run's sample summed up, its failures
shown; `UntranslatableQueryError` saying "stored" only of versions stored.

"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from atom.api import Str
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    LegacyQueryError,
    MigrationRegistry,
    UntranslatableQueryError,
    VersionedModel,
    guard_queries,
    ops,
    register_step,
    version_filter,
)
from atomdb_migrate.cli.exits import EXIT_STEP
from atomdb_migrate.cli.output import describe_run, step_lines, step_name
from atomdb_migrate.commands.upgrade import ModelReport
from atomdb_migrate.model.finders import forget_surveys

from .project import CUSTOMER, ORDER, Project

#: Examples of each property test; raise them with RUN_MESSAGES_EXAMPLES.
RUN_MESSAGES_EXAMPLES = int(os.environ.get("RUN_MESSAGES_EXAMPLES", "200"))

#: A step of operations, so that the server runs it (SecantusDB).
TIER_STEP = '''"""Give every customer a tier."""
from atomdb_migrate import ops

model = "clidemo.Customer"
from_version = "2"
to_version = "3"
operations = [ops.add_field("tier", "basic")]
'''


# ---------------------------------------------------------------------------
# A run's steps: every one, in the run's direction
# ---------------------------------------------------------------------------
def test_a_downgrade_names_its_direction_and_every_step(project: Project) -> None:
    (project.path / "migrations" / "0002_add_tier.py").write_text(TIER_STEP)
    project.seed(5)
    result = project.invoke("upgrade", "Customer", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "  step 1 -> 2: 5 documents\n" in result.output
    assert "  step 2 -> 3: 5 documents (on the server)\n" in result.output

    result = project.invoke("downgrade", "Customer", "--to", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "  step 3 -> 2 (downgrade): 5 documents (on the server)\n" in result.output
    assert "  step 2 -> 1 (downgrade): 5 documents\n" in result.output

    result = project.invoke("downgrade", "Customer", "--to", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "5 downgraded to 1" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("  step ")]
    assert lines == [
        "  step 3 -> 2 (downgrade): 5 documents (on the server)",
        "  step 2 -> 1 (downgrade): 5 documents",
    ]
    assert "2 -> 3" not in result.output and project.versions() == {"1": 5}


def chains() -> st.SearchStrategy[tuple[list[str], str, set[int]]]:
    """Consecutive versions (as stored: "1", "1.5", "2"...), a direction, and which
    of the steps between them ran on the server."""
    versions = st.lists(st.integers(0, 40), min_size=2, max_size=6, unique=True).map(
        lambda xs: [str(x / 2).removesuffix(".0") for x in sorted(xs)]
    )
    return versions.flatmap(
        lambda vs: st.tuples(
            st.just(vs),
            st.sampled_from(["upgrade", "downgrade"]),
            st.sets(st.integers(0, len(vs) - 2)),
        )
    )


@settings(max_examples=RUN_MESSAGES_EXAMPLES, deadline=None)
@given(chain=chains(), dry=st.booleans())
def test_every_step_is_named_in_the_direction_it_is_taken(
    chain: tuple[list[str], str, set[int]], dry: bool
) -> None:
    versions, direction, server = chain
    # The report names a step by its versions, whichever way it is taken;
    # a downgrade takes the newest first.
    labels = [f"{a} -> {b}" for a, b in pairwise(versions)]
    order = list(range(len(labels)))
    if direction == "downgrade":
        order.reverse()
    report = ModelReport(
        "m",
        versions[0] if direction == "downgrade" else versions[-1],
        direction,  # type: ignore[arg-type]
        steps={labels[i]: 7 for i in order},
        server_steps={labels[i]: 7 for i in order if i in server},
    )
    lines = step_lines(report, dry_run=dry)
    # Independently of the labels: the versions walked in the run's direction.
    walked = versions if direction == "upgrade" else versions[::-1]
    expected = [f"step {a} -> {b}" for a, b in pairwise(walked)]
    assert [re.sub(r"( \(downgrade\))?: .*", "", line) for line in lines] == expected
    for line, i in zip(lines, order, strict=True):
        assert ("(downgrade)" in line) == (direction == "downgrade")
        assert ("(on the server)" in line) == (i in server)
    for label in labels:
        assert step_name(label, "upgrade") == label


# ---------------------------------------------------------------------------
# The history: a model that had nothing to do, stamp --accept-checksums
# ---------------------------------------------------------------------------
def test_history_says_what_each_model_and_each_stamp_did(project: Project) -> None:
    project.seed(3)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    assert project.invoke("upgrade", "--no-progress").exit_code == 0  # nothing left
    assert project.invoke("stamp", "--accept-checksums").exit_code == 0
    assert project.invoke("stamp", "--accept-checksums", "Customer").exit_code == 0
    result = project.invoke("history")
    assert result.exit_code == 0, result.output
    runs = result.output.split("runs:\n", 1)[1].splitlines()
    assert runs[0].endswith(" recorded the checksums of 2 steps of clidemo.Customer")
    assert runs[1].endswith(" recorded the checksums of 3 steps of clidemo.Customer, clidemo.Order")
    assert runs[2].endswith(f"{CUSTOMER}: nothing to do; {ORDER}: nothing to do"), runs[2]
    assert runs[3].endswith(
        # Every document pending: the index is made after the writes.
        f"{CUSTOMER}: upgraded 3, version_index created after; {ORDER}: version_index created"
    )
    assert not re.search(r": ;|:$", "\n".join(runs))


def counts_records() -> st.SearchStrategy[dict[str, Any]]:
    numbers = st.integers(0, 3)
    counts = st.fixed_dictionaries(
        {},
        optional={
            "target": st.just("3"),
            "steps": st.dictionaries(st.sampled_from(["1 -> 2", "2 -> 3"]), numbers),
            "upgraded": numbers,
            "downgraded": numbers,
            "skipped": numbers,
            "failed": numbers,
            "newer": numbers,
            "stamped": numbers,
            "server_steps": st.dictionaries(st.just("1 -> 2"), numbers),
            "collection": st.lists(st.just("created index a_1 {a: 1}"), max_size=1),
        },
    )
    return st.fixed_dictionaries(
        {
            "command": st.sampled_from(["upgrade", "downgrade", "stamp"]),
            "outcome": st.sampled_from(["succeeded", "failed"]),
            "started_at": st.just(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
            "duration_s": st.just(0.5),
            "models": st.dictionaries(st.sampled_from(["a.A", "b.B", "c.C"]), counts),
        },
        optional={
            "arguments": st.fixed_dictionaries(
                {"accept_checksums": st.booleans(), "models": st.lists(st.just("a.A"))}
            ),
            "checksums": st.lists(st.just({"model": "a.A"}), max_size=3),
        },
    )


@settings(max_examples=RUN_MESSAGES_EXAMPLES, deadline=None)
@given(run=counts_records())
def test_a_recorded_run_says_something_of_each_model(run: dict[str, Any]) -> None:
    line = describe_run(run)
    assert not re.search(r"[\w.]+: (;|$)", line), line
    if run.get("arguments", {}).get("accept_checksums"):
        n = len(run["checksums"]) if "checksums" in run else "?"
        assert f"recorded the checksums of {n} steps" in line
        return
    for model, counts in run["models"].items():
        shown = re.search(rf"{re.escape(model)}: ([^;]+)", line)
        assert shown is not None, line
        if counts.get("stamped"):
            assert f"stamped {counts['stamped']} at" in shown[1]


# ---------------------------------------------------------------------------
# A dry run's sample: summed up, its failures shown
# ---------------------------------------------------------------------------
def test_a_dry_run_sums_up_its_sample_and_shows_each_failure(project: Project) -> None:
    project.seed(25)
    result = project.invoke("upgrade", "Customer", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "  sample of 20 documents (stored at 1: 20): all restore\n" in result.output
    assert "sample _id=" not in result.output

    project.db[CUSTOMER].update_one({"name": "Ada 3"}, {"$set": {"name": "BOOM"}})
    boom = project.db[CUSTOMER].find_one({"name": "BOOM"})
    assert boom is not None
    result = project.invoke("upgrade", "Customer", "--dry-run", "--sample", "5")
    assert result.exit_code == EXIT_STEP, result.output
    assert "  sample of 5 documents (stored at 1: 5): 4 restore, 1 fail\n" in result.output
    failed = [line for line in result.output.splitlines() if "sample _id=" in line]
    assert len(failed) == 1 and repr(boom["_id"]) in failed[0]
    assert "FAILS:" in failed[0] and "cannot split BOOM" in failed[0]


# ---------------------------------------------------------------------------
# UntranslatableQueryError: "stored" only of the versions stored
# ---------------------------------------------------------------------------
class Ticket(VersionedModel):
    __model__ = "messages.Ticket"
    __version__ = 2

    title = Str()
    slug = Str()


def ticket_steps() -> None:
    """0 -> 1 computes the slug in Python; 1 -> 2 renames a field on the server."""
    register_step(Ticket, 0, 1, lambda doc: doc.update(slug=doc["title"].lower()))
    register_step(Ticket, 1, 2, operations=[ops.rename_field("heading", "title")])


def test_the_error_says_stored_only_of_versions_stored(registry: MigrationRegistry) -> None:
    ticket_steps()
    with pytest.raises(UntranslatableQueryError) as caught:
        version_filter(Ticket, {"slug": "a"})
    error = caught.value
    assert (error.version, error.stored) == ("0", False)
    assert "stored at version 0" not in str(error)
    assert "documents at version 0, which the chain upgrades from, if any are stored" in str(error)
    with pytest.raises(UntranslatableQueryError) as caught:
        version_filter(Ticket, {"slug": "a"}, versions=["0", "1"])
    assert caught.value.stored and "(documents stored at version 0)" in str(caught.value)
    # Without documents at 0, the filter goes through.
    assert version_filter(Ticket, {"slug": "a"}, versions=["1"]) == {"slug": "a"}


async def test_the_guard_and_the_error_agree(db: Any, registry: MigrationRegistry) -> None:
    ticket_steps()
    collection = db[Ticket.__model__]
    await collection.insert_one({"heading": "A", "slug": "a", "__version__": "1"})
    forget_surveys()
    # Nothing is stored at 0: the guard has nothing to say, and neither has a
    # query for the versions stored; one for every version says "if any".
    guard_queries("error")
    try:
        assert await Ticket.objects.count_documents({"slug": "a"}) == 1
    finally:
        guard_queries("off")
    assert await Ticket.count({"slug": "a"}, stored=True) == 1
    with pytest.raises(UntranslatableQueryError, match="if any are stored"):
        await Ticket.count({"slug": "a"})
    # Stored at 0: both say so.
    await collection.insert_one({"title": "B", "__version__": "0"})
    forget_surveys()
    guard_queries("error")
    try:
        with pytest.raises(LegacyQueryError) as caught:
            await Ticket.objects.count_documents({"slug": "b"})
    finally:
        guard_queries("off")
    assert "the 2 document(s) stored at versions" in str(caught.value)
    assert "(documents stored at version 0)" in str(caught.value)
    with pytest.raises(UntranslatableQueryError) as raised:
        await Ticket.count({"slug": "b"}, stored=True)
    assert raised.value.stored and "(documents stored at version 0)" in str(raised.value)


@settings(max_examples=RUN_MESSAGES_EXAMPLES, deadline=None)
@given(given_versions=st.none() | st.lists(st.sampled_from(["0", "1", "2"]), unique=True))
def test_stored_is_said_of_the_versions_given_alone(given_versions: list[str] | None) -> None:
    with MigrationRegistry.instance().isolated():
        ticket_steps()
        try:
            version_filter(Ticket, {"slug": "a"}, versions=given_versions)
        except UntranslatableQueryError as error:
            assert error.stored == (given_versions is not None)
            if given_versions is not None:
                assert error.version in given_versions
            said = f"stored at version {error.version}" in str(error)
            assert said == (given_versions is not None)
        else:
            assert given_versions is not None and "0" not in given_versions
