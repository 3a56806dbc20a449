"""Conditional writes: change a stored document only if it is as it was read.

Both the lazy path (write-back) and the eager runner turn an upgraded
document into an update of exactly the top-level fields the steps changed
(`document_diff`), filtered on the fields as they were read
(`unchanged_filter`). A
document another process changed in between no longer matches and is left
alone; a field another process added meanwhile is kept, as the update does
not touch it.

Values are compared as BSON stores them, type and value, all the way down
(`same_value`): Python holds ``3 == 3.0 == Int64(3)`` and ``1 == True``, but
a step that turns the double ``3.0`` into the int ``3`` changed the stored
document, and that change must be written (the rules are in
`atomdb_migrate.core.bson_rules`).

"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import bson
from bson.errors import InvalidDocument

from ..exceptions import GuardTooLargeError, short_repr, shorten

# The BSON value rules moved to `bson_rules`; still importable from here.
from .bson_rules import TYPE_NAMES as TYPE_NAMES
from .bson_rules import bson_kind as bson_kind
from .bson_rules import same_document as same_document
from .bson_rules import same_value as same_value
from .storage import ID_KEY, VERSION_KEY

#: No large value matched loosely.
_NONE: Mapping[str, Any] = MappingProxyType({})


class Write(NamedTuple):
    """A conditional update: its filter and its update (a document, or a pipeline)."""

    #: Matches the stored document only while it is as read (see `unchanged_filter`).
    query: dict[str, Any]
    #: The change: ``$set``/``$unset``, or an update pipeline.
    update: Any
    #: The large values the filter matches by BSON type and size only, as
    #: read, by top-level name: compared whole with the stored document just
    #: before the write (`atomdb_migrate.mongo.bulk_update`), since the
    #: filter cannot hold them beside the update.
    loose: Mapping[str, Any] = _NONE


#: The largest document MongoDB stores.
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024

#: What a single write command may carry beyond that (MongoDB's allowance).
COMMAND_OVERHEAD = 16 * 1024


# ----------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------
def needs_expression(key: Any) -> bool:
    """Whether a top-level field name cannot be used as a path in a query or a $set.

    MongoDB reads a ``.`` in a path as nesting and a leading ``$`` as an
    operator; such names are reached with ``$getField`` and ``$setField``.

    """
    return not isinstance(key, str) or not key or "." in key or key.startswith("$")


def document_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Any:
    """The update that turns the stored document `old` into `new`; empty if none.

    Normally ``$set`` and ``$unset`` of the top-level fields that differ (as
    BSON stores them). Where such a field's name holds a ``.`` or starts
    with ``$``, an update pipeline that sets them with ``$setField``.

    """
    changed = {
        k: v for k, v in new.items() if k != ID_KEY and (k not in old or not same_value(old[k], v))
    }
    removed = [k for k in old if k not in new]
    if any(needs_expression(k) for k in (*changed, *removed)):
        root: Any = "$$ROOT"
        for key, value in changed.items():
            root = _set_any_field(key, root, {"$literal": value})
        for key in removed:
            root = _set_any_field(key, root, "$$REMOVE")
        return [{"$replaceWith": root}]
    update: dict[str, Any] = {}
    if changed:
        update["$set"] = changed
    if removed:
        update["$unset"] = dict.fromkeys(removed, "")
    return update


def _set_any_field(name: str, base: Any, value: Any) -> dict[str, Any]:
    """`base` with its top-level field `name` set to `value`, whatever the name: one
    with a ``.`` or a leading ``$`` too, as the name is given as a ``$literal``
    (unlike `atomdb_migrate.operations.paths`' path names, which are plain)."""
    return {"$setField": {"field": {"$literal": name}, "input": base, "value": value}}


# ----------------------------------------------------------------------
# The filter
# ----------------------------------------------------------------------
#: Values larger than this, encoded, are matched by type and size when a
#: filter holding them whole would not fit in one command.
LARGE_VALUE = 64 * 1024

#: The stored document's top-level names, as an aggregation expression.
_NAMES = {"$map": {"input": {"$objectToArray": "$$ROOT"}, "in": "$$this.k"}}


def unchanged_filter(
    old: Mapping[str, Any],
    fields: Iterable[Any] | None = None,
    *,
    complete: bool = False,
    large: bool = False,
    exact: bool = True,
    loose: Collection[str] = (),
) -> dict[str, Any]:
    """A filter matching the stored document only while it is as `old` was read.

    Each field is matched exactly: its value and its BSON type, an array as
    that array (not as any array holding it), null as null (not as a missing
    field), a missing field as missing.

    Parameters
    ----------
    old: dict
        The document as read.
    fields: iterable of str, optional
        The top-level fields the result depends on (what the steps looked
        at: see `atomdb_migrate.documents.StepDocument`, and what they
        changed). Each must still hold its value as read, or still be
        missing. None: every field of `old`.
    complete: bool
        With ``fields=None``, also require that the stored document has no
        other field: `old` may come from a projection, and the steps looked
        at all of it.
    large: bool
        Match values over `LARGE_VALUE` by type and encoded size instead of
        whole, so that the filter fits in a command beside a large update.
    loose: collection of str
        Match these fields by type and encoded size too, whatever their size
        (see `guarded_write`, which compares them whole before writing).
    exact: bool
        True pins each value's BSON type. False is for mongomock, which has
        no ``$type: "null"`` and no ``"long"``: values are matched without
        their type.

    Each value is in the filter once at most: a 16 MB document must leave
    room in the command for its update. Only query operators are used (an
    ``$expr`` beside the ``_id`` makes SecantusDB read the whole collection:
    measured, 250 ms a write on 20,000 documents against 0.6 ms), except
    for names with a ``.`` or a leading ``$``, large values that must be
    matched by size, and `complete`. Inside arrays and embedded documents,
    numbers are matched by value: a concurrent change of a nested number's
    type alone is not seen.

    The ``_id`` and the version as read are always matched; a document read
    without a version matches only while it has none. Names that are not
    strings are left out: a stored document has none.

    """
    names = list(old) if fields is None else [k for k in fields if isinstance(k, str)]
    query: dict[str, Any] = {ID_KEY: old[ID_KEY]}
    expressions: list[Any] = []
    for key in dict.fromkeys([*names, VERSION_KEY]):
        if key == ID_KEY:
            continue
        by_size = key in old and (key in loose or (large and _size(old[key]) > LARGE_VALUE))
        if needs_expression(key):
            expressions += _named_field_checks(old, key, by_size)
            continue
        query[key], expression = _field_condition(old, key, by_size, exact)
        if expression is not None:
            expressions.append(expression)
    if fields is None and complete:
        count = {"$size": {"$objectToArray": "$$ROOT"}}
        expressions.append({"$eq": [count, len(old)]})
    if expressions:
        query["$expr"] = expressions[0] if len(expressions) == 1 else {"$and": expressions}
    return query


def _named_field_checks(old: Mapping[str, Any], key: str, by_size: bool) -> list[Any]:
    """Expressions true while the stored field `key`, a name with a ``.`` or a
    leading ``$`` (`needs_expression`), is as in `old` (or missing as there)."""
    # Presence is asked of the document's names: some servers give a
    # missing $getField a type other than "missing".
    named = {"$in": [{"$literal": key}, _NAMES]}
    if key not in old:
        return [{"$not": [named]}]
    value = old[key]
    kind = TYPE_NAMES.get(bson_kind(value))
    got = {"$getField": {"field": {"$literal": key}, "input": "$$ROOT"}}
    checks: list[Any] = [named]
    if kind:
        checks.append({"$eq": [{"$type": got}, kind]})
    checks.append(_same_as(got, value, by_size))
    return checks


def _field_condition(
    old: Mapping[str, Any], key: str, by_size: bool, exact: bool
) -> tuple[dict[str, Any], Any]:
    """The query condition true while the stored field `key` is as in `old` (or
    missing as there), and an expression it also needs (None when it needs none)."""
    if key not in old:
        return {"$exists": False}, None
    value = old[key]
    kind = TYPE_NAMES.get(bson_kind(value))
    if by_size:
        return {"$type": kind} if kind else {"$exists": True}, _same_as(f"${key}", value, True)
    if type(value) is list and exact and _nesting(value, len(value)) > MAX_SHAPE_NESTING:
        # Its shape would nest the filter past what a server takes: matched whole once.
        return {"$type": "array"}, _same_as(f"${key}", value, False)
    if type(value) is list:
        return list_condition(value, exact), None
    condition: dict[str, Any] = {"$eq": value}
    if value is None:
        condition = {"$type": "null"} if exact else {"$eq": None, "$exists": True}
    elif kind and exact:
        condition["$type"] = kind
    condition["$not"] = {"$type": "array"}
    return condition, None


#: How deep `list_condition` nests ``$elemMatch``: MongoDB refuses a command
#: nested past about 100 levels, and a value of arrays in arrays may be deep.
MAX_SHAPE_NESTING = 16


def list_condition(value: list[Any], exact: bool = True) -> dict[str, Any]:
    """A query condition matching an array that is `value`, holding it once.

    ``{k: {$eq: v}}`` also matches an array holding `v` as an item; of `v`'s
    size, such an array has an item that is an array of that size, and `v`
    has none nested as deep (`_nesting`): ``$not``/``$elemMatch`` on that
    shape leaves it out, without a second copy of `v`. mongomock (`exact`
    False) takes ``$eq`` and ``$size`` alone.

    """
    condition: dict[str, Any] = {"$eq": value, "$size": len(value)}
    if value and exact:
        shape: dict[str, Any] = {"$size": len(value)}
        for _ in range(_nesting(value, len(value))):
            shape = {"$size": len(value), "$elemMatch": shape}
        condition["$not"] = {"$elemMatch": shape}
    return condition


def _nesting(value: list[Any], size: int) -> int:
    """How deep arrays of `size` items nest in `value` (0: none of its items is one)."""
    found = [_nesting(v, size) + 1 for v in value if type(v) is list and len(v) == size]
    return max(found, default=0)


def _size(value: Any) -> int:
    return len(bson.encode({"v": value}))


def _same_as(got: Any, value: Any, by_size: bool) -> Any:
    """An expression true where `got` holds `value` (or, `by_size`, a value of its size)."""
    if by_size:
        return {"$eq": [{"$bsonSize": {"v": got}}, _size(value)]}
    return {"$eq": [got, {"$literal": value}]}


# ----------------------------------------------------------------------
# What cannot be written
# ----------------------------------------------------------------------
def result_problem(new: Mapping[str, Any]) -> str | None:
    """Why a step's result cannot be stored, or None when it can.

    Its top-level names must be strings, its values ones BSON holds (not a
    set, not an object), and its size MongoDB's 16 MB at most.

    """
    odd = [k for k in new if not isinstance(k, str)]
    if odd:
        return f"the result has a field named {short_repr(odd[0], 60)}, which is not a string"
    try:
        size = len(bson.encode(new))
    except (InvalidDocument, TypeError, ValueError, OverflowError) as exc:
        return f"the result cannot be stored as BSON: {shorten(str(exc))}"
    if size > MAX_DOCUMENT_SIZE:
        return f"the result is {_mb(size)}, over MongoDB's 16 MB limit for a document"
    return None


def fits(query: dict[str, Any], update: Any) -> bool:
    """Whether a conditional update fits in one command."""
    return _command_size(query, update) <= MAX_DOCUMENT_SIZE + COMMAND_OVERHEAD


def _command_size(query: dict[str, Any], update: Any) -> int:
    return len(bson.encode({"q": query})) + len(bson.encode({"u": update}))


def conditional_update(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    fields: Iterable[Any] | None = None,
    *,
    complete: bool = False,
    expressions: bool = True,
) -> tuple[dict[str, Any], Any]:
    """The filter and the update that take `old`, if still stored as read, to `new`.

    `guarded_write` for a caller that sends the update as it is: where only
    a filter matching large values by size would fit, it refuses.

    Raises
    ------
    ValueError
        If `new` cannot be stored, or the update and a filter matching every
        value whole do not fit in one command; the message says why.

    """
    write = guarded_write(old, new, fields, complete=complete, expressions=expressions)
    if write.loose:
        raise GuardTooLargeError(_sizes(old, write.loose), _size(write.update), loose=True)
    return write.query, write.update


def guarded_write(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    fields: Iterable[Any] | None = None,
    *,
    complete: bool = False,
    expressions: bool = True,
) -> Write:
    """The conditional write that takes `old`, if still stored as read, to `new`.

    The filter (`unchanged_filter`) matches the fields given (None: all of them) and
    the fields the update changes or removes (a step may write around the
    document's own methods). Filter and update must fit in one command
    (16 MB and a little); where they do not:

    1. a value `new` holds that `old` holds under another name the filter
       matches (a field renamed or moved, ``doc["labels"] =
       doc.pop("tags")``) is set from the stored field, in an update
       pipeline, instead of sent again;
    2. then the largest values, largest first, as many as it takes, are
       matched by BSON type and size, and kept in `Write.loose` for
       `atomdb_migrate.mongo.bulk_update` to compare whole with the stored
       document just before writing.

    `expressions` False (for mongomock) matches arrays without aggregation
    expressions (see `unchanged_filter`), and sends no update pipeline.

    Raises
    ------
    ValueError
        If `new` cannot be stored (the message says why);
        `GuardTooLargeError` if even so the write does not fit.

    """
    problem = result_problem(new)
    if problem is not None:
        raise ValueError(problem)
    update = document_diff(old, new)
    if fields is not None:
        fields = {*fields, *_written(update)}
    query = unchanged_filter(old, fields, complete=complete, exact=expressions)
    if fits(query, update):
        return Write(query, update)
    matched = [k for k in (old if fields is None else fields) if k in old and k != ID_KEY]
    if expressions:
        by_reference = referring_update(old, new, matched)
        if by_reference is not None:
            update = by_reference
            if fits(query, update):
                return Write(query, update)
    sizes = _sizes(old, matched)
    over = _command_size(query, update) - MAX_DOCUMENT_SIZE - COMMAND_OVERHEAD
    loose: dict[str, Any] = {}
    for name, size in sizes.items():
        loose[name] = old[name]
        over -= size - _LOOSE_COST
        if over < 0:
            query = unchanged_filter(old, fields, complete=complete, exact=expressions, loose=loose)
            if fits(query, update):
                return Write(query, update, MappingProxyType(loose))
    raise GuardTooLargeError(sizes, _size(update), loose=bool(loose))


#: About what matching a value by type and size costs in a filter, in bytes.
_LOOSE_COST = 200


def referring_update(
    old: Mapping[str, Any], new: Mapping[str, Any], matched: Iterable[str]
) -> list[dict[str, Any]] | None:
    """`document_diff` as a pipeline that sets each large value `old` holds under a
    name in `matched` from the stored field; None if no value is set so.

    The filter matches the fields of `matched` as read, so the stored field
    holds exactly the value: it is copied on the server, BSON as it is.

    """
    sources = {k: _size(old[k]) for k in matched if k in old and k != ID_KEY}
    sources = {k: n for k, n in sources.items() if n > LARGE_VALUE}
    root: Any = "$$ROOT"
    referred = False
    for key, value in new.items():
        if key == ID_KEY or (key in old and same_value(old[key], value)):
            continue
        source = next(
            (k for k in sources if k != key and same_value(old[k], value)),
            None,
        )
        if source is None:
            root = _set_any_field(key, root, {"$literal": value})
            continue
        referred = True
        root = _set_any_field(key, root, _stored_field(source))
    for key in old:
        if key not in new:
            root = _set_any_field(key, root, "$$REMOVE")
    return [{"$replaceWith": root}] if referred else None


def _stored_field(name: str) -> Any:
    """The stored document's top-level field, as an aggregation expression."""
    if needs_expression(name):
        return {"$getField": {"field": {"$literal": name}, "input": "$$ROOT"}}
    return f"${name}"


def _sizes(old: Mapping[str, Any], names: Iterable[str]) -> dict[str, int]:
    """The encoded size of each named value of `old`, the largest first."""
    sizes = {k: _size(old[k]) for k in names if k in old}
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def _written(update: Any) -> list[Any]:
    """The top-level fields an update from `document_diff` sets or removes."""
    if isinstance(update, dict):
        return [*update.get("$set", {}), *update.get("$unset", {})]
    found: list[Any] = []
    root = update[0]["$replaceWith"] if update else None
    while isinstance(root, dict) and "$setField" in root:
        found.append(root["$setField"]["field"]["$literal"])
        root = root["$setField"]["input"]
    return found


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
