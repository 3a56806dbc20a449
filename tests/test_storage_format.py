"""The storage format and BSON's value rules, written once in `atomdb_migrate.core`.

- `datetime_to_millis` gives the BSON date PyMongo stores for any datetime
  (naive or aware, before 1970 too): checked against bson's own encoding
  over generated datetimes (``DATE_EXAMPLES``, default 300);
- no module uses PyMongo's private ``_datetime_to_millis``;
- the keys (``__version__``, ``__model__``, ``__ref__``, ``__py__``, the
  version index's name) and the int32/int64 ranges are written in
  `atomdb_migrate.core` only.

"""

from __future__ import annotations

import ast
import datetime
import os
from pathlib import Path

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate.core import storage
from atomdb_migrate.core.bson_rules import INT32_MAX, INT32_MIN, datetime_to_millis, same_value

PACKAGE = Path(__file__).resolve().parent.parent / "atomdb_migrate"

DATE_EXAMPLES = int(os.environ.get("DATE_EXAMPLES", "300"))

#: Decoded as milliseconds, as stored: no datetime in between.
AS_MILLIS = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)


def stored_millis(value: datetime.datetime) -> int:
    """The BSON date bson's encoder stores for `value`, in milliseconds since the epoch."""
    return int(bson.decode(bson.encode({"d": value}), codec_options=AS_MILLIS)["d"])


#: Fixed offsets, to the microsecond, strictly within a day either way.
OFFSETS = st.builds(
    datetime.timezone,
    st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59, seconds=-59, microseconds=-999999),
        max_value=datetime.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    ),
)

DATETIMES = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=OFFSETS),
    st.datetimes(timezones=st.timezones()),
    # Around the epoch and the ends of the range, where rounding and overflow happen.
    st.datetimes(
        min_value=datetime.datetime(1969, 12, 31, 23, 59, 58),
        max_value=datetime.datetime(1970, 1, 1, 0, 0, 2),
        timezones=st.none() | OFFSETS,
    ),
    st.datetimes(max_value=datetime.datetime(1, 1, 2), timezones=st.none() | OFFSETS),
    st.datetimes(min_value=datetime.datetime(9999, 12, 30), timezones=st.none() | OFFSETS),
)


@settings(max_examples=DATE_EXAMPLES, deadline=None)
@given(DATETIMES)
def test_datetime_to_millis_is_the_date_bson_stores(value: datetime.datetime) -> None:
    try:
        expected = stored_millis(value)
    except OverflowError:
        try:
            datetime_to_millis(value)
        except OverflowError:
            return
        raise AssertionError(f"{value!r}: bson refuses it, datetime_to_millis does not") from None
    assert datetime_to_millis(value) == expected, value


def test_datetime_to_millis_cuts_to_the_millisecond_below() -> None:
    epoch = datetime.datetime(1970, 1, 1)
    assert datetime_to_millis(epoch - datetime.timedelta(microseconds=1)) == -1
    assert datetime_to_millis(epoch + datetime.timedelta(microseconds=999)) == 0
    east = datetime.timezone(datetime.timedelta(hours=2))
    assert datetime_to_millis(datetime.datetime(1970, 1, 1, 2, tzinfo=east)) == 0


def test_same_value_compares_dates_as_stored() -> None:
    east = datetime.timezone(datetime.timedelta(hours=2))
    one = datetime.datetime(2000, 1, 1, 12, 0, 0, 1000)
    assert same_value(one, one.replace(microsecond=1999))  # one stored millisecond
    assert not same_value(one, one.replace(microsecond=2000))
    assert same_value(one.replace(tzinfo=east), one - datetime.timedelta(hours=2))


def test_no_module_uses_pymongos_private_datetime_to_millis() -> None:
    used = [p.name for p in PACKAGE.rglob("*.py") if "_datetime_to_millis" in p.read_text()]
    assert used == []


# ----------------------------------------------------------------------
# Written once
# ----------------------------------------------------------------------
#: The storage format's strings, each defined in `atomdb_migrate.core.storage`.
KEYS = {
    storage.VERSION_KEY,
    storage.MODEL_KEY,
    storage.REF_KEY,
    storage.JSON_TYPE_KEY,
    storage.VERSION_INDEX,
}

#: Where a module may write the keys and ranges as literals.
HOMES = {"core/storage.py", "core/bson_rules.py"}

#: Literals still written in modules that are to take the core's names
#: (module -> what is found there); empty once they do.
PENDING: dict[str, list[str]] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            found.add(id(body[0].value))
    return found


def _names_of_attributes(tree: ast.AST) -> set[int]:
    """``getattr(cls, "__model__")`` and ``what="__version__"`` name Python
    attributes, not stored keys."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None)
            if name in ("getattr", "hasattr", "setattr") and len(node.args) > 1:
                found.add(id(node.args[1]))
            found.update(id(k.value) for k in node.keywords)
    return found


def literals(path: Path) -> list[str]:
    """The storage keys and integer ranges a module writes as literals."""
    tree = ast.parse(path.read_text())
    skipped = _docstrings(tree) | _names_of_attributes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in KEYS and id(node) not in skipped:
            found.append(repr(node.value))
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Pow)
            and isinstance(node.left, ast.Constant)
            and node.left.value == 2
            and isinstance(node.right, ast.Constant)
            and node.right.value in (31, 63)
        ):
            found.append(ast.unparse(node))
    return found


def test_the_keys_and_the_integer_ranges_are_written_in_core_only() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name not in HOMES and (hits := literals(path)):
            found[name] = hits
    assert found == PENDING


def test_the_int32_range_is_what_pymongo_stores_as_int32() -> None:
    """PyMongo reads an int32 back as an int, an int64 as an `Int64`."""
    assert type(bson.decode(bson.encode({"v": INT32_MIN}))["v"]) is int
    assert type(bson.decode(bson.encode({"v": INT32_MAX}))["v"]) is int
    assert type(bson.decode(bson.encode({"v": INT32_MAX + 1}))["v"]) is bson.Int64
    assert type(bson.decode(bson.encode({"v": INT32_MIN - 1}))["v"]) is bson.Int64
