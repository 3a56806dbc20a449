"""One census of stored versions: `StepGraph.census`, `steps_to`, `steps_above`
and `known_versions`, against the hand-written buckets they replace.

Each reference below is the code as it was written, by hand, where the
census is now used (or is to be: the runner, ``status`` and the collection
state). Hypothesis draws graphs of steps (gaps, steps across other steps'
versions, downgrades or not), stored ``__version__`` values in every BSON
form (strings, ints, doubles, Decimal128, null, values that are no version)
and targets in both directions; each property asks that the census gives
what the reference gives. ``CENSUS_EXAMPLES`` sets the examples of each
(default 200).

"""

from __future__ import annotations

import os
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from atomdb_migrate.exceptions import InvalidVersionError, short_repr
from atomdb_migrate.queries import version_filters
from atomdb_migrate.steps.versions import (
    BASE_VERSION,
    Census,
    Plan,
    Step,
    StepGraph,
    parse_version,
)

CENSUS_EXAMPLES = int(os.environ.get("CENSUS_EXAMPLES", "200"))

#: The versions the graphs are drawn on.
VERSIONS = ["0", "0.5", "1", "1.5", "2", "3", "4", "10", "12"]

#: Stored ``__version__`` values: the versions in several BSON forms, a
#: missing one, and values that are no version.
RAWS = [
    *VERSIONS,
    None,
    0,
    1,
    2,
    4,
    1.0,
    1.5,
    2.0,
    Decimal128("2"),
    "2.0",
    "v1",
    "x",
    True,
    9,
    "10",
]


def noop(doc: dict[str, Any]) -> None:
    pass


@st.composite
def graphs(draw: st.DrawFn) -> StepGraph:
    """A graph of steps, each from a version to a greater one; with or without downgrades."""
    graph = StepGraph("census.M")
    leaving = draw(st.lists(st.sampled_from(VERSIONS[:-1]), unique=True, max_size=6))
    for start in leaving:
        above = [v for v in VERSIONS if parse_version(v) > parse_version(start)]
        end = draw(st.sampled_from(above))
        down = noop if draw(st.booleans()) else None
        graph.add(Step("census.M", start, end, noop, down, source=f"s{start}"))
    return graph


ROWS = st.lists(st.tuples(st.sampled_from(RAWS), st.integers(1, 5)), max_size=8)
VERSION = st.sampled_from(VERSIONS).map(parse_version)


def _label(step: Step) -> str:
    return f"{step.from_version} -> {step.to_version}"


def survey_reference(
    graph: StepGraph, rows: list[tuple[Any, int]], target: Version, head: Version, down: bool
) -> tuple[dict[str, int], tuple[Step, ...], int, int]:
    """`Runner._survey`, as written: the documents per step, the longest chain,
    the documents not migrated (newer, beyond, or broken), and those not current."""
    steps: dict[str, int] = {}
    chain: tuple[Step, ...] = ()
    others = pending = 0
    for raw, n in sorted(rows, key=lambda r: short_repr(r[0])):
        plan = graph.plan(raw, target, head=head, downgrade=down)
        if plan.kind == "current":
            continue
        pending += n
        for s in plan.steps:
            steps[_label(s)] = steps.get(_label(s), 0) + n
        if len(plan.steps) > len(chain):
            chain = plan.steps
        if plan.kind != "migrate":
            others += n
    return steps, chain, others, pending


def status_reference(
    graph: StepGraph, rows: list[tuple[Any, int]], head: Version
) -> tuple[int, int, int]:
    """``command.status``, as written: pending, newer and invalid documents."""
    pending = newer = invalid = 0
    for raw, n in rows:
        plan = graph.plan(raw, head, head=head)
        if plan.kind == "invalid":
            invalid += n
        elif plan.kind == "newer":
            newer += n
        elif plan.kind != "current":
            pending += n  # migrate, or missing a step: behind either way
    return pending, newer, invalid


def guard_reference(
    graph: StepGraph, rows: list[tuple[Any, int]], head: Version, newer_too: bool
) -> list[tuple[Any, int]]:
    """The query guard's legacy documents, as written."""
    kinds = ("migrate", "newer") if newer_too else ("migrate",)
    return [(raw, n) for raw, n in rows if graph.plan(raw, head, head=head).kind in kinds]


def known_reference(graph: StepGraph, head: Version) -> list[str]:
    """``command.known_versions``, as written."""
    found = {parse_version(BASE_VERSION), head}
    for s in graph.steps:
        found.update((s.from_key, s.to_key))
    return [str(v) for v in sorted(found)]


def model_known_reference(graph: StepGraph, head: Version) -> set[str]:
    """``model._known_versions``, as written (a list sorted as strings; as a set here)."""
    known = {str(head), BASE_VERSION}
    for s in graph.steps:
        known.update(
            v for v, k in ((s.from_version, s.from_key), (s.to_version, s.to_key)) if k <= head
        )
    return known


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(graph=graphs(), rows=ROWS, target=VERSION, head=VERSION, down=st.booleans())
def test_the_census_buckets_as_the_runner_did(
    graph: StepGraph, rows: list[tuple[Any, int]], target: Version, head: Version, down: bool
) -> None:
    ordered = sorted(rows, key=lambda r: short_repr(r[0]))
    census = graph.census(ordered, target, head=head, downgrade=down)
    steps, chain, others, pending = survey_reference(graph, rows, target, head, down)
    assert {_label(s): n for s, n in census.through().items()} == steps
    assert [_label(s) for s in census.through()] == list(steps)
    assert census.chain == chain
    assert census.count("newer", "beyond", "invalid", "missing") == others
    assert census.off_target == pending
    assert census.off_target + census.current == sum(n for _, n in rows)
    for row, (raw, n) in zip(census.rows, ordered, strict=True):
        assert (row.raw, row.count) == (raw, n)
        assert row.plan == graph.plan(raw, target, head=head, downgrade=down)


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(graph=graphs(), rows=ROWS, head=VERSION, newer_too=st.booleans())
def test_the_census_buckets_as_status_and_the_guard_did(
    graph: StepGraph, rows: list[tuple[Any, int]], head: Version, newer_too: bool
) -> None:
    census = graph.census(rows, head, head=head)
    assert (census.pending, census.newer, census.invalid) == status_reference(graph, rows, head)
    assert census.pending == census.count("migrate") + census.count("missing")
    assert census.beyond == 0  # at the model's version, nothing is past the target
    kinds = ("migrate", "newer") if newer_too else ("migrate",)
    legacy = [(row.raw, row.count) for row in census.of(*kinds)]
    assert legacy == guard_reference(graph, rows, head, newer_too)


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(graph=graphs(), version=VERSION, head=VERSION)
def test_the_steps_up_to_and_above_a_version(
    graph: StepGraph, version: Version, head: Version
) -> None:
    # collection_state, command.py (twice), queries/renamed_models: filtered by hand.
    assert graph.steps_to(version) == [s for s in graph.steps if s.to_key <= version]
    assert graph.steps_above(version) == [s for s in graph.steps if s.from_key >= version]
    assert [str(v) for v in graph.known_versions(head)] == known_reference(graph, head)
    model_known = {str(v) for v in graph.known_versions(head) if v <= head}
    assert model_known == model_known_reference(graph, head)
    assert graph.known_versions() == sorted(
        {parse_version(BASE_VERSION), *(v for s in graph.steps for v in (s.from_key, s.to_key))}
    )


def legacy_reference(graph: StepGraph, head: Version) -> dict[Version, tuple[Step, ...]]:
    """``version_filters._legacy_versions``, as written."""
    found: dict[Version, tuple[Step, ...]] = {}
    for s in graph.steps:
        if s.from_key < head:
            plan = graph.plan(str(s.from_key), head, head=head)
            if plan.kind == "migrate":
                found[s.from_key] = plan.steps
    return found


def groups_reference(graph: StepGraph, head: Version, versions: list[Any] | None) -> Any:
    """``version_filters._groups``, as written."""
    legacy = legacy_reference(graph, head)
    if versions is None:
        return {v: (steps, version_filters._forms(v)) for v, steps in legacy.items()}
    groups: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    for raw in versions:
        plan = graph.plan(raw if not isinstance(raw, Version) else str(raw), head, head=head)
        if plan.kind != "migrate" or plan.stored is None:
            continue
        _, forms = groups.setdefault(plan.stored, (plan.steps, version_filters._forms(plan.stored)))
        if not isinstance(raw, Version) and not any(version_filters._same(raw, f) for f in forms):
            forms.append(raw)
    return groups


def newer_reference(graph: StepGraph, head: Version, versions: list[Any] | None) -> Any:
    """``version_filters._newer_groups``, as written (for a model reading newer documents back)."""
    found: dict[Version, tuple[tuple[Step, ...], list[Any]]] = {}
    raws: list[Any] = (
        sorted({str(s.to_key) for s in graph.steps if s.to_key > head})
        if versions is None
        else list(versions)
    )
    for raw in raws:
        plan = graph.plan(raw, head, head=head)
        if plan.kind != "newer" or plan.stored is None:
            continue
        back = graph.plan(raw, head, head=plan.stored, downgrade=True)
        if back.kind != "migrate":
            continue
        _, forms = found.setdefault(plan.stored, (back.steps, version_filters._forms(plan.stored)))
        if not isinstance(raw, Version) and not any(version_filters._same(raw, f) for f in forms):
            forms.append(raw)
    return found


VERSIONS_GIVEN = st.none() | st.lists(st.sampled_from(RAWS) | VERSION, max_size=6)


@settings(
    max_examples=CENSUS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(graph=graphs(), head=VERSION, versions=VERSIONS_GIVEN)
def test_the_queries_group_legacy_versions_as_before(
    graph: StepGraph, head: Version, versions: list[Any] | None, monkeypatch_newer: None
) -> None:
    # In order too: the order of the groups is the order of the filter's clauses.
    legacy = version_filters._legacy_versions(graph, head)
    assert list(legacy.items()) == list(legacy_reference(graph, head).items())
    groups = version_filters._groups("census.M", graph, head, versions)
    assert list(groups.items()) == list(groups_reference(graph, head, versions).items())
    newer = version_filters._newer_groups("census.M", graph, head, versions)
    assert list(newer.items()) == list(newer_reference(graph, head, versions).items())


@pytest.fixture
def monkeypatch_newer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model reads documents newer than itself through the downgrades."""
    monkeypatch.setattr(version_filters, "reads_newer_downgraded", lambda name: True)


def test_the_census_names_its_buckets() -> None:
    graph = StepGraph("census.M")
    for start, end in (("0", "1"), ("1", "2"), ("3", "4")):
        graph.add(Step("census.M", start, end, noop, source=f"s{start}"))
    head = parse_version("2")
    rows = [("0", 3), (1, 2), ("2", 5), (2.0, 1), ("3", 4), ("4", 7), ("x", 1), ("2.5", 6)]
    census = graph.census(rows, head, head=head)
    assert isinstance(census, Census) and all(isinstance(r.plan, Plan) for r in census.rows)
    assert census.current == 6
    assert census.count("migrate") == 5
    assert census.newer == 4 + 7 + 6
    assert census.invalid == 1
    assert census.pending == 5 and census.off_target == 5 + 17 + 1
    assert [r.raw for r in census.of("newer")] == ["3", "4", "2.5"]
    assert census.chain == tuple(graph.steps[:2])
    assert {_label(s): n for s, n in census.through().items()} == {"0 -> 1": 3, "1 -> 2": 5}
    below = parse_version("1")
    assert [_label(s) for s in graph.steps_to(below)] == ["0 -> 1"]
    assert [_label(s) for s in graph.steps_above(below)] == ["1 -> 2", "3 -> 4"]
    assert [str(v) for v in graph.known_versions(head)] == ["0", "1", "2", "3", "4"]
    assert isinstance(census.of("invalid")[0].plan.error, InvalidVersionError)
