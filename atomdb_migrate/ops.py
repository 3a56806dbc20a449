"""Declarative operations: one definition, run in Python or on the server.

A step may be a list of operations instead of (or before) an upgrade
function::

    from atomdb_migrate import ops

    model = "app.models.Page"
    from_version = "2"
    to_version = "3"
    operations = [
        ops.rename_field("heading", "title"),
        ops.move_field("meta.status", "status"),
        ops.add_field("views", 0),
    ]

Each operation has two forms that give the same result, which the test
suite checks document by document against a real server:

- `Operation.apply` changes a document in Python. It runs when a document
  is restored (the lazy path) and on the client path of ``upgrade``.
- `Operation.stages` gives the stages of a MongoDB update with an
  aggregation pipeline, so ``upgrade`` runs a step made only of operations
  as one ``update_many`` per collection and no document leaves the server.

Paths are dotted (``"meta.status"``) and go through embedded documents
only. Missing documents on the way are created when a value is set: as
``{}``, or, where the step knows the path's value is an embedded model
(atom-db's ``JSONModel``, from its ``schema`` or its model class; see
`Operations`), as atom-db stores one, with its ``__model__``. Where a path
runs into a value that is not a document (a string, a list, a null):

- a value carried from another path (``move_field``, ``copy_field``,
  ``rename_field`` across documents) refuses the document
  (`UnsettablePathError`): left where it was, it would sit where the model
  no longer reads it. A null embedded model is created, as a missing one;
- a default (``add_field``, ``set_default_where_missing``) is not set, and
  nor is it inside an embedded model that is null or missing: the object
  has no such model, and gets none.

Only exact inverses are derived for downgrades (`Operation.inverse`):
``add_field`` and ``remove_field(path, default)`` undo each other,
``rename_field``/``move_field`` move back, ``copy_field`` removes the copy,
``create_index`` is dropped and ``drop_index(keys)`` created again.
The others refuse with `IrreversibleOperationError`.

``create_index``, ``drop_index`` and ``set_validator`` change the
collection, not documents (`CollectionOperation`): nothing happens on read,
and ``upgrade`` runs a model's creates before its steps' document changes
and its drops after them (expand, then contract); it sets a validator after
them too, and removes one before them. A validator's downgrade removes it:
the one the collection had before is not known.

"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar

from bson import Int64, ObjectId

from .documents import Document, copy_value
from .exceptions import (
    ConversionError,
    IrreversibleOperationError,
    OperationError,
    UnsettablePathError,
    short_repr,
)
from .versions import VERSION_KEY

#: The key atom-db stores a model's name under, in documents and references.
MODEL_KEY = "__model__"

#: Top-level fields the server form of a step uses while it runs (removed
#: before the update ends). Paths may not start with this prefix.
RESERVED_PREFIX = "__atomdb_migrate_"

#: Holds the document as read, while a step that may fail runs on the server.
ORIGINAL_FIELD = RESERVED_PREFIX + "original__"

#: Set on the server when a conversion fails: the document is then left as read.
FAILED_FIELD = RESERVED_PREFIX + "failed__"

#: What a failed conversion evaluates to on the server: never a converted value.
_FAILED = {"$literal": {FAILED_FIELD: True}}

#: The target types `convert` knows, by name.
CONVERSIONS = ("int", "float", "str", "bool", "datetime")

#: The ``__py__`` tags of atom-db's JSON form of dates and datetimes.
JSON_DATE_TAGS = ("datetime.datetime", "datetime.date")

#: The largest and smallest integers MongoDB stores (64 bits).
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: The range of a 32-bit int: PyMongo stores a Python int in it as one.
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INT_REGEX = "^[+-]?[0-9]+$"
_FLOAT_REGEX = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"

#: The parts of atom-db's JSON form of a datetime: (key, lowest, highest, default).
_DATE_PARTS = (
    ("year", 1, 9999, None),
    ("month", 1, 12, None),
    ("day", 1, 31, None),
    ("hour", 0, 23, 0),
    ("minute", 0, 59, 0),
    ("second", 0, 59, 0),
    ("microsecond", 0, 999999, 0),
)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: A value that is not there.
MISSING: Any = _Missing()

#: The embedded models on a model's paths at one version: each path (its
#: names) whose value is an embedded model, and that model's ``__model__``.
Embedded = Mapping[tuple[str, ...], str]

#: No path known to hold an embedded model.
NO_EMBEDDED: Embedded = MappingProxyType({})


class ModelPaths(dict[tuple[str, ...], str]):
    """The embedded models on a model's paths (an `Embedded`), and the paths that
    hold a reference to another document (atom-db's ``NoSQLModel`` members).

    atom-db restores a reference from the referenced model's collection, by
    its ``_id``: a value set inside the stored stub is never read (the next
    ``save()`` drops it), and a stub made up for it, with no ``_id``,
    restores as nothing. No value is set through a reference (`blocked`).

    """

    #: The paths whose value is a reference.
    references: frozenset[tuple[str, ...]]

    def __init__(
        self,
        models: Mapping[tuple[str, ...], str] = NO_EMBEDDED,
        references: Iterable[tuple[str, ...]] = (),
    ) -> None:
        super().__init__(models)
        self.references = frozenset(references)


class Reference:
    """What `blocked` finds at a path holding a reference (see `ModelPaths`).

    Parameters
    ----------
    value: object
        What is stored there: a reference, null, or `MISSING`.

    """

    def __init__(self, value: Any) -> None:
        #: What is stored there.
        self.value = value


def references_of(embedded: Embedded) -> frozenset[tuple[str, ...]]:
    """The paths `embedded` knows to hold a reference (see `ModelPaths`)."""
    return getattr(embedded, "references", frozenset())


#: Where a step's operations learn their embedded models: the mapping, or a
#: function giving it when first needed (the registry's; see `Operations`).
EmbeddedSource = Embedded | Callable[[], Embedded] | None


def embedded_models(fields: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> ModelPaths:
    """The embedded models of a schema snapshot (see `atomdb_migrate.schema`), by path,
    and the paths holding a reference (`ModelPaths`).

    An embedded model is described as a dict of its fields with its
    ``__model__``; one met again inside itself as ``"Embedded(name)"``; a
    reference as ``"Ref(name)"``.

    """
    found = ModelPaths()
    references: set[tuple[str, ...]] = set()
    for name, description in fields.items():
        if name == MODEL_KEY:
            continue
        path = (*prefix, name)
        if isinstance(description, Mapping):
            model = description.get(MODEL_KEY)
            if isinstance(model, str):
                found[path] = model
            inner = embedded_models(description, path)
            found.update(inner)
            references |= inner.references
        elif isinstance(description, str) and description.startswith("Embedded("):
            found[path] = description[len("Embedded(") : -1]
        elif isinstance(description, str) and description.startswith("Ref("):
            references.add(path)
    found.references = frozenset(references)
    return found


# ----------------------------------------------------------------------
# Paths, in Python
# ----------------------------------------------------------------------
def split_path(path: str, *, what: str = "path") -> tuple[str, ...]:
    """Check a dotted path and split it into its names.

    Raises
    ------
    ValueError
        If the path is empty, has an empty name, a name starting with ``$``,
        or touches ``_id``, ``__version__``, ``__model__`` or the names the
        server form reserves.

    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty dotted string, not {path!r}")
    parts = tuple(path.split("."))
    for name in parts:
        if not name:
            raise ValueError(f"{what} {path!r} has an empty name")
        if "\x00" in name:
            raise ValueError(f"{what} {path!r}: BSON names cannot hold a NUL character")
        if name.startswith("$"):
            raise ValueError(f"{what} {path!r}: names may not start with '$'")
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(f"{what} {path!r}: names starting {RESERVED_PREFIX!r} are reserved")
    if parts[0] in ("_id", VERSION_KEY, MODEL_KEY):
        raise ValueError(f"{what} {path!r}: {parts[0]} is managed by atom-db and atomdb-migrate")
    return parts


def get_path(doc: Document, parts: Sequence[str]) -> Any:
    """The value at a path, or `MISSING` (also when a value on the way is not a document)."""
    current: Any = doc
    for name in parts:
        if not isinstance(current, dict):
            return MISSING
        current = current.get(name, MISSING)
        if current is MISSING:
            return MISSING
    return current


def _parent(doc: Document, parts: Sequence[str], create: bool) -> dict[str, Any] | None:
    """The document holding a path's last name; None if a value on the way is not one."""
    current = doc
    for name in parts[:-1]:
        child = current.get(name, MISSING)
        if child is MISSING:
            if not create:
                return None
            child = current[name] = {}
        elif not isinstance(child, dict):
            return None
        current = child
    return current


def blocked(
    doc: Document, parts: Sequence[str], embedded: Embedded = NO_EMBEDDED, *, carry: bool = False
) -> tuple[tuple[str, ...], Any] | None:
    """Where a value cannot be set at a path, and what is there; None where it can.

    On the way, a document is gone into; a missing one is created (see
    `set_path`). An embedded model (a path of `embedded`) that is null is
    created too when the value is carried from another path (`carry`): a
    default (not `carry`) is set only where every embedded model on the way
    is there, so a missing one blocks it as well (what is there: `MISSING`).
    Anything else blocks the path, and so does a reference, whatever it
    holds (see `ModelPaths`).

    """
    current: Any = doc
    references = references_of(embedded)
    for i in range(1, len(parts)):
        prefix = tuple(parts[:i])
        model = embedded.get(prefix)
        child = current.get(parts[i - 1], MISSING) if current is not MISSING else MISSING
        if prefix in references:
            return prefix, Reference(child)
        if isinstance(child, dict):
            current = child
            continue
        if model is not None and not carry:
            return prefix, child  # an embedded model that is not there gets no default
        if child is MISSING or (child is None and model is not None):
            current = MISSING  # created, and everything below it
            continue
        return prefix, child
    return None


def settable(
    doc: Document, parts: Sequence[str], embedded: Embedded = NO_EMBEDDED, *, carry: bool = False
) -> bool:
    """Whether a value can be set at a path (see `blocked`)."""
    return blocked(doc, parts, embedded, carry=carry) is None


def set_path(
    doc: Document,
    parts: Sequence[str],
    value: Any,
    embedded: Embedded = NO_EMBEDDED,
    *,
    carry: bool = False,
) -> bool:
    """Set a value at a path, if it can be set (`blocked`); return whether it was.

    A document missing on the way (or, for a carried value, an embedded
    model that is null) is created: ``{}``, or an embedded model as atom-db
    stores one, ``{"__model__": name}``. atom-db also writes the model's
    other fields, and a ``__ref__``: the fields restore at their defaults
    without, and a ``__ref__`` made up here could name another object.

    """
    if blocked(doc, parts, embedded, carry=carry) is not None:
        return False
    current = doc
    for i, name in enumerate(parts[:-1], start=1):
        child = current.get(name)
        if not isinstance(child, dict):
            model = embedded.get(tuple(parts[:i]))
            child = current[name] = {} if model is None else {MODEL_KEY: model}
        current = child
    current[parts[-1]] = value
    return True


def unset_path(doc: Document, parts: Sequence[str]) -> None:
    """Remove the value at a path, if it is there."""
    parent = _parent(doc, parts, create=False)
    if parent is not None:
        parent.pop(parts[-1], None)


# ----------------------------------------------------------------------
# Paths, as aggregation expressions
# ----------------------------------------------------------------------
def _field(parts: Sequence[str]) -> str:
    return "$" + ".".join(parts)


def _type_is(expr: Any, kind: str) -> dict[str, Any]:
    return {"$eq": [{"$type": expr}, kind]}


def exists_expr(parts: Sequence[str]) -> Any:
    """True where the value at a path is there (through documents only)."""
    checks: list[Any] = [_type_is(_field(parts[:i]), "object") for i in range(1, len(parts))]
    checks.append({"$ne": [{"$type": _field(parts)}, "missing"]})
    return _all(checks)


def _all(checks: list[Any]) -> Any:
    """``$and`` of the checks, without the ``$and`` for one (or none)."""
    checks = [c for c in checks if c is not True]
    if not checks:
        return True
    return checks[0] if len(checks) == 1 else {"$and": checks}


def _kinds(model: str | None, carry: bool) -> list[str]:
    """The BSON types a value on the way may have for a value to be set below it."""
    if model is None:
        return ["object", "missing"]
    return ["object", "missing", "null"] if carry else ["object"]


def settable_expr(
    parts: Sequence[str], embedded: Embedded = NO_EMBEDDED, carry: bool = False
) -> Any:
    """True where a value can be set at a path (see `blocked`).

    Below a value that is missing or null, every path is missing.

    """
    references = references_of(embedded)
    if any(tuple(parts[:i]) in references for i in range(1, len(parts))):
        return False
    checks: list[Any] = [
        {"$in": [{"$type": _field(parts[:i])}, _kinds(embedded.get(tuple(parts[:i])), carry)]}
        for i in range(1, len(parts))
    ]
    return _all(checks)


def _set_field(name: str, base: Any, value: Any) -> dict[str, Any]:
    return {"$setField": {"field": name, "input": base, "value": value}}


def _fresh(at: tuple[str, ...], parts: Sequence[str], value: Any, embedded: Embedded) -> Any:
    """A new document for the path `at`, holding `value` at `parts` inside it (an
    embedded model's with its ``__model__``, as `set_path` makes it)."""
    model = embedded.get(at)
    made: dict[str, Any] = {} if model is None else {MODEL_KEY: literal(model)}
    name = parts[0]
    made[name] = value if len(parts) == 1 else _fresh((*at, name), parts[1:], value, embedded)
    return made


def setting_expr(
    base: Any,
    parts: Sequence[str],
    value: Any,
    done: tuple[str, ...] = (),
    embedded: Embedded = NO_EMBEDDED,
) -> Any:
    """`base` (a document) with `value` set at a path, as `set_path` does.

    `value` must evaluate to a value (never to missing). Where a value on
    the way is missing or null a document is created: the caller checks
    first, with `settable_expr`, that the path can be set.

    """
    name = parts[0]
    if len(parts) == 1:
        return _set_field(name, base, value)
    at = (*done, name)
    child = _field(at)
    return {
        "$switch": {
            "branches": [
                {
                    "case": _type_is(child, "object"),
                    "then": _set_field(
                        name, base, setting_expr(child, parts[1:], value, at, embedded)
                    ),
                },
                {
                    "case": {"$in": [{"$type": child}, ["missing", "null"]]},
                    "then": _set_field(name, base, _fresh(at, parts[1:], value, embedded)),
                },
            ],
            "default": base,
        }
    }


def setting_if_settable(
    parts: Sequence[str], value: Any, embedded: Embedded, *, carry: bool, otherwise: Any
) -> Any:
    """The document with `value` set at a path where it can be set, else `otherwise`."""
    return {
        "$cond": [
            settable_expr(parts, embedded, carry),
            setting_expr("$$ROOT", parts, value, (), embedded),
            otherwise,
        ]
    }


#: The document marked as refused by the step: left as read (see `Operations.pipeline`).
_REFUSED = {"$setField": {"field": FAILED_FIELD, "input": "$$ROOT", "value": True}}


def unsetting_expr(base: Any, parts: Sequence[str], done: tuple[str, ...] = ()) -> Any:
    """`base` (a document) without the value at a path, as `unset_path` does."""
    name = parts[0]
    if len(parts) == 1:
        return _set_field(name, base, "$$REMOVE")
    child = _field((*done, name))
    return {
        "$cond": [
            _type_is(child, "object"),
            _set_field(name, base, unsetting_expr(child, parts[1:], (*done, name))),
            base,
        ]
    }


def _replace(expr: Any) -> dict[str, Any]:
    return {"$replaceWith": expr}


def literal(value: Any) -> dict[str, Any]:
    """A constant in an aggregation expression."""
    return {"$literal": value}


# ----------------------------------------------------------------------
# Paths, as query conditions (for the fast form of a step)
# ----------------------------------------------------------------------
def _is_document(name: str) -> dict[str, Any]:
    # $type "object" alone also matches an array holding a document.
    return {name: {"$type": "object", "$not": {"$type": "array"}}}


def exists_query(parts: Sequence[str]) -> list[dict[str, Any]]:
    """Conditions true where `exists_expr` is.

    A path that exists runs through documents or arrays only, so each value
    on the way not being an array makes it a document.

    """
    found: list[dict[str, Any]] = [
        {".".join(parts[:i]): {"$not": {"$type": "array"}}} for i in range(1, len(parts))
    ]
    found.append({".".join(parts): {"$exists": True}})
    return found


def settable_query(parts: Sequence[str], embedded: Embedded = NO_EMBEDDED) -> list[dict[str, Any]]:
    """Conditions true where a value can be set with a plain ``$set``: every
    value on the way is a document, or missing where it is no embedded model
    (``$set`` creates ``{}``). An embedded model to create is left to the
    general form, and so is a path through a reference (it matches nothing)."""
    found: list[dict[str, Any]] = []
    references = references_of(embedded)
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if tuple(parts[:i]) in references:
            return [{name: {"$in": []}}]
        if tuple(parts[:i]) in embedded:
            found.append(_is_document(name))
        else:
            found.append({"$or": [{name: {"$exists": False}}, _is_document(name)]})
    return found


#: The fast form of an operation: query conditions, and the fields to set
#: and to unset that make its change where they hold.
Fast = tuple[list[dict[str, Any]], dict[str, Any], list[str]]


# ----------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None), datetime, ObjectId, bytes)


def encodable(text: str) -> bool:
    """Whether a string can be stored: BSON holds UTF-8, which has no lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(value: Any, what: str) -> Any:
    """Refuse a default that MongoDB would not store as it is given."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} {value!r} does not fit in 64 bits")
    if isinstance(value, str) and not encodable(value):
        raise ValueError(
            f"{what} {value!r} is not valid UTF-8 (a lone surrogate): BSON cannot hold it"
        )
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list):
        for item in value:
            check_value(item, what)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key or not encodable(key):
                raise ValueError(f"{what}: key {key!r} cannot be stored")
            check_value(item, what)
        return value
    raise ValueError(
        f"{what} {value!r}: a {type(value).__name__} is not stored as it is given; "
        "use str, int, float, bool, None, datetime, a list or a dict of those"
    )


def _format_float(value: float) -> str:
    """A float as the server's ``$toString`` writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def convert_value(value: Any, to: str) -> Any:
    """Convert one value as `convert` does; raise `ConversionError` where it cannot.

    ``None`` is not passed here: `convert` leaves it as it is.

    """
    kind = int if _is_int(value) else type(value)  # bson.Int64 is an int
    if to == "int":
        if kind is bool:
            return int(value)
        if kind is int:
            return value if type(value) in (int, Int64) else int(value)
        if kind is float:
            if math.isfinite(value) and INT64_MIN <= math.trunc(value) <= INT64_MAX:
                return math.trunc(value)
        elif kind is str and _INT_TEXT.fullmatch(value):
            number = int(value)
            if INT64_MIN <= number <= INT64_MAX:
                return number
    elif to == "float":
        if kind in (bool, int):
            return float(value)
        if kind is float:
            return value
        if kind is str and _FLOAT_TEXT.fullmatch(value):
            parsed = float(value)
            if math.isfinite(parsed):
                return parsed
    elif to == "str":
        if kind is str:
            return value
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return str(value)
        if kind is float:
            return _format_float(value)
    elif to == "bool":
        if kind is bool:
            return value
        if kind in (int, float):
            return value != 0
        if kind is str:
            word = value.lower()
            if word in ("true", "1"):
                return True
            if word in ("false", "0"):
                return False
    elif to == "datetime":
        if kind is datetime:
            return value
        if isinstance(value, dict) and value.get("__py__") in JSON_DATE_TAGS:
            parts: dict[str, int] = {}
            for key, low, high, default in _DATE_PARTS:
                part: Any = value.get(key)
                if part is None and default is not None:
                    part = default
                if not _is_int(part) or not low <= part <= high:
                    break
                parts[key] = int(part)
            else:
                try:
                    y, mo, d, h, mi, sec, us = parts.values()
                    return datetime(y, mo, d, h, mi, sec, us // 1000 * 1000)
                except ValueError:
                    pass
    raise ConversionError(f"cannot convert {short_repr(value)} to {to}")


def _conversion_expr(to: str, v: str) -> Any:
    """The server form of `convert_value`: the value, or `_FAILED`."""
    kind = {"$type": v}
    no_newline = {"$eq": [{"$indexOfCP": [v, "\n"]}, -1]}

    def parse(regex: str, target: str) -> Any:
        return {
            "$cond": [
                {"$and": [{"$regexMatch": {"input": v, "regex": regex}}, no_newline]},
                {"$convert": {"input": v, "to": target, "onError": _FAILED}},
                _FAILED,
            ]
        }

    def is_(*kinds: str) -> Any:
        return {"$in": [kind, list(kinds)]}

    branches: list[tuple[Any, Any]]
    if to == "int":
        # As PyMongo stores a Python int: 32 bits where it fits, else 64.
        branches = [
            (is_("bool"), {"$cond": [v, 1, 0]}),
            (is_("int", "long"), v),
            (
                is_("double"),
                _narrow({"$convert": {"input": v, "to": "long", "onError": _FAILED}}),
            ),
            (is_("string"), _narrow(parse(_INT_REGEX, "long"))),
        ]
    elif to == "float":
        branches = [
            (is_("bool"), {"$cond": [v, 1.0, 0.0]}),
            (is_("int", "long"), {"$toDouble": v}),
            (is_("double"), v),
            (is_("string"), parse(_FLOAT_REGEX, "double")),
        ]
    elif to == "str":
        branches = [
            (is_("string"), v),
            (is_("bool"), {"$cond": [v, "true", "false"]}),
            (is_("int", "long", "double"), {"$toString": v}),
        ]
    elif to == "bool":
        word = {"$toLower": v}
        branches = [
            (is_("bool"), v),
            (is_("int", "long", "double"), {"$ne": [v, 0]}),
            (
                is_("string"),
                {
                    "$switch": {
                        "branches": [
                            {"case": {"$in": [word, ["true", "1"]]}, "then": True},
                            {"case": {"$in": [word, ["false", "0"]]}, "then": False},
                        ],
                        "default": _FAILED,
                    }
                },
            ),
        ]
    elif to == "datetime":
        branches = [
            (is_("date"), v),
            (
                {
                    "$and": [
                        is_("object"),
                        {"$in": [f"{v}.__py__", list(JSON_DATE_TAGS)]},
                    ]
                },
                _date_from_json_expr(v),
            ),
        ]
    else:  # pragma: no cover - checked by convert()
        raise ValueError(to)
    return {
        "$switch": {
            "branches": [{"case": case, "then": then} for case, then in branches],
            "default": _FAILED,
        }
    }


def _narrow(long: Any) -> Any:
    """A 64-bit integer (or `_FAILED`) as a 32-bit one where it fits."""
    fits = {
        "$and": [
            _type_is("$$n", "long"),
            {"$gte": ["$$n", INT32_MIN]},
            {"$lte": ["$$n", INT32_MAX]},
        ]
    }
    return {"$let": {"vars": {"n": long}, "in": {"$cond": [fits, {"$toInt": "$$n"}, "$$n"]}}}


def _date_from_json_expr(v: str) -> Any:
    """atom-db's JSON form of a datetime to a date, or `_FAILED` (never a server error)."""
    parts: dict[str, Any] = {}
    checks: list[Any] = []
    for key, low, high, default in _DATE_PARTS:
        raw = f"{v}.{key}"
        # A missing or null part takes its default.
        part = raw if default is None else {"$ifNull": [raw, default]}
        parts[key] = part
        checks.append(
            {
                "$and": [
                    {"$in": [{"$type": part}, ["int", "long"]]},
                    {"$gte": [part, low]},
                    {"$lte": [part, high]},
                ]
            }
        )
    made = {
        "$dateFromParts": {
            "year": parts["year"],
            "month": parts["month"],
            "day": parts["day"],
            "hour": parts["hour"],
            "minute": parts["minute"],
            "second": parts["second"],
            "millisecond": {"$trunc": {"$divide": [parts["microsecond"], 1000]}},
        }
    }
    return {
        "$cond": [
            {"$and": checks},
            {
                # A day past the month's end rolls over on the server: refuse it.
                "$let": {
                    "vars": {"made": made},
                    "in": {
                        "$cond": [
                            {"$eq": [{"$dayOfMonth": "$$made"}, parts["day"]]},
                            "$$made",
                            _FAILED,
                        ]
                    },
                }
            },
            _FAILED,
        ]
    }


# ----------------------------------------------------------------------
# Operations
# ----------------------------------------------------------------------
class Operation:
    """One change to a document, with a Python form and a server form."""

    #: The name of the function that makes the operation, for `repr`.
    __op_name__: ClassVar[str] = ""

    #: Whether the operation can refuse a document (then, on the server, the
    #: document is left as read and the client path reports the error).
    fallible: bool = False

    #: Whether a step's ``downgrade`` function can stand in for the missing
    #: inverse: it changes documents only, so not for an operation on the
    #: collection, its name or the references to it.
    __undone_by_function__: ClassVar[bool] = True

    #: Where the operation learns the embedded models on its paths (set by
    #: `Operations`, for the step's version; see `bound`).
    _embedded: Callable[[], Embedded] = staticmethod(lambda: NO_EMBEDDED)

    def apply(self, doc: Document) -> None:
        """Change the document in place.

        Raises
        ------
        OperationError
            If the document cannot be changed as the operation says (it is
            then left as it was read: the caller drops the copy).

        """
        raise NotImplementedError

    def stages(self) -> list[dict[str, Any]]:
        """The stages of an update pipeline that make the same change."""
        raise NotImplementedError

    def fast(self) -> Fast | None:
        """Query conditions, and the fields to set and unset where they hold.

        The common shape of a document (every path there, every value on
        the way a document) needs no condition inside the pipeline, which
        the server runs several times faster. None where there is no such
        form.

        """
        return None

    def touches(self) -> set[str]:
        """The top-level fields the operation reads or writes."""
        raise NotImplementedError

    def embedded(self) -> Embedded:
        """The embedded models on the operation's paths, at the version it leaves
        documents at (none known: empty)."""
        return self._embedded()

    def bound(self, source: Callable[[], Embedded]) -> Operation:
        """The operation, learning its embedded models from `source` (a copy:
        one operation may serve several steps)."""
        made = copy.copy(self)
        made._embedded = source
        return made

    def inverse(self) -> Operation:
        """The operation that undoes this one.

        Raises
        ------
        IrreversibleOperationError
            If the change cannot be undone exactly.

        """
        raise IrreversibleOperationError(self, "it has no exact inverse")

    def arguments(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(repr(a) for a in self.arguments())
        return f"ops.{self.__op_name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Operation)
            and type(self) is type(other)
            and (self.arguments() == other.arguments())
        )

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))


class AddField(Operation):
    __op_name__ = "add_field"

    def __init__(self, path: str, default: Any = None) -> None:
        self.path = path
        self.parts = split_path(path)
        self.default = check_value(default, f"add_field({path!r}) default")

    def arguments(self) -> tuple[Any, ...]:
        return (self.path, self.default)

    def apply(self, doc: Document) -> None:
        set_path(doc, self.parts, copy_value(self.default), self.embedded())

    def stages(self) -> list[dict[str, Any]]:
        if len(self.parts) == 1:  # the common case, cheaper on the server
            return [{"$set": {self.path: literal(self.default)}}]
        setting = setting_if_settable(
            self.parts, literal(self.default), self.embedded(), carry=False, otherwise="$$ROOT"
        )
        return [_replace(setting)]

    def fast(self) -> Fast | None:
        return settable_query(self.parts, self.embedded()), {self.path: literal(self.default)}, []

    def touches(self) -> set[str]:
        return {self.parts[0]}

    def inverse(self) -> Operation:
        return RemoveField(self.path, self.default)


class SetDefaultWhereMissing(AddField):
    __op_name__ = "set_default_where_missing"

    def apply(self, doc: Document) -> None:
        if get_path(doc, self.parts) is MISSING:
            set_path(doc, self.parts, copy_value(self.default), self.embedded())

    def stages(self) -> list[dict[str, Any]]:
        setting = setting_if_settable(
            self.parts, literal(self.default), self.embedded(), carry=False, otherwise="$$ROOT"
        )
        return [_replace({"$cond": [exists_expr(self.parts), "$$ROOT", setting]})]

    def fast(self) -> Fast | None:
        missing = [{self.path: {"$exists": False}}]
        conditions = settable_query(self.parts, self.embedded()) + missing
        return conditions, {self.path: literal(self.default)}, []

    def inverse(self) -> Operation:
        raise IrreversibleOperationError(
            self, "which documents lacked the field is not kept: write a downgrade function"
        )


class RemoveField(Operation):
    __op_name__ = "remove_field"

    def __init__(self, path: str, default: Any = MISSING) -> None:
        self.path = path
        self.parts = split_path(path)
        self.default = (
            default if default is MISSING else check_value(default, f"remove_field({path!r})")
        )

    def arguments(self) -> tuple[Any, ...]:
        return (self.path,) if self.default is MISSING else (self.path, self.default)

    def apply(self, doc: Document) -> None:
        unset_path(doc, self.parts)

    def stages(self) -> list[dict[str, Any]]:
        return [_replace(unsetting_expr("$$ROOT", self.parts))]

    def fast(self) -> Fast | None:
        return settable_query(self.parts), {}, [self.path]

    def touches(self) -> set[str]:
        return {self.parts[0]}

    def inverse(self) -> Operation:
        if self.default is MISSING:
            raise IrreversibleOperationError(
                self,
                f"the removed values are not kept: give remove_field({self.path!r}, default) "
                "to add the field back with that value on downgrade",
            )
        return AddField(self.path, self.default)


class _FromTo(Operation):
    """An operation carrying a value from one path to another that does not overlap it.

    Where the source is there but the destination cannot be set (see
    `blocked`), the document is refused (`UnsettablePathError`): the value
    would otherwise stay where the model may no longer read it.

    """

    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.src_parts = split_path(src, what="source")
        self.dst_parts = split_path(dst, what="destination")
        _refuse_overlap(self.__op_name__, self.src_parts, self.dst_parts)

    @property
    def fallible(self) -> bool:  # type: ignore[override]
        """Whether a document may be refused: a value can always be set into the
        source's own document, or at the top, unless that document is a reference."""
        if len(self.dst_parts) == 1:
            return False
        if self.dst_parts[:-1] != self.src_parts[:-1]:
            return True
        references = references_of(self.embedded())
        return any(self.dst_parts[:i] in references for i in range(1, len(self.dst_parts)))

    def arguments(self) -> tuple[Any, ...]:
        return (self.src, self.dst)

    def conditions(self) -> list[dict[str, Any]]:
        """The fast form's conditions: the source is there and the destination can be set."""
        return exists_query(self.src_parts) + settable_query(self.dst_parts, self.embedded())

    def touches(self) -> set[str]:
        return {self.src_parts[0], self.dst_parts[0]}

    def carried(self, doc: Document) -> Any:
        """The value to carry (`MISSING`: none), once the destination is checked.

        Raises
        ------
        UnsettablePathError
            If the value is there and cannot be set at the destination.

        """
        value = get_path(doc, self.src_parts)
        if value is MISSING:
            return MISSING
        found = blocked(doc, self.dst_parts, self.embedded(), carry=True)
        if found is not None:
            where, what = found
            if isinstance(what, Reference):
                raise UnsettablePathError(
                    repr(self), self.dst, ".".join(where), what.value, reference=True
                )
            raise UnsettablePathError(repr(self), self.dst, ".".join(where), what)
        return value

    def guarded(self, changed: Any, unchanged: Any = "$$ROOT") -> Any:
        """`changed` where the source is there and the destination can be set; the
        document refused where only the source is there; else `unchanged`."""
        can = settable_expr(self.dst_parts, self.embedded(), carry=True)
        return {
            "$cond": [
                exists_expr(self.src_parts),
                {"$cond": [can, changed, _REFUSED]} if can is not True else changed,
                unchanged,
            ]
        }


class CopyField(_FromTo):
    __op_name__ = "copy_field"

    def apply(self, doc: Document) -> None:
        value = self.carried(doc)
        if value is not MISSING:
            set_path(doc, self.dst_parts, copy_value(value), self.embedded(), carry=True)

    def stages(self) -> list[dict[str, Any]]:
        value = _field(self.src_parts)
        setting = setting_expr("$$ROOT", self.dst_parts, value, (), self.embedded())
        return [_replace(self.guarded(setting))]

    def fast(self) -> Fast | None:
        return self.conditions(), {self.dst: _field(self.src_parts)}, []

    def inverse(self) -> Operation:
        return RemoveField(self.dst)


class MoveField(_FromTo):
    __op_name__ = "move_field"

    def apply(self, doc: Document) -> None:
        value = self.carried(doc)
        if value is MISSING:
            return
        unset_path(doc, self.src_parts)
        set_path(doc, self.dst_parts, value, self.embedded(), carry=True)

    def stages(self) -> list[dict[str, Any]]:
        embedded = self.embedded()
        value = _field(self.src_parts)
        if self.src_parts[0] != self.dst_parts[0]:
            # Apart from the top: one stage removes the source and sets the
            # destination (each expression reads the document as it was).
            moved = setting_expr(
                unsetting_expr("$$ROOT", self.src_parts), self.dst_parts, value, (), embedded
            )
            return [_replace(self.guarded(moved))]
        # The condition holds the same before and after the first stage: the
        # paths do not overlap, and setting `dst` keeps it settable.
        moving = _all(
            [exists_expr(self.src_parts), settable_expr(self.dst_parts, embedded, carry=True)]
        )
        return [
            _replace(self.guarded(setting_expr("$$ROOT", self.dst_parts, value, (), embedded))),
            _replace({"$cond": [moving, unsetting_expr("$$ROOT", self.src_parts), "$$ROOT"]}),
        ]

    def fast(self) -> Fast | None:
        return self.conditions(), {self.dst: _field(self.src_parts)}, [self.src]

    def inverse(self) -> Operation:
        return MoveField(self.dst, self.src)


class RenameField(MoveField):
    __op_name__ = "rename_field"

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        old_parts = split_path(old, what="old name")
        if "." not in new:
            new = ".".join((*old_parts[:-1], new))
        super().__init__(old, new)

    def arguments(self) -> tuple[Any, ...]:
        return (self.old, self.new)

    def inverse(self) -> Operation:
        back = self.src_parts[-1] if self.src_parts[:-1] == self.dst_parts[:-1] else self.src
        return RenameField(self.dst, back)


class Convert(Operation):
    __op_name__ = "convert"
    fallible = True

    def __init__(self, path: str, to: str | type) -> None:
        self.path = path
        self.parts = split_path(path)
        names: dict[Any, str] = {
            int: "int",
            float: "float",
            str: "str",
            bool: "bool",
            datetime: "datetime",
        }
        name = names.get(to, to)
        if name not in CONVERSIONS:
            raise ValueError(f"convert({path!r}): cannot convert to {to!r}; one of {CONVERSIONS}")
        self.to = str(name)

    def arguments(self) -> tuple[Any, ...]:
        return (self.path, self.to)

    def apply(self, doc: Document) -> None:
        value = get_path(doc, self.parts)
        if value is MISSING or value is None:
            return
        try:
            set_path(doc, self.parts, convert_value(value, self.to))
        except ConversionError as exc:
            raise ConversionError(f"{self.path}: {exc}") from None

    def stages(self) -> list[dict[str, Any]]:
        value = _field(self.parts)
        converting = {"$and": [exists_expr(self.parts), {"$ne": [{"$type": value}, "null"]}]}
        converted = {
            "$let": {
                "vars": {
                    "made": {"$let": {"vars": {"v": value}, "in": _conversion_expr(self.to, "$$v")}}
                },
                "in": {
                    "$cond": [
                        _type_is("$$made", "object"),
                        _set_field(FAILED_FIELD, "$$ROOT", True),
                        setting_expr("$$ROOT", self.parts, "$$made"),
                    ]
                },
            }
        }
        return [_replace({"$cond": [converting, converted, "$$ROOT"]})]

    def touches(self) -> set[str]:
        return {self.parts[0]}

    def inverse(self) -> Operation:
        raise IrreversibleOperationError(
            self, "a conversion may lose information: write a downgrade function"
        )


class RenameModel(Operation):
    """A model moved or renamed: rewrite ``__model__`` in the document and its references.

    The eager run also renames the collection and rewrites the references
    stored in every other collection (see `atomdb_migrate.renames`).

    """

    __undone_by_function__ = False

    __op_name__ = "rename_model"

    def __init__(self, old_name: str, new_name: str) -> None:
        for name in (old_name, new_name):
            if not isinstance(name, str) or not name or name.startswith("$"):
                raise ValueError(f"rename_model: {name!r} is not a model name")
        if old_name == new_name:
            raise ValueError(f"rename_model: {old_name!r} is renamed to itself")
        self.old_name, self.new_name = old_name, new_name

    def arguments(self) -> tuple[Any, ...]:
        return (self.old_name, self.new_name)

    def apply(self, doc: Document) -> None:
        rename_references(doc, self.old_name, self.new_name)

    def stages(self) -> list[dict[str, Any]]:
        # Only the top level: references nested anywhere are rewritten by a
        # scan of every collection before this update runs.
        return [
            _replace(
                {
                    "$cond": [
                        {"$eq": [f"${MODEL_KEY}", self.old_name]},
                        _set_field(MODEL_KEY, "$$ROOT", self.new_name),
                        "$$ROOT",
                    ]
                }
            )
        ]

    def fast(self) -> Fast | None:
        return [{MODEL_KEY: self.old_name}], {MODEL_KEY: literal(self.new_name)}, []

    def touches(self) -> set[str]:
        return {MODEL_KEY}

    def inverse(self) -> Operation:
        raise IrreversibleOperationError(
            self,
            "the collection and the references in every collection were renamed: "
            "rename the model back with a new step",
        )


def rename_references(value: Any, old: str, new: str, *, top: bool = True) -> bool:
    """Rewrite ``__model__: old`` to `new` in a document and everything it holds.

    With ``top=False``, a document's own ``__model__`` is left as it is:
    only the references it holds are rewritten. Returns whether anything
    changed.

    """
    changed = False
    if isinstance(value, dict):
        if top and value.get(MODEL_KEY) == old:
            value[MODEL_KEY] = new
            changed = True
        for item in value.values():
            if isinstance(item, (dict, list)):
                changed = rename_references(item, old, new) or changed
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                changed = rename_references(item, old, new) or changed
    return changed


def _all_of(query: dict[str, Any], conditions: list[dict[str, Any]]) -> dict[str, Any]:
    """A query and conditions, in one flat filter when no two name the same field."""
    merged = dict(query)
    for condition in conditions:
        if condition.keys() & merged.keys():
            return {"$and": [query, *conditions]}
        merged.update(condition)
    return merged


def _refuse_overlap(op: str, a: Sequence[str], b: Sequence[str]) -> None:
    shortest = min(len(a), len(b))
    if tuple(a[:shortest]) == tuple(b[:shortest]):
        raise ValueError(f"{op}: {'.'.join(a)!r} and {'.'.join(b)!r} overlap")


# ----------------------------------------------------------------------
# Index operations: nothing happens on read
# ----------------------------------------------------------------------
#: The options `create_index` passes on to the server.
INDEX_OPTIONS = (
    "name",
    "unique",
    "partialFilterExpression",
    "sparse",
    "expireAfterSeconds",
    "collation",
)

#: The directions and kinds an index key may have.
INDEX_KINDS = (1, -1, "text", "hashed", "2d", "2dsphere")

#: Index keys as PyMongo takes them: ``[(field, direction), ...]``.
IndexKeys = list[tuple[str, Any]]


def index_keys(keys: Any, what: str) -> IndexKeys:
    """Keys as PyMongo takes them: a field name, a list of ``(field, direction)``, or a dict.

    Raises
    ------
    ValueError
        For anything else: an empty list, a direction that is no index kind,
        a field path that names a reserved field.

    """
    if isinstance(keys, str):
        pairs: list[Any] = [(keys, 1)]
    elif isinstance(keys, dict):
        pairs = list(keys.items())
    elif isinstance(keys, (list, tuple)) and keys:
        pairs = [(k, 1) if isinstance(k, str) else k for k in keys]
    else:
        raise ValueError(
            f"{what}: keys must be a field name, a list of (field, direction) or a dict"
        )
    found: IndexKeys = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(f"{what}: {pair!r} is not a (field, direction) pair")
        name, kind = pair
        if isinstance(kind, bool) or kind not in INDEX_KINDS:
            raise ValueError(f"{what}: direction {kind!r} of {name!r}; one of {INDEX_KINDS}")
        if name != "_id" and name.split(".")[0] != VERSION_KEY:
            split_path(name, what=f"{what} key")
        found.append((name, kind))
    return found


def check_index_name(name: Any, what: str) -> None:
    """Refuse an index name the server (or a one-line report) cannot take."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: name must be a non-empty string, not {name!r}")
    if name == "*" or any(ord(c) < 32 for c in name):
        raise ValueError(f"{what}: {name!r} cannot name an index")


def _check_index_options(keys: IndexKeys, options: dict[str, Any]) -> None:
    """Refuse option values the server would refuse (or take otherwise) at upgrade."""
    for option in ("unique", "sparse"):
        if option in options and not isinstance(options[option], bool):
            raise ValueError(f"create_index: {option} must be True or False")
    if "expireAfterSeconds" in options:
        ttl = options["expireAfterSeconds"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 2**31 - 1:
            raise ValueError(
                f"create_index: expireAfterSeconds must be a whole number of seconds from 0 "
                f"to 2147483647, not {ttl!r}"
            )
        if len(keys) != 1:
            raise ValueError("create_index: expireAfterSeconds needs an index of one field")
    partial = options.get("partialFilterExpression")
    if "partialFilterExpression" in options and not isinstance(partial, dict):
        raise ValueError("create_index: partialFilterExpression must be a filter (a dict)")
    collation = options.get("collation")
    if "collation" in options and not (
        isinstance(collation, dict) and isinstance(collation.get("locale"), str)
    ):
        raise ValueError('create_index: collation must be a dict with a locale ({"locale": "fr"})')


def index_name(keys: IndexKeys) -> str:
    """The name MongoDB gives an index of these keys (``title_1_views_-1``)."""
    return "_".join(f"{name}_{kind}" for name, kind in keys)


class CollectionOperation(Operation):
    """An operation on the collection (its indexes, its validator), not on documents.

    It has no Python form: nothing happens on read, and a step made of such
    operations alone changes only the version.

    """

    __undone_by_function__ = False

    def apply(self, doc: Document) -> None:
        return None  # nothing happens on read

    def stages(self) -> list[dict[str, Any]]:
        return []

    def fast(self) -> Fast | None:
        return [], {}, []

    def touches(self) -> set[str]:
        return set()

    def describe(self) -> str:
        """What the operation changes, for reports ("index title_1 {title: 1}")."""
        raise NotImplementedError


class IndexOperation(CollectionOperation):
    """An operation on the collection's indexes.

    ``upgrade`` runs the creates of a model's steps before their document
    changes, and the drops after them (expand, then contract).

    """

    #: The index's name.
    name: str


class CreateIndex(IndexOperation):
    __op_name__ = "create_index"

    def __init__(self, keys: Any, **options: Any) -> None:
        self.keys = index_keys(keys, "create_index")
        unknown = sorted(set(options) - set(INDEX_OPTIONS))
        if unknown:
            raise ValueError(
                f"create_index: unknown option {unknown[0]!r}; one of {', '.join(INDEX_OPTIONS)}"
            )
        name = options.get("name", index_name(self.keys))
        check_index_name(name, "create_index")
        _check_index_options(self.keys, options)
        self.options = {**options, "name": name}
        self.name = name

    def arguments(self) -> tuple[Any, ...]:
        return (self.keys, self.options)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}"
            for k, v in self.options.items()
            if k != "name" or v != index_name(self.keys)
        )
        return f"ops.create_index({self.keys!r}{extra})"

    def describe(self) -> str:
        keys = ", ".join(f"{k}: {d!r}" for k, d in self.keys)
        extra = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "name")
        return f"index {self.name} {{{keys}}}" + (f" ({extra})" if extra else "")

    def inverse(self) -> Operation:
        return DropIndex.of(self)


class DropIndex(IndexOperation):
    __op_name__ = "drop_index"

    def __init__(self, name_or_keys: Any, *, keys: Any = None, **options: Any) -> None:
        #: The index as it was, for a downgrade to create again (None: not described).
        self.recreate: CreateIndex | None = None
        if isinstance(name_or_keys, str):
            check_index_name(name_or_keys, "drop_index")
            self.name = name_or_keys
            if keys is not None:
                if "name" in options:
                    raise ValueError("drop_index: the index is named twice")
                self.recreate = CreateIndex(keys, name=name_or_keys, **options)
            elif options:
                raise ValueError(
                    "drop_index: options describe the index to create again on downgrade; "
                    "give its keys too (keys=...)"
                )
        else:
            if keys is not None:
                raise ValueError("drop_index: keys given twice")
            self.recreate = CreateIndex(name_or_keys, **options)
            self.name = self.recreate.name
        if self.name == "_id_":
            raise ValueError("drop_index: the _id index cannot be dropped")
        #: The index's keys, when described.
        self.keys: IndexKeys | None = self.recreate.keys if self.recreate else None

    @classmethod
    def of(cls, index: CreateIndex) -> DropIndex:
        """The drop of an index, described so that its inverse creates it again."""
        options = {k: v for k, v in index.options.items() if k != "name"}
        if index.name == index_name(index.keys):
            return cls(index.keys, **options)
        return cls(index.name, keys=index.keys, **options)

    def arguments(self) -> tuple[Any, ...]:
        if self.recreate is None:
            return (self.name,)
        return (self.recreate.keys, self.recreate.options)

    def __repr__(self) -> str:
        if self.recreate is None:
            return f"ops.drop_index({self.name!r})"
        return repr(self.recreate).replace("ops.create_index(", "ops.drop_index(", 1)

    def describe(self) -> str:
        return f"index {self.name}"

    def inverse(self) -> Operation:
        if self.recreate is None:
            raise IrreversibleOperationError(
                self,
                "the index is named, not described: give drop_index its keys (and options) "
                "to create it again on downgrade, or write a downgrade step",
            )
        return self.recreate


# ----------------------------------------------------------------------
# The validator: nothing happens on read
# ----------------------------------------------------------------------
#: The levels `set_validator` takes: "moderate" while documents stored
#: before may not match (they stay updatable), "strict" once all do.
VALIDATION_LEVELS = ("moderate", "strict")

#: What the server does with a write that does not match: refuse it, or log it.
VALIDATION_ACTIONS = ("error", "warn")


class SetValidator(CollectionOperation):
    """Set the collection's validator to the model's ``$jsonSchema``, or remove it.

    The schema is not part of the operation: ``upgrade`` derives it from the
    model class in the code (`atomdb_migrate.validators.json_schema`), the
    step's model at the model's version, and sets it after the documents
    changed (see `atomdb_migrate.collection_state`). With `level` None the operation
    removes the validator.

    """

    __op_name__ = "set_validator"

    def __init__(self, level: str | None = "moderate", action: str | None = None) -> None:
        if level is None:
            if action is not None:
                raise ValueError(
                    f"set_validator(None) removes the validator: it takes no action ({action!r})"
                )
        else:
            if not isinstance(level, str) or level not in VALIDATION_LEVELS:
                raise ValueError(
                    f"set_validator: level {level!r}; one of {', '.join(VALIDATION_LEVELS)}, "
                    "or None to remove the validator"
                )
            action = "error" if action is None else action
            if not isinstance(action, str) or action not in VALIDATION_ACTIONS:
                raise ValueError(
                    f"set_validator: action {action!r}; one of {', '.join(VALIDATION_ACTIONS)}"
                )
        #: ``validationLevel``, or None: no validator.
        self.level = level
        #: ``validationAction`` (None with no validator).
        self.action = action

    def arguments(self) -> tuple[Any, ...]:
        return (None,) if self.level is None else (self.level, self.action)

    def describe(self) -> str:
        if self.level is None:
            return "no validator"
        return f"the validator ({self.level}, action {self.action})"

    def inverse(self) -> Operation:
        # What the collection had before is not known (and the code describes
        # only the model's version): a downgrade leaves no validator.
        return SetValidator(None)


# ----------------------------------------------------------------------
# The functions step modules call
# ----------------------------------------------------------------------
def add_field(path: str, default: Any = None) -> AddField:
    """Set a field to `default` in every document (replacing any value there)."""
    return AddField(path, default)


def set_default_where_missing(path: str, default: Any) -> SetDefaultWhereMissing:
    """Set a field to `default` in the documents that lack it (a stored null is kept)."""
    return SetDefaultWhereMissing(path, default)


def remove_field(path: str, default: Any = MISSING) -> RemoveField:
    """Remove a field; with `default`, downgrades add it back with that value."""
    return RemoveField(path, default)


def rename_field(old: str, new: str) -> RenameField:
    """Rename a field; a `new` without dots stays in `old`'s embedded document."""
    return RenameField(old, new)


def copy_field(src: str, dst: str) -> CopyField:
    """Copy a field's value to another path (where the source is there)."""
    return CopyField(src, dst)


def move_field(src: str, dst: str) -> MoveField:
    """Move a field's value to another path, across nesting levels."""
    return MoveField(src, dst)


def convert(path: str, to: str | type) -> Convert:
    """Convert a field's value to int, float, str, bool or datetime.

    A missing field and a null are left as they are. A value that does not
    convert (``"abc"`` to int) fails the document's step, naming the value.
    ``datetime`` converts atom-db's JSON form of a datetime or a date
    (``{"__py__": "datetime.datetime", "year": ...}``) to a stored date, to
    the millisecond, as MongoDB stores dates.

    """
    return Convert(path, to)


def rename_model(old_name: str, new_name: str) -> RenameModel:
    """The model was moved to another module or renamed; see `RenameModel`."""
    return RenameModel(old_name, new_name)


def create_index(keys: Any, **options: Any) -> CreateIndex:
    """Create an index (keys as PyMongo takes them) before the step's document changes.

    Options passed on: ``name``, ``unique``, ``partialFilterExpression``,
    ``sparse``, ``expireAfterSeconds``, ``collation``. An identical index
    that exists is accepted; one with the same name and other keys or
    options is an error.

    """
    return CreateIndex(keys, **options)


def drop_index(name_or_keys: Any, *, keys: Any = None, **options: Any) -> DropIndex:
    """Drop an index (by name, or by keys) after the step's document changes.

    An index that is not there is fine. A downgrade creates it again when it
    is described: by its keys (``drop_index([("slug", 1)], unique=True)``),
    or by its name with ``keys=`` (``drop_index("by_slug", keys="slug",
    unique=True)``), with the options of `create_index` it had.

    """
    return DropIndex(name_or_keys, keys=keys, **options)


def set_validator(level: str | None = "moderate", action: str | None = None) -> SetValidator:
    """Validate the collection's documents with the model's ``$jsonSchema``.

    `level` is "moderate" (documents that do not match already stay
    updatable: for a rollout) or "strict" (every write is checked: once
    ``atomdb-migrate check --pending`` passes); `action` "error" (the
    default: refuse the write) or "warn" (log it). None removes the
    validator. ``upgrade`` derives the schema from the model class in the
    code and sets it after the step's document changes; ``downgrade``
    removes it.

    """
    return SetValidator(level, action)


# ----------------------------------------------------------------------
# Running a list of operations
# ----------------------------------------------------------------------
class Operations:
    """A step's operations as a step function (the Python form).

    Parameters
    ----------
    operations: iterable of Operation
        The operations, in order.
    embedded: mapping or callable, optional
        The embedded models on the model's paths at the version the
        operations leave documents at (`Embedded`), or a function giving
        them when first needed: `atomdb_migrate.registry.register_step`
        passes the registry's, which reads the step's ``schema``, or the
        model class for a step arriving at the model's version. Without it,
        no path is known to hold an embedded model.

    """

    def __init__(self, operations: Iterable[Operation], embedded: EmbeddedSource = None) -> None:
        given = tuple(operations)
        for op in given:
            if not isinstance(op, Operation):
                raise TypeError(
                    f"not an operation: {op!r} (use the functions of atomdb_migrate.ops)"
                )
        if embedded is None:
            source: Callable[[], Embedded] = Operation._embedded
        elif callable(embedded):
            source = embedded
        else:
            known = ModelPaths(embedded, references_of(embedded))
            source = lambda: known  # noqa: E731
        self.operations = tuple(op.bound(source) for op in given)

    def __call__(self, doc: Document) -> None:
        for op in self.operations:
            op.apply(doc)

    def __repr__(self) -> str:
        return f"[{', '.join(repr(op) for op in self.operations)}]"

    def inverse(self, embedded: EmbeddedSource = None) -> Operations:
        """The operations that undo these, last first; see `Operation.inverse`.

        `embedded`: the embedded models at the version they take documents
        back to (see `Operations`).

        """
        return Operations((op.inverse() for op in reversed(self.operations)), embedded)

    def renames(self) -> list[RenameModel]:
        return [op for op in self.operations if isinstance(op, RenameModel)]

    def indexes(self) -> list[IndexOperation]:
        """The operations on the collection's indexes, in order."""
        return [op for op in self.operations if isinstance(op, IndexOperation)]

    def validators(self) -> list[SetValidator]:
        """The operations on the collection's validator, in order."""
        return [op for op in self.operations if isinstance(op, SetValidator)]

    def server_updates(
        self, query: dict[str, Any], to_version: str
    ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The updates, in order, that run the step on the documents `query` matches.

        First, where there is one, the fast form: the documents of the
        common shape (see `Operation.fast`), changed with plain stages. Then
        the general form (`pipeline`) for the others. Each update sets the
        new version, so the second one no longer matches what the first
        changed.

        """
        general = (query, self.pipeline(to_version))
        fast = self.fast_update(to_version)
        if fast is None:
            return [general]
        conditions, stages = fast
        return [(_all_of(query, conditions), stages), general]

    def fast_update(
        self, to_version: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """The step's fast form: its query conditions and its two stages.

        There is one when every operation has a fast form and no two touch
        the same top-level field: then one ``$set`` (whose expressions all
        read the document as it was) and one ``$unset`` make every change.

        """
        seen: set[str] = set()
        conditions: list[dict[str, Any]] = []
        sets: dict[str, Any] = {}
        unsets: list[str] = []
        for op in self.operations:
            fast = op.fast()
            touched = op.touches()
            if fast is None or touched & seen:
                return None
            seen |= touched
            conditions += fast[0]
            sets.update(fast[1])
            unsets += fast[2]
        sets[VERSION_KEY] = literal(to_version)
        stages: list[dict[str, Any]] = [{"$set": sets}]
        if unsets:
            stages.append({"$unset": unsets})
        return conditions, stages

    def refusing(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """An aggregation counting the documents `query` matches that the operations
        would refuse (``[{"refused": n}]``; nothing when none); no stages when
        none of them can refuse one."""
        if not any(op.fallible for op in self.operations):
            return []
        stages: list[dict[str, Any]] = [{"$match": query}]
        for op in self.operations:
            stages.extend(op.stages())
        return [*stages, {"$match": {FAILED_FIELD: True}}, {"$count": "refused"}]

    def pipeline(self, to_version: str) -> list[dict[str, Any]]:
        """The update pipeline that runs the operations and sets the version.

        A step with a conversion keeps the document as read in a reserved
        field: where a conversion fails the document is put back unchanged,
        at its old version, for the client path to report.

        """
        fallible = any(op.fallible for op in self.operations)
        stages: list[dict[str, Any]] = []
        if fallible:
            stages.append({"$set": {ORIGINAL_FIELD: "$$ROOT"}})
        for op in self.operations:
            stages.extend(op.stages())
        stages.append({"$set": {VERSION_KEY: literal(to_version)}})
        if fallible:
            stages.append(
                _replace(
                    {"$cond": [{"$eq": [f"${FAILED_FIELD}", True]}, f"${ORIGINAL_FIELD}", "$$ROOT"]}
                )
            )
            stages.append({"$unset": [ORIGINAL_FIELD, FAILED_FIELD]})
        return stages


__all__ = [
    "MISSING",
    "NO_EMBEDDED",
    "VALIDATION_ACTIONS",
    "VALIDATION_LEVELS",
    "AddField",
    "CollectionOperation",
    "ConversionError",
    "Convert",
    "CopyField",
    "CreateIndex",
    "DropIndex",
    "IndexOperation",
    "ModelPaths",
    "MoveField",
    "Operation",
    "OperationError",
    "Operations",
    "Reference",
    "RemoveField",
    "RenameField",
    "RenameModel",
    "SetDefaultWhereMissing",
    "SetValidator",
    "UnsettablePathError",
    "add_field",
    "convert",
    "copy_field",
    "create_index",
    "drop_index",
    "embedded_models",
    "move_field",
    "references_of",
    "remove_field",
    "rename_field",
    "rename_model",
    "set_default_where_missing",
    "set_validator",
]
