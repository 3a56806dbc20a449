"""Every numeric option refuses what no run can use, as a usage error (exit 2).

NaN, infinity, numbers past what the server's 32-bit counts hold, zero and
negative numbers where they mean nothing, and an unacknowledged or
impossible write concern: each is refused while the options are read, with
click's one-line message, before anything connects. None ends in a
traceback, and none is taken (a NaN retry window retried for ever; a huge
``--wtimeout`` ended in ``OverflowError``).

"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import EXIT_USAGE
from atomdb_migrate.cli.main import main
from atomdb_migrate.cli.options import MAX_COUNT, MAX_SECONDS
from atomdb_migrate.engine.runner import RunOptions

#: Nothing listens there: a value that got past the options would fail to
#: connect (exit 4), not exit 2.
URL = "mongodb://127.0.0.1:1/options?serverSelectionTimeoutMS=100"

#: Examples of the property test (OPTION_EXAMPLES).
OPTION_EXAMPLES = int(os.environ.get("OPTION_EXAMPLES", "60"))

#: Each numeric option: the command line it goes into, and what it refuses
#: besides NaN, infinity and overflow.
OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "--timeout": (["--timeout", "{}", "status"], ["0", "-1", "0.05"]),
    "--batch-size": (["upgrade", "--batch-size", "{}"], ["0", "-1", "1.5"]),
    "--retry-for": (["upgrade", "--retry-for", "{}"], ["-1", "-0.1"]),
    "--wtimeout": (["upgrade", "--wtimeout", "{}"], ["-1", "1.5"]),
    "--max-rate": (["upgrade", "--max-rate", "{}"], ["0", "-1", "-0.0"]),
    "--max-lag": (["upgrade", "--max-lag", "{}"], ["-1"]),
    "--call-timeout": (["upgrade", "--call-timeout", "{}"], ["0", "-1"]),
    "--write-concern": (["upgrade", "--write-concern", "{}"], ["0", "-1", "51", "1.5", "most"]),
    "--sample": (["upgrade", "--dry-run", "--sample", "{}"], ["-1"]),
    "--limit": (["history", "--limit", "{}"], ["0", "-1"]),
}

#: What no numeric option takes.
NOT_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400"]
OVERFLOW = ["99999999999999999999", str(2**63), str(MAX_COUNT + 1), "-99999999999999999999"]
#: Options that take a fraction: for them, overflow is a huge finite float.
FRACTIONS = {"--timeout", "--retry-for", "--max-rate", "--max-lag", "--call-timeout"}
#: Of those, the times: they become a time limit in milliseconds, a 32-bit
#: number on the server, so past `MAX_SECONDS` they are refused too.
SECONDS = FRACTIONS - {"--max-rate"}
TOO_LONG = [str(MAX_SECONDS * 1.001), "99999999999999999999", "1e300"]

CASES = [
    (name, bad)
    for name, (_, own) in OPTIONS.items()
    for bad in [
        *NOT_FINITE,
        *own,
        *(TOO_LONG if name in SECONDS else [] if name in FRACTIONS else OVERFLOW),
    ]
]


def invoke(name: str, value: str) -> Result:
    args = [a.format(value) if a == "{}" else a for a in OPTIONS[name][0]]
    return CliRunner().invoke(main, ["--url", URL, *args])


def refused(result: Result, what: str) -> None:
    assert result.exit_code == EXIT_USAGE, (what, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        what,
        repr(result.exception),
    )
    assert "Traceback" not in result.output, what
    assert "Error" in result.output, what


@pytest.mark.parametrize(("name", "bad"), CASES, ids=[f"{n}={b}" for n, b in CASES])
def test_each_numeric_option_refuses_what_no_run_can_use(name: str, bad: str) -> None:
    refused(invoke(name, bad), f"{name} {bad}")


def test_the_write_concern_messages_say_why() -> None:
    zero = invoke("--write-concern", "0")
    assert "unacknowledged write cannot be guarded" in zero.output
    huge = invoke("--write-concern", "99999999999999999999")
    assert "up to 50" in huge.output


@st.composite
def bad_value(draw: st.DrawFn) -> tuple[str, str]:
    """An option, and a value it must refuse."""
    name = draw(st.sampled_from(sorted(OPTIONS)))
    special = st.sampled_from(NOT_FINITE + OPTIONS[name][1])
    if name in SECONDS:
        too_long = st.floats(min_value=MAX_SECONDS * 1.0001, max_value=1e300).map(repr)
        return name, draw(st.one_of(special, too_long))
    if name in FRACTIONS:
        return name, draw(special)
    huge = st.integers(min_value=MAX_COUNT + 1, max_value=10**40).map(str)
    negative = st.integers(max_value=-1).map(str)
    return name, draw(st.one_of(special, huge, negative))


@settings(max_examples=OPTION_EXAMPLES, deadline=None)
@given(case=bad_value())
def test_no_bad_number_gets_past_the_options(case: tuple[str, str]) -> None:
    name, bad = case
    refused(invoke(name, bad), f"{name} {bad}")


@pytest.mark.parametrize(
    "given",
    [
        {"retry_for": math.nan},
        {"retry_for": math.inf},
        {"max_rate": math.nan},
        {"max_lag": math.inf},
        {"call_timeout": 0.0},
        {"call_timeout": math.nan},
        {"batch_size": 2**40},
        {"wtimeout": 2**40},
        {"write_concern": "0"},
        {"write_concern": "51"},
    ],
)
def test_run_options_from_code_refuse_them_too(given: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RunOptions(**given)
