"""Paths in four forms: in Python, as aggregation expressions, as formulas (for the
queries), and as query conditions (the formulas rendered, for the fast form of a
step); and the shapes of stored documents they walk (embedded models, references).

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ..core.bson_rules import INT32_MAX as INT32_MAX
from ..core.bson_rules import INT32_MIN as INT32_MIN
from ..core.bson_rules import INT64_MAX as INT64_MAX
from ..core.bson_rules import INT64_MIN as INT64_MIN
from ..core.conditions import Atom, Formula, conj, disj, filters_of, neg
from ..core.documents import Document
from ..core.storage import JSON_DATE_TAGS as JSON_DATE_TAGS
from ..core.storage import MANAGED_KEYS
from ..core.storage import MODEL_KEY as MODEL_KEY

# MODEL_KEY, the integer ranges and JSON_DATE_TAGS moved to `core`: still
# importable from here.

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

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INT_REGEX = "^[+-]?[0-9]+$"
_FLOAT_REGEX = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


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
#: function giving it when first needed (the registry's; see `StepOperations`).
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
    if parts[0] in MANAGED_KEYS:
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
    """`base` with its field `name`, a plain path name (`split_path`), set to `value`."""
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


#: The document marked as refused by the step: left as read (see `StepOperations.pipeline`).
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
# Paths, as formulas; as query conditions, the formulas rendered
# ----------------------------------------------------------------------
def prefixes(parts: Sequence[str]) -> list[tuple[str, ...]]:
    """The paths on the way to a path (``a``, ``a.b`` for ``a.b.c``)."""
    return [tuple(parts[:i]) for i in range(1, len(parts))]


def _type(parts: tuple[str, ...], name: str) -> Atom:
    return Atom(parts, "$type", frozenset({name}))


def is_document_formula(parts: tuple[str, ...]) -> Formula:
    """The value at a path is a document."""
    # $type "object" also matches a list holding a document.
    return conj([_type(parts, "object"), neg(_type(parts, "array"))])


def is_null_formula(parts: tuple[str, ...]) -> Formula:
    """The value at a path is null."""
    # $type "null" also matches a list holding a null.
    return conj([_type(parts, "null"), neg(_type(parts, "array"))])


def exists_formula(parts: Sequence[str]) -> Formula:
    """The value at a path is there, reached through documents only (`get_path`,
    `exists_expr`).

    A path that exists runs through documents or arrays only, so each value
    on the way not being an array makes it a document.

    """
    on_the_way = [neg(_type(p, "array")) for p in prefixes(parts)]
    return conj([*on_the_way, Atom(tuple(parts), "$exists", True)])


def settable_formula(
    parts: Sequence[str], embedded: Embedded = NO_EMBEDDED, carry: bool = False
) -> Formula:
    """A value can be set at a path, knowing its embedded models (`blocked`,
    `settable_expr`).

    A reference on the way blocks it, whatever it holds: atom-db reads the
    referenced document, never what is stored inside the reference.

    """
    references = references_of(embedded)
    checks: list[Formula] = []
    for p in prefixes(parts):
        if p in references:
            return False
        kinds = [is_document_formula(p)]
        if p not in embedded:
            kinds.append(neg(Atom(p, "$exists", True)))
        elif carry:
            kinds += [neg(Atom(p, "$exists", True)), is_null_formula(p)]
        checks.append(disj(kinds))
    return conj(checks)


def exists_query(parts: Sequence[str]) -> list[dict[str, Any]]:
    """Conditions true where `exists_expr` is: `exists_formula`, rendered."""
    return filters_of(exists_formula(parts))


def settable_query(parts: Sequence[str], embedded: Embedded = NO_EMBEDDED) -> list[dict[str, Any]]:
    """Conditions true where a value can be set with a plain ``$set``: every
    value on the way is a document, or missing where it is no embedded model
    (``$set`` creates ``{}``). An embedded model to create is left to the
    general form, and so is a path through a reference (it matches nothing).
    `settable_formula` without `carry`, rendered."""
    return filters_of(settable_formula(parts, embedded))


#: The fast form of an operation: query conditions, and the fields to set
#: and to unset that make its change where they hold.
Fast = tuple[list[dict[str, Any]], dict[str, Any], list[str]]
