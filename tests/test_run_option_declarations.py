"""Each run option is declared once, on its `RunOptions` field.

The declaration feeds the command line's option, the check of a value given
from code and the history's record of a run's arguments. These tests hold
the three to the declaration: every value the command line takes, code may
give, and the other way round.

"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.main import main
from atomdb_migrate.cli.options import RUN_OPTIONS, UPGRADE_OPTIONS
from atomdb_migrate.commands.config import Config
from atomdb_migrate.engine.options import DECLARED, RunOptions

#: Examples of the property test (DECLARATION_EXAMPLES).
EXAMPLES = int(os.environ.get("DECLARATION_EXAMPLES", "300"))


def _params(options: list[Any]) -> dict[str, click.Parameter]:
    def command() -> None:
        pass

    for option in options:
        command = option(command)
    return {p.name: p for p in getattr(command, "__click_params__", []) if p.name}


PARAMS = _params([*RUN_OPTIONS, *UPGRADE_OPTIONS])

#: Values to try on each numeric option: around its bounds, and what no
#: option takes.
SPECIAL = [0, -0.0, 1, -1, 0.5, 1.5, 2**31 - 1, 2**31, 2**40, 2147483.647, 2147483.648, 1e300]
SPECIAL += [math.nan, math.inf, -math.inf]


def test_every_field_is_declared_and_every_flag_is_on_the_command_line() -> None:
    assert set(DECLARED) == {f.name for f in fields(RunOptions)}
    flagged = {name for name, d in DECLARED.items() if d.flag is not None}
    assert flagged == set(PARAMS)
    for command in ("upgrade", "downgrade"):
        cmd = main.get_command(click.Context(main), command)
        assert cmd is not None
        text = cmd.get_help(click.Context(main))
        # By the parameter's name: downgrade has a --release of its own
        # (releases to take back), not the field's (the name to record).
        params = {p.name: p for p in cmd.params}
        for name in flagged:
            shown = name in params and DECLARED[name].flag in params[name].opts
            assert shown == (command == "upgrade" or not DECLARED[name].upgrade_only), name
            assert not shown or DECLARED[name].flag in text, name


def _cli_takes(name: str, value: Any) -> bool:
    param = PARAMS[name]
    ctx = click.Context(click.Command("x"))
    try:
        converted = param.type.convert(str(value), param, ctx)
        if param.callback is not None:
            param.callback(ctx, param, converted)
    except click.BadParameter:
        return False
    return True


def _code_takes(name: str, value: Any) -> bool:
    try:
        RunOptions(**{name: value})
    except ValueError:
        return False
    return True


NUMERIC = sorted(
    name
    for name, d in DECLARED.items()
    if d.flag is not None and d.kind in ("count", "seconds", "number")
)


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", SPECIAL)
def test_the_command_line_and_code_take_the_same_values(name: str, value: Any) -> None:
    if DECLARED[name].kind == "count" and not (
        isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    ):
        assert not _cli_takes(name, value)  # a whole number only
        return
    if DECLARED[name].kind == "count":
        value = int(value)
    assert _cli_takes(name, value) == _code_takes(name, value), (name, value)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    name=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.integers(-(2**33), 2**33),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(-10, 10),
    ),
)
def test_any_value_is_taken_by_both_or_neither(name: str, value: Any) -> None:
    if DECLARED[name].kind == "count" and not isinstance(value, int):
        return
    assert _cli_takes(name, value) == _code_takes(name, value), (name, value)


@pytest.mark.parametrize("w", ["majority", "1", "50", "0", "51", "-1", "1.5", "most", ""])
def test_the_write_concern_is_checked_the_same(w: str) -> None:
    assert _cli_takes("write_concern", w) == _code_takes("write_concern", w), w


def test_the_history_records_the_declared_options() -> None:
    recorded = RunOptions(batch_size=7, max_rate=3.5, write_concern="majority").recorded()
    assert set(recorded) == {n for n, d in DECLARED.items() if d.recorded}
    assert recorded["batch_size"] == 7 and recorded["max_rate"] == 3.5
    assert recorded["write_concern"] == {"w": "majority"}


def test_a_setting_turns_its_option_off() -> None:
    assert RunOptions().with_settings(Config(version_index=False)).version_index is False
    assert RunOptions().with_settings(Config()).version_index is True
    off = RunOptions(version_index=False)
    assert off.with_settings(Config(version_index=True)).version_index is False
