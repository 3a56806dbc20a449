"""The step graph and the chain runner, with in-memory steps only."""

from __future__ import annotations

from typing import Any

import pytest

from atomdb_migrate import (
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    MissingDowngradeError,
    StepBeyondHeadError,
    StepFailedError,
    StepResultError,
)
from atomdb_migrate.steps.versions import Step, StepGraph, canonical, parse_version, run_chain


def noop(doc: dict[str, Any]) -> None:
    pass


def mk(a: str, b: str, up: Any = noop, down: Any = None, source: str = "") -> Step:
    return Step("m.M", a, b, up, down, source=source or f"step_{a}_{b}")


def graph(*pairs: tuple[str, str]) -> StepGraph:
    g = StepGraph("m.M")
    for a, b in pairs:
        g.add(mk(a, b, down=noop))
    return g


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [(3, "3"), ("3", "3"), ("1.2", "1.2"), ("v01", "1"), ("1.0", "1"), ("1.10", "1.10")],
)
def test_canonical(value: Any, expected: str) -> None:
    assert canonical(value) == expected


@pytest.mark.parametrize("value", ["abc", "", "1..2", None, 1.5, True, [1]])
def test_invalid_versions(value: Any) -> None:
    with pytest.raises(InvalidVersionError) as info:
        parse_version(value, model="m.M", doc_id=7)
    assert "m.M" in str(info.value) and "_id=7" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_versions_compare_as_pep440() -> None:
    assert parse_version("10") > parse_version("9")
    assert parse_version("1.10") > parse_version("1.9")
    assert parse_version("1.0") == parse_version("1")


# ---------------------------------------------------------------------------
# Planning upgrades
# ---------------------------------------------------------------------------
def test_plan_orders_steps_from_any_version() -> None:
    g = graph(("2", "3"), ("0", "1"), ("1", "2"))
    assert [s.to_version for s in g.plan_upgrade("0", "3")] == ["1", "2", "3"]
    assert [s.to_version for s in g.plan_upgrade("2", "3")] == ["3"]
    assert g.plan_upgrade("3", "3") == ()
    # Versions compare numerically, not as strings.
    g = graph(("9", "10"), ("10", "11"))
    assert [s.to_version for s in g.plan_upgrade("9", "11")] == ["10", "11"]


def test_plan_to_an_intermediate_version() -> None:
    g = graph(("0", "1"), ("1", "2"), ("2", "3"))
    assert [s.to_version for s in g.plan_upgrade("0", "2")] == ["1", "2"]


def test_gap_names_the_missing_version() -> None:
    g = graph(("0", "1"), ("2", "3"))
    with pytest.raises(GapError) as info:
        g.plan_upgrade("0", "3", doc_id="abc")
    err = info.value
    assert (err.model, err.doc_id, err.from_version, err.to_version, err.missing) == (
        "m.M",
        "abc",
        "0",
        "3",
        "1",
    )
    assert "no step leaves version 1" in str(err) and "'abc'" in str(err)


def test_no_steps_at_all_is_a_gap() -> None:
    with pytest.raises(GapError):
        StepGraph("m.M").plan_upgrade("0", "1")


def test_step_past_head() -> None:
    g = graph(("0", "1"), ("1", "3"))
    with pytest.raises(StepBeyondHeadError) as info:
        g.plan_upgrade("0", "2")
    assert info.value.head == "2" and info.value.to_version == "3"


def test_duplicate_step_is_refused() -> None:
    g = graph(("1", "2"))
    with pytest.raises(DuplicateStepError) as info:
        g.add(mk("1", "3", source="other"))
    assert "two steps leave version 1" in str(info.value)
    assert [s.to_version for s in g.steps] == ["2"]


def test_same_step_registered_again_replaces_it() -> None:
    g = StepGraph("m.M")
    g.add(mk("1", "2", source="file.py"))
    again = mk("1.0", "2", source="file.py")
    g.add(again)
    assert g.steps == [again]


@pytest.mark.parametrize("a, b", [("2", "1"), ("1", "1"), ("1.0", "1")])
def test_backward_or_self_step_is_a_cycle(a: str, b: str) -> None:
    g = graph(("0", "1"))
    with pytest.raises(CycleError):
        g.add(mk(a, b))


def test_plans_follow_later_registrations() -> None:
    g = graph(("0", "1"))
    with pytest.raises(GapError):
        g.plan_upgrade("0", "2")
    g.add(mk("1", "2"))
    assert len(g.plan_upgrade("0", "2")) == 2


def test_problems_reports_each_broken_start() -> None:
    assert graph(("0", "1"), ("1", "2")).problems("2") == []
    problems = graph(("0", "1"), ("2", "3"), ("3", "5")).problems("4")
    kinds = sorted(type(p).__name__ for p in problems)
    assert kinds == ["GapError", "StepBeyondHeadError"]
    # A step starting at the head and going past it
    (problem,) = graph(("0", "1"), ("1", "2")).problems("1")
    assert isinstance(problem, StepBeyondHeadError) and problem.to_version == "2"


# ---------------------------------------------------------------------------
# Planning downgrades
# ---------------------------------------------------------------------------
def test_plan_downgrade_walks_back() -> None:
    g = graph(("0", "1"), ("1", "2"), ("2", "3"))
    assert [s.from_version for s in g.plan_downgrade("3", "1")] == ["2", "1"]
    assert g.plan_downgrade("1", "1") == ()


def test_downgrade_without_function_is_refused() -> None:
    g = StepGraph("m.M")
    g.add(mk("0", "1", down=noop))
    g.add(mk("1", "2"))
    with pytest.raises(MissingDowngradeError) as info:
        g.plan_downgrade("2", "0")
    assert "has no downgrade function" in str(info.value)


def test_downgrade_gap() -> None:
    with pytest.raises(GapError) as info:
        graph(("0", "1")).plan_downgrade("3", "0")
    assert "no step arrives at version 3" in str(info.value)


# ---------------------------------------------------------------------------
# Running chains
# ---------------------------------------------------------------------------
async def test_run_chain_in_place_returned_and_async() -> None:
    def in_place(doc: dict[str, Any]) -> None:
        doc["a"] = 1

    def returned(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "b": doc["a"] + 1}

    async def awaited(doc: dict[str, Any]) -> None:
        doc["c"] = doc["b"] + 1

    steps = (mk("0", "1", in_place), mk("1", "2", returned), mk("2", "3", awaited))
    out = await run_chain(steps, {"_id": 1})
    assert out == {"_id": 1, "a": 1, "b": 2, "c": 3, "__version__": "3"}


async def test_run_chain_downgrade_sets_from_versions() -> None:
    def drop(doc: dict[str, Any]) -> None:
        doc.pop("a")

    s = mk("1", "2", noop, drop)
    out = await run_chain((s,), {"_id": 1, "a": 1, "__version__": "2"}, downgrade=True)
    assert out == {"_id": 1, "__version__": "1"}


async def test_step_that_raises() -> None:
    def boom(doc: dict[str, Any]) -> None:
        raise KeyError("name")

    with pytest.raises(StepFailedError) as info:
        await run_chain((mk("0", "1"), mk("1", "2", boom, source="boom.py")), {"_id": 5})
    err = info.value
    assert (err.doc_id, err.from_version, err.to_version, err.source) == (5, "1", "2", "boom.py")
    assert isinstance(err.__cause__, KeyError)
    assert "KeyError" in str(err) and "boom.py" in str(err)


@pytest.mark.parametrize("bad", [[1, 2], "doc", 3])
async def test_step_returning_non_dict(bad: Any) -> None:
    with pytest.raises(StepResultError) as info:
        await run_chain((mk("0", "1", lambda doc: bad),), {"_id": 5})
    assert type(bad).__name__ in str(info.value)


async def test_step_changing_id() -> None:
    with pytest.raises(StepResultError, match="_id"):
        await run_chain((mk("0", "1", lambda doc: {"x": 1}),), {"_id": 5})
