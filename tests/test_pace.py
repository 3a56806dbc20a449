"""--max-rate holds over every second, not on average.

The pace runs on a clock of the test's own: a generated schedule of writes
(their sizes, how long each takes, the pauses between them) goes through
`Pace.before_write` and `Pace.written`, and no window of `Pace.span`
seconds sees more documents than the rate allows, counting every write
whose time on the server overlaps it. Through the runner, no write is
larger than the rate, the first batch waits like any other, and steps of
operations run on the client when a rate is set (an ``update_many`` cannot
be throttled).

"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from atom.api import Int, Str
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.engine.pace import Pace
from atomdb_migrate.engine.runner import Runner, RunOptions

#: Examples of the property test (PACE_EXAMPLES).
PACE_EXAMPLES = int(os.environ.get("PACE_EXAMPLES", "200"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def _no_lag() -> float | None:
    return None


def paced(rate: float, clock: Clock) -> Pace:
    return Pace(rate, None, _no_lag, lambda _: None, clock=clock, sleep=clock.sleep)


def worst_window(writes: list[tuple[float, float, int]], span: float) -> int:
    """The most documents whose writes overlap one window of `span` seconds.

    A window holding the most starts at some write's end (or start).

    """
    starts = {a for a, _, _ in writes} | {e for _, e, _ in writes}
    return max((sum(n for a, e, n in writes if a < t + span and e >= t) for t in starts), default=0)


@settings(max_examples=PACE_EXAMPLES, deadline=None)
@given(
    rate=st.one_of(st.floats(0.2, 5000), st.integers(1, 50).map(float)),
    schedule=st.lists(
        st.tuples(st.integers(1, 10_000), st.floats(0, 2), st.floats(0, 1.5)),
        min_size=1,
        max_size=40,
    ),
)
def test_no_window_sees_more_than_the_rate(
    rate: float, schedule: list[tuple[int, float, float]]
) -> None:
    clock = Clock()
    pace = paced(rate, clock)
    largest = pace.largest_batch()
    assert largest is not None and largest <= max(1, rate * pace.span)
    writes: list[tuple[float, float, int]] = []

    async def go() -> None:
        for wanted, takes, pause in schedule:
            n = min(wanted, largest)  # the runner reads no more than that
            await pace.before_write(n)
            start = clock.now
            clock.now += takes
            pace.written(n)
            writes.append((start, clock.now, n))
            clock.now += pause

    asyncio.run(go())
    assert worst_window(writes, pace.span) <= largest, (rate, writes)


def test_the_case_that_burst() -> None:
    """At 500 documents per second, one second saw 903: the first batch was never
    held, and the limit was an average over whole batches."""
    clock = Clock()
    pace = paced(500.0, clock)
    writes: list[tuple[float, float, int]] = []

    async def go() -> None:
        for _ in range(6):
            n = min(1000, pace.largest_batch() or 1000)
            await pace.before_write(n)
            start = clock.now
            clock.now += 0.2
            pace.written(n)
            writes.append((start, clock.now, n))

    asyncio.run(go())
    assert {n for _, _, n in writes} == {500}, "batches shrink to the rate"
    assert worst_window(writes, 1.0) <= 500


class Bin(VersionedModel):
    __model__ = "test_pace.Bin"
    __version__ = 3

    name = Str()
    size = Int()
    label = Str()


async def test_the_runner_writes_no_batch_above_the_rate_and_runs_operations_on_the_client(
    db: Any, backend: str, registry: MigrationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    register_step(Bin, 1, 2, operations=[ops.add_field("size", 0)])
    register_step(Bin, 2, 3, lambda d: d.update(label=d["name"].upper()))
    await db[Bin.__model__].insert_many(
        [{"name": f"bin {i}", "__version__": "1", "__model__": Bin.__model__} for i in range(60)]
    )
    runner = Runner(db, RunOptions(batch_size=1000, max_rate=7))
    clock = Clock()
    runner.pace.clock, runner.pace.sleep = clock, clock.sleep
    writes: list[tuple[float, int]] = []
    written = runner.pace.written

    def record(count: int) -> None:
        writes.append((clock.now, count))
        written(count)

    runner.pace.written = record  # type: ignore[method-assign]
    caplog.set_level("WARNING", logger="atomdb_migrate")
    report = await runner.upgrade(Bin)
    assert report.migrated == 60
    assert report.server_steps == {}, "an update on the server cannot be throttled"
    assert max(n for _, n in writes) <= 7
    assert sum(n for _, n in writes) == 60
    assert clock.now >= (60 - 7) / 7, "every second holds at most 7, the first batch included"
    for t, _ in writes:
        assert sum(n for u, n in writes if t <= u < t + 1.0) <= 7
    stored = await db[Bin.__model__].find({}).to_list(None)
    assert {(d["__version__"], d["size"], d["label"] == d["name"].upper()) for d in stored} == {
        ("3", 0, True)
    }


def test_a_rate_just_under_a_whole_number_is_not_rounded_up() -> None:
    """Hypothesis found 2 documents let into a second at 1.9999999999990905 per
    second: the largest batch was rounded up by a tolerance."""
    for rate, largest in ((1.9999999999990905, 1), (2.0, 2), (0.3, 1), (4999.999999, 4999)):
        assert paced(rate, Clock()).largest_batch() == largest, rate
