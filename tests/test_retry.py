"""The retry window is a deadline; every call has one; write concerns are classified.

The window's tests run on a clock of their own: each try "takes" the time
the test draws for it, but never more than the time limit the policy gave
it (``pymongo.timeout``, which bounds a real call's server selection and
its command). Over generated schedules, the run of failures never outlasts
the window. The call deadline runs on the real clock, with small numbers,
and asserts what happened, not how long it took.

"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import _csot
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from atomdb_migrate.driver import retry as retry_module
from atomdb_migrate.driver.retry import (
    PERMANENT_WRITE_CONCERN,
    SHORTEST_TRY,
    Retry,
    is_transient,
)
from atomdb_migrate.driver.retry import (
    fault_line as describe,
)
from atomdb_migrate.exceptions import (
    ServerError,
    ServerUnavailableError,
    WriteConcernRefusedError,
)

#: Examples of each property test (RETRY_EXAMPLES).
RETRY_EXAMPLES = int(os.environ.get("RETRY_EXAMPLES", "150"))


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def failing(
    clock: Clock, durations: list[float], error: type[PyMongoError], call_timeout: float
) -> Any:
    """A call whose tries take `durations` (as far as their time limit lets them) and fail.

    The first try is bounded by the call's deadline (`call_timeout`), the
    later ones by the limit the policy sets for the driver.

    """
    tries: list[tuple[float, float]] = []
    policy_timeout = [call_timeout]

    async def call() -> None:
        limit = _csot.get_timeout()
        if not tries:
            assert limit is None, "a first try keeps the client's own timeouts"
            limit = policy_timeout[0]
        assert limit is not None and limit > 0, "every later try runs under a time limit"
        took = durations[len(tries) % len(durations)]
        tries.append((clock.now, limit))
        clock.now += min(took, limit)
        raise error("no primary")

    call.tries = tries  # type: ignore[attr-defined]
    return call


@settings(max_examples=RETRY_EXAMPLES, deadline=None)
@given(
    seconds=st.floats(0.5, 120),
    durations=st.lists(st.floats(0, 60), min_size=1, max_size=8),
    error=st.sampled_from([AutoReconnect, NotPrimaryError, ServerSelectionTimeoutError]),
    call_timeout=st.floats(0.5, 600),
)
def test_the_window_is_a_deadline(
    seconds: float, durations: list[float], error: type[PyMongoError], call_timeout: float
) -> None:
    """From the first failure (from the start of a try spent selecting a server),
    the tries and their waits end within the window."""
    clock = Clock()
    policy = Retry(seconds, clock=clock, sleep=clock.sleep, call_timeout=call_timeout)
    call = failing(clock, durations, error, call_timeout)
    with pytest.raises(ServerUnavailableError) as info:
        asyncio.run(policy.call("writing", call))
    first_start, first_limit = call.tries[0]
    assert first_limit == pytest.approx(call_timeout), "the first try has the call's deadline"
    opened = (
        first_start
        if error is ServerSelectionTimeoutError
        else first_start + min(durations[0], call_timeout)
    )
    first_end = first_start + min(durations[0], call_timeout)
    # The first try is bounded by the call's deadline only (the window opens
    # when it fails); it may end past a window counted from its start.
    slack = SHORTEST_TRY + 1e-6
    assert clock.now <= max(opened + seconds, first_end) + slack, (clock.now, opened, seconds)
    assert info.value.seconds <= max(seconds, first_end - opened) + slack
    for start, limit in call.tries[1:]:
        assert start + limit <= opened + seconds + slack, "a try is bounded by what is left"


def test_the_case_the_window_used_to_overrun() -> None:
    """PrimarySteppedDown at once, then each try waits a whole server-selection
    timeout (30 s): the run stopped 39.5 s into a 5 s window. Now the tries after
    the first failure get what is left of the window."""
    clock = Clock()
    policy = Retry(5.0, clock=clock, sleep=clock.sleep)
    tries: list[float] = []

    async def call() -> None:
        limit = _csot.get_timeout()
        tries.append(limit or 3600.0)
        if len(tries) == 1:
            raise NotPrimaryError("not primary")
        assert limit is not None
        clock.now += min(30.0, limit)
        raise ServerSelectionTimeoutError("no primary")

    with pytest.raises(ServerUnavailableError, match="kept failing for 5 s"):
        asyncio.run(policy.call("writing", call))
    assert clock.now <= 5.0 + SHORTEST_TRY + 1e-6
    assert all(limit <= 5.0 for limit in tries[1:])


def test_a_call_without_an_answer_is_a_transient_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "WAIT_NOTE", 0.02)
    monkeypatch.setattr(retry_module, "GRACE", 0.01)
    waits: list[tuple[str, float]] = []
    policy = Retry(0.3, call_timeout=0.05, on_wait=lambda op, s: waits.append((op, s)))
    answered: list[int] = []

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def later() -> int:
        if not answered:
            answered.append(1)
            await asyncio.sleep(3600)
        return 7

    with pytest.raises(ServerUnavailableError, match="no answer from the server"):
        asyncio.run(policy.call("writing to parts", hangs))
    assert policy.retries >= 1
    assert any(op == "writing to parts" for op, _ in waits), "the progress line says it waits"
    assert waits[-1] == ("", 0.0), "and clears once the call ends"
    assert asyncio.run(Retry(5, call_timeout=0.05).call("reading", later)) == 7


def wce(code: int, name: str = "") -> dict[str, Any]:
    return {"code": code, "codeName": name, "errmsg": f"write concern failed {code}"}


def bulk(*concern: dict[str, Any], write_errors: int = 0) -> BulkWriteError:
    details = {
        "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}] * write_errors,
        "writeConcernErrors": list(concern),
        "nMatched": 0,
    }
    return BulkWriteError(details)


def test_an_unsatisfiable_write_concern_is_not_retried() -> None:
    clock = Clock()
    policy = Retry(60, clock=clock, sleep=clock.sleep)

    async def refused() -> None:
        raise bulk(wce(100, "UnsatisfiableWriteConcern"))

    with pytest.raises(WriteConcernRefusedError, match="cannot be satisfied here") as info:
        asyncio.run(policy.call("writing", refused))
    assert policy.retries == 0 and clock.now == 0.0
    assert info.value.code == 100
    assert isinstance(info.value, ServerError)


@settings(max_examples=RETRY_EXAMPLES, deadline=None)
@given(
    codes=st.lists(st.sampled_from([64, 91, 100, 79, 11600, 189, 6]), min_size=1, max_size=3),
    wrapped=st.booleans(),
    write_errors=st.integers(0, 1),
)
def test_write_concern_errors_are_classified_by_their_codes(
    codes: list[int], wrapped: bool, write_errors: int
) -> None:
    errors = [wce(c) for c in codes]
    error: PyMongoError = (
        bulk(*errors, write_errors=write_errors)
        if wrapped
        else WriteConcernError(errors[0]["errmsg"], errors[0]["code"], errors[0])
    )
    first_only = errors if wrapped else errors[:1]
    permanent = any(e["code"] in PERMANENT_WRITE_CONCERN for e in first_only)
    refused = wrapped and write_errors > 0
    assert is_transient(error) == (not permanent and not refused)
    said = describe(error)
    if refused:
        assert said.startswith("BulkWriteError (65)")
    else:
        assert said.startswith(f"write-concern error ({errors[0]['code']}"), said
        assert "BulkWriteError" not in said


def test_other_errors_keep_their_kind() -> None:
    clock = Clock()

    async def fails() -> None:
        raise ValueError("not a driver error")

    async def refused() -> None:
        raise bulk(write_errors=1)

    with pytest.raises(ValueError):
        asyncio.run(Retry(5, clock=clock, sleep=clock.sleep).call("x", fails))
    with pytest.raises(ServerError) as info:
        asyncio.run(Retry(5, clock=clock, sleep=clock.sleep).call("x", refused))
    assert not isinstance(info.value, ServerUnavailableError | WriteConcernRefusedError)


#: The faults a run rides through, and the errors of a try the window cut short.
FAULTS = [AutoReconnect("connection closed"), NotPrimaryError("not primary", {"code": 189})]
CUT = [
    ExecutionTimeout("operation would exceed time limit", 50),
    NetworkTimeout("timed out"),
    ServerSelectionTimeoutError("no server within the time limit"),
]


@settings(max_examples=RETRY_EXAMPLES, deadline=None)
@given(
    first=st.sampled_from(FAULTS),
    later=st.lists(st.sampled_from(FAULTS + CUT), max_size=10),
    seconds=st.floats(0.5, 30),
)
def test_a_run_that_stops_names_the_fault_not_the_window(
    first: PyMongoError, later: list[PyMongoError], seconds: float
) -> None:
    """The tries after a failure run under what is left of the window, and the last
    often ends with the driver's own timeout: the message names the fault ridden
    through (the latest error that was not a try cut short)."""
    clock = Clock()
    policy = Retry(seconds, clock=clock, sleep=clock.sleep)
    errors = [first, *later]
    raised: list[PyMongoError] = []

    async def call() -> None:
        error = errors[len(raised)] if len(raised) < len(errors) else CUT[0]
        raised.append(error)
        limit = _csot.get_timeout()
        clock.now += min(1.0, limit) if limit is not None else 1.0
        raise error

    with pytest.raises(ServerUnavailableError) as info:
        asyncio.run(policy.call("writing", call))
    named = [e for e in raised if not e.timeout][-1]
    assert info.value.error is named
    assert type(named).__name__ in str(info.value)
    assert "exceed time limit" not in str(info.value)


def test_the_case_of_the_window_named_instead_of_the_fault() -> None:
    """PrimarySteppedDown on every try: the last try got a millisecond and the
    driver's ExecutionTimeout was what the run said it stopped on."""
    clock = Clock()
    policy = Retry(2.0, clock=clock, sleep=clock.sleep)

    async def call() -> None:
        limit = _csot.get_timeout()
        if limit is not None and limit < 0.01:
            raise ExecutionTimeout("operation would exceed time limit, remaining timeout", 50)
        clock.now += 0.01
        raise NotPrimaryError("Failing command via 'failCommand' failpoint", {"code": 189})

    with pytest.raises(ServerUnavailableError, match="NotPrimaryError") as info:
        asyncio.run(policy.call("writing to parts", call))
    assert isinstance(info.value.error, NotPrimaryError)


#: Errors of a try whose answer is lost (the server may still apply what it sent),
#: and of one whose answer came.
UNANSWERED = [AutoReconnect("connection closed"), NetworkTimeout("timed out")]
ANSWERED = [
    WriteConcernError("waiting for replication timed out", 64, {"code": 64}),
    ExecutionTimeout("operation would exceed time limit", 50),
]


@settings(max_examples=RETRY_EXAMPLES, deadline=None)
@given(errors=st.lists(st.sampled_from(UNANSWERED + ANSWERED), min_size=1, max_size=8))
def test_a_run_that_stops_says_whether_any_try_went_unanswered(
    errors: list[PyMongoError],
) -> None:
    """The runner counts a stopped batch as unconfirmed when a try's answer was lost;
    that may be any try of the run of failures, not only the one it named or the last."""
    clock = Clock()
    policy = Retry(3.0, clock=clock, sleep=clock.sleep)
    raised: list[PyMongoError] = []

    async def call() -> None:
        raised.append(errors[len(raised) % len(errors)])
        clock.now += 0.5
        raise raised[-1]

    with pytest.raises(ServerUnavailableError) as info:
        asyncio.run(policy.call("writing", call))
    assert info.value.answer_lost == any(isinstance(e, AutoReconnect) for e in raised)
