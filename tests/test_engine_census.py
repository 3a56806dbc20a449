"""The engine's use of the census: the survey, the respelling, the index phases
and the validator's operation, against the hand-written loops they replace.

Each reference below is the engine's code as it was written, by hand, before
it used `StepGraph.census`, `steps_to` and `steps_above`. Hypothesis draws
graphs of steps (`tests.test_census.graphs`, here with operations on the
collection's indexes and validator), stored ``__version__`` values in every
BSON form and targets in both directions; each property asks that the
engine gives what the reference gives, down to the report a survey leaves
when it refuses a broken chain. ``CENSUS_EXAMPLES`` sets the examples of
each (default 200).

"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from atomdb_migrate.core.storage import VERSION_KEY
from atomdb_migrate.driver.mongo import count_versions
from atomdb_migrate.engine.collection_indexes import index_phases
from atomdb_migrate.engine.collection_state import last_validator_operation
from atomdb_migrate.engine.leg import Leg, label, version_name
from atomdb_migrate.engine.options import DOWNGRADE, UPGRADE
from atomdb_migrate.engine.report import ModelReport
from atomdb_migrate.engine.survey import count_stored, respell_versions, survey
from atomdb_migrate.exceptions import MigrateError, short_repr
from atomdb_migrate.operations.collection import CreateIndex, DropIndex, SetValidator
from atomdb_migrate.operations.running import StepOperations
from atomdb_migrate.schema import indexes
from atomdb_migrate.steps.versions import Step, StepGraph, parse_version
from tests.test_census import ROWS, VERSION, VERSIONS, graphs

CENSUS_EXAMPLES = int(os.environ.get("CENSUS_EXAMPLES", "200"))


class Collection:
    """A collection as the survey and the respelling use it: its name, the
    versions it holds (what `count_versions` would answer), and the updates sent."""

    def __init__(self, name: str, rows: list[tuple[Any, int]]) -> None:
        self.name, self.rows = name, rows
        self.updates: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def update_many(self, query: dict[str, Any], update: dict[str, Any]) -> Any:
        self.updates.append((query, update))
        n = sum(n for raw, n in self.rows if raw == query["$and"][0][VERSION_KEY])
        return type("Result", (), {"modified_count": n})()


class Retry:
    """A `Retry` that answers the counts from the `Collection`, and calls the rest."""

    async def call(self, operation: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        if isinstance(fn, partial) and fn.func in (count_versions, count_stored):
            return list(fn.args[0].rows)
        return await fn()


def make_leg(
    graph: StepGraph, rows: list[tuple[Any, int]], target: Version, head: Version, down: bool
) -> Leg:
    model = type("Model", (), {"__model__": graph.model, "__parsed_version__": head})
    direction = DOWNGRADE if down else UPGRADE
    report = ModelReport(graph.model, str(target), direction.name)
    return Leg(model, Collection("m", rows), target, direction, graph, report)  # type: ignore[arg-type]


def survey_reference(leg: Leg, rows: list[tuple[Any, int]], continue_on_error: bool) -> Any:
    """`engine.survey.survey`'s loop, as written: it fills `leg.report`, and gives
    the chain and the others (or raises, the report as far as it got)."""
    report = leg.report
    chain: tuple[Step, ...] = ()
    others = 0
    for raw, n in sorted(rows, key=lambda r: short_repr(r[0])):
        plan = leg.plan_for(raw)
        if plan.kind == "current":
            continue
        name = version_name(raw)
        report.by_version[name] = report.by_version.get(name, 0) + n
        if plan.error is not None and not continue_on_error:
            raise plan.error
        for s in plan.steps:
            report.steps[label(s)] = report.steps.get(label(s), 0) + n
        if len(plan.steps) > len(chain):
            chain = plan.steps
        if plan.kind != "migrate":
            others += n
    return chain, others


def outcome(run: Callable[[], Any], report: ModelReport) -> tuple[Any, ...]:
    """What a survey gives, or the error it raises, with the report it leaves."""
    try:
        found = run()
    except MigrateError as exc:
        found = exc
    return found, list(report.by_version.items()), list(report.steps.items())


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(
    graph=graphs(),
    rows=ROWS,
    merged=st.lists(ROWS, max_size=2),
    target=VERSION,
    head=VERSION,
    down=st.booleans(),
    continue_on_error=st.booleans(),
)
def test_the_survey_fills_the_report_as_before(
    graph: StepGraph,
    rows: list[tuple[Any, int]],
    merged: list[list[tuple[Any, int]]],
    target: Version,
    head: Version,
    down: bool,
    continue_on_error: bool,
) -> None:
    # The report a refused survey leaves is compared too: `by_version` up to
    # the broken value, `steps` up to the one before.
    leg, expected_leg = (make_leg(graph, rows, target, head, down) for _ in range(2))
    others = tuple(Collection(f"former{i}", r) for i, r in enumerate(merged))
    every = [row for r in (rows, *merged) for row in r]

    def run() -> Any:
        found = asyncio.run(survey(leg, Retry(), others, continue_on_error=continue_on_error))  # type: ignore[arg-type]
        assert found.report is leg.report and found.rows == every
        return found.chain, found.others

    expected = outcome(
        lambda: survey_reference(expected_leg, every, continue_on_error), expected_leg.report
    )
    assert outcome(run, leg.report) == expected


def respell_reference(leg: Leg, rows: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """The values `respell_versions` rewrote, as written: each stored value of a
    current plan but the canonical string (and None), with its count."""
    canonical = str(leg.target)
    found = []
    for raw, n in rows:
        if raw is None or (type(raw) is str and raw == canonical):
            continue
        if leg.plan_for(raw).kind != "current":
            continue
        found.append((raw, n))
    return found


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(
    graph=graphs(), rows=ROWS, target=VERSION, head=VERSION, down=st.booleans(), dry=st.booleans()
)
def test_the_respelling_takes_the_values_it_took(
    graph: StepGraph,
    rows: list[tuple[Any, int]],
    target: Version,
    head: Version,
    down: bool,
    dry: bool,
) -> None:
    # (The runner respells upgrading only; the choice of values is the same both ways.)
    leg = make_leg(graph, rows, target, head, down)
    asyncio.run(respell_versions(leg, rows, Retry(), dry_run=dry))  # type: ignore[arg-type]
    expected = respell_reference(leg, rows)
    sent = [query["$and"][0][VERSION_KEY] for query, _ in leg.collection.updates]
    if dry:
        assert sent == [] and leg.report.respelled == sum(n for _, n in expected)
        return
    assert [(type(v), v) for v in sent] == [(type(raw), raw) for raw, _ in expected]
    modified = sum(n for v in sent for raw, n in rows if raw == v)  # as `Collection` answers
    assert leg.report.respelled == modified


# ----------------------------------------------------------------------
# The index phases and the validator's operation
# ----------------------------------------------------------------------
INDEX_NAMES = ["a_1", "b_1", "c_1"]


@st.composite
def operations(draw: st.DrawFn) -> StepOperations | None:
    """A step's operations on the indexes and the validator (None: a Python step)."""
    if draw(st.booleans()):
        return None
    ops: list[Any] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["create", "drop", "validator", "none"]))
        name = draw(st.sampled_from(INDEX_NAMES))
        if kind == "create":
            ops.append(CreateIndex(name[0], name=name))
        elif kind == "drop":
            ops.append(DropIndex(name))
        elif kind == "validator":
            ops.append(SetValidator(draw(st.sampled_from(["moderate", "strict"]))))
        else:
            ops.append(SetValidator(None))
    return StepOperations(ops)


def noop(doc: dict[str, Any]) -> None:
    pass


@st.composite
def operation_graphs(draw: st.DrawFn) -> StepGraph:
    """A graph of steps whose functions are operations, or Python functions."""
    graph = StepGraph("census.M")
    leaving = draw(st.lists(st.sampled_from(VERSIONS[:-1]), unique=True, max_size=6))
    for start in leaving:
        above = [v for v in VERSIONS if parse_version(v) > parse_version(start)]
        end = draw(st.sampled_from(above))
        up, back = draw(operations()), draw(operations())
        step = Step(
            "census.M", start, end, up or noop, back or noop, source=f"s{start}", operations=up
        )
        graph.add(step)
    return graph


def phases_reference(steps: list[Step], target: Version, down: bool) -> Any:
    """``collection_indexes.index_phases``, as written (on the graph's steps)."""
    if down:
        taken = [s.downgrade_fn for s in reversed(steps) if s.from_key >= target]
    else:
        taken = [s.operations for s in steps if s.to_key <= target]
    found = [op for ops in taken if isinstance(ops, StepOperations) for op in ops.indexes()]
    return indexes.phases(found)


def validator_reference(steps: list[Step], limit: Version) -> SetValidator | None:
    """``collection_state.last_validator_operation``, as written."""
    found = [
        op
        for s in steps
        if s.to_key <= limit and isinstance(s.operations, StepOperations)
        for op in s.operations.validators()
    ]
    return found[-1] if found else None


@settings(max_examples=CENSUS_EXAMPLES, deadline=None)
@given(graph=operation_graphs(), target=VERSION, down=st.booleans())
def test_the_index_phases_and_the_validator_as_before(
    graph: StepGraph, target: Version, down: bool
) -> None:
    assert index_phases(graph, target, down=down) == phases_reference(graph.steps, target, down)
    expected = validator_reference(graph.steps, target)
    assert last_validator_operation(graph, target) is expected


def test_the_survey_keeps_the_report_it_filled_before_a_broken_chain() -> None:
    # "1" has a chain to "3"; "1.5" none (a gap): sorted, "1" comes first.
    graph = StepGraph("census.M")
    for start, end in (("1", "2"), ("2", "3")):
        graph.add(Step("census.M", start, end, noop, source=f"s{start}"))
    head = parse_version("3")
    rows = [("1.5", 2), ("1", 4), ("3", 1), ("x", 3)]
    leg = make_leg(graph, rows, head, head, False)
    try:
        asyncio.run(survey(leg, Retry()))  # type: ignore[arg-type]
    except MigrateError as exc:
        assert "1.5" in str(exc)
    else:
        raise AssertionError("the survey went past a broken chain")
    assert leg.report.by_version == {"1": 4, "1.5": 2}
    assert leg.report.steps == {"1 -> 2": 4, "2 -> 3": 4}
    leg = make_leg(graph, rows, head, head, False)
    found = asyncio.run(survey(leg, Retry(), continue_on_error=True))  # type: ignore[arg-type]
    assert found.others == 2 + 3 and [label(s) for s in found.chain] == ["1 -> 2", "2 -> 3"]
    assert leg.report.by_version == {"1": 4, "1.5": 2, "'x'": 3}
