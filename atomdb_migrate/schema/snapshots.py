"""Schema snapshots: a model's stored fields, recorded in its step modules.

Each step module written by ``atomdb-migrate revision`` ends with the model's
stored fields after the step, by name, with what decides how each is stored
and validated::

    schema = {
        "title": "Str",
        "views": "Range(0, None)",
        "author": "Ref(blog.User)",
        "meta": {"__model__": "blog.Meta", "lang": "Str", "tags": "List(Str)"},
    }

- a reference to another saved model is ``Ref(name)`` (``Typed`` and
  ``Instance`` store it alike);
- an embedded model (a ``JSONModel``, or a model never saved on its own) is
  a dict of its own fields, with its ``__model__``, recursively;
- containers name their items (``List(Int)``, ``Dict(Str, Int)``,
  ``Tuple(Int)``), ranges their bounds, enums their items.

From the snapshot of the model's previous version and the live class,
`compare` gives the difference (`SchemaDiff`):

- ``atomdb-migrate revision --autogenerate`` infers the operations of the
  next step from it (see `atomdb_migrate.autogenerate`);
- ``atomdb-migrate check`` fails when the fields differ from the snapshot of
  the model's version: a change made without a migration. Changes that store
  and validate the same (``Typed`` to ``Instance``, an enum gaining an item,
  a range widening) are not changes.

"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from atom.api import Member
from atomdb.base import Model, resolve_member_types
from atomdb.nosql import NoSQLModel
from packaging.version import Version

from ..core.storage import IMPLICIT, MODEL_KEY
from ..exceptions import ConfigError
from ..steps.registry import describe_fields_with
from ..steps.versions import Step, StepGraph

#: What a snapshot records of a field: a type's description, or, for an
#: embedded model, a dict of its fields (with its ``__model__``).
Description: TypeAlias = "str | dict[str, Description]"

#: Member types stored as lists, whatever they hold in Python.
LISTS = ("List", "ContainerList", "Set")


def _type_name(kind: Any) -> str:
    model = getattr(kind, "__model__", None)
    if isinstance(model, str):
        return model
    return getattr(kind, "__name__", repr(kind))


def describe_member(member: Member[Any, Any], seen: frozenset[type] = frozenset()) -> Description:
    """What decides how a member's value is stored and validated (see the module)."""
    name = type(member).__name__
    _, context = member.validate_mode
    if name in ("Typed", "Instance", "ForwardTyped", "ForwardInstance"):
        try:
            kinds = resolve_member_types(member)
        except Exception:  # an unresolvable forward reference
            kinds = None
        if kinds and len(kinds) == 1 and isinstance(kinds[0], type):
            kind = kinds[0]
            if issubclass(kind, NoSQLModel):
                return f"Ref({_type_name(kind)})"
            if issubclass(kind, Model):
                return embedded(kind, seen)
        return f"Instance({', '.join(_type_name(k) for k in kinds or ())})"
    if name == "Coerced":
        kinds = context[0] if isinstance(context, tuple) else ()
        return f"Coerced({', '.join(_type_name(k) for k in kinds)})"
    if name in LISTS or name == "Tuple":
        item = getattr(member, "item", None)
        inner = _inline(describe_member(item, seen)) if item is not None else "Value"
        return f"{'Tuple' if name == 'Tuple' else 'List'}({inner})"
    if name == "Dict":
        key, value = context if isinstance(context, tuple) else (None, None)
        k = _inline(describe_member(key, seen)) if key is not None else "Value"
        v = _inline(describe_member(value, seen)) if value is not None else "Value"
        return f"Dict({k}, {v})"
    if name == "Enum":
        return f"Enum({', '.join(repr(i) for i in getattr(member, 'items', ()))})"
    if name in ("Range", "FloatRange"):
        low, high = context if isinstance(context, tuple) else (None, None)
        return f"{name}({low!r}, {high!r})"
    return name


def embedded(kind: type, seen: frozenset[type] = frozenset()) -> Description:
    """An embedded model's fields, recursively (a model met again is named only)."""
    if kind in seen:
        return f"Embedded({_type_name(kind)})"
    members = kind.members()  # type: ignore[attr-defined]
    fields: dict[str, Description] = {MODEL_KEY: _type_name(kind)}
    for name in sorted(getattr(kind, "__fields__", ())):
        if name not in IMPLICIT:
            fields[name] = describe_member(members[name], seen | {kind})
    return fields


def _inline(description: Description) -> str:
    """A description inside another's text: an embedded model as its JSON."""
    if isinstance(description, str):
        return description
    return json.dumps(description, sort_keys=True)


def snapshot(cls: type[NoSQLModel]) -> dict[str, Description]:
    """The model's stored fields and their descriptions, by name."""
    members = cls.members()
    return {
        name: describe_member(members[name], frozenset({cls}))
        for name in sorted(cls.__fields__)
        if name not in IMPLICIT
    }


def is_schema(value: Any) -> bool:
    """Whether a step module's ``schema`` is one (names to descriptions, recursively)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and (isinstance(v, str) or is_schema(v)) for k, v in value.items()
    )


# ----------------------------------------------------------------------
# Which snapshot to compare with
# ----------------------------------------------------------------------
def newest_snapshot(steps: list[Step]) -> Step | None:
    """The step with the newest snapshot, of a model's steps."""
    recorded = [s for s in steps if s.schema is not None]
    return max(recorded, key=lambda s: s.to_key) if recorded else None


def step_to(graph: StepGraph, version: Version) -> Step | None:
    """The step that arrives at `version`, if any."""
    return next((s for s in graph.steps if s.to_key == version), None)


def previous_snapshot(graph: StepGraph, version: Version, model: str) -> Step | None:
    """The step whose snapshot holds the fields at `version`: the step that arrives there.

    None when no step records a schema at all (the model does not use
    snapshots yet).

    Raises
    ------
    ConfigError
        If steps record snapshots, but the step arriving at `version` does
        not (or there is none): the fields at `version` are not known, and
        comparing with an older snapshot would take every change made since
        for a change to write.

    """
    if newest_snapshot(graph.steps) is None:
        return None
    found = step_to(graph, version)
    if found is not None and found.schema is not None:
        return found
    where = f"the step to version {version} ({found.source})" if found else "no step"
    raise ConfigError(
        f"model {model!r}: {where} records no schema, so the fields at version "
        f"{version} are not known; comparing with an older snapshot would take the "
        f"changes made since for changes to write. Add `schema = {{...}}`, the fields "
        f"documents have at version {version}, to that step module, then run again"
    )


# ----------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------
@dataclass
class SchemaDiff:
    """How a model's fields differ from a snapshot (names dotted inside embedded models)."""

    added: dict[str, Description] = field(default_factory=dict)
    removed: dict[str, Description] = field(default_factory=dict)
    #: Fields whose description changed: (old, new).
    changed: dict[str, tuple[Description, Description]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"added {n} ({shown(t)})" for n, t in self.added.items()]
        parts += [f"removed {n} ({shown(t)})" for n, t in self.removed.items()]
        parts += [
            f"{n} changed from {shown(a)} to {shown(b)}" for n, (a, b) in self.changed.items()
        ]
        return "; ".join(parts)


def shown(description: Description) -> str:
    """A description as messages show it: an embedded model by its name."""
    if isinstance(description, dict):
        return f"embedded {description.get(MODEL_KEY, '?')}"
    return description


_REF = re.compile(r"Ref\(([^()]+)\)")


def resolve_references(desc: Any, resolve: Callable[[str], str]) -> Any:
    """`desc` with each ``Ref(name)`` naming the model as `resolve` gives it now:
    a snapshot recorded before a model moved (``ops.rename_model``) names it
    by its former name, which atom-db stores the same way once upgraded."""
    if isinstance(desc, str):
        return _REF.sub(lambda m: f"Ref({resolve(m.group(1))})", desc)
    if isinstance(desc, dict):
        return {
            k: (
                resolve(v)
                if k == MODEL_KEY and isinstance(v, str)
                else resolve_references(v, resolve)
            )
            for k, v in desc.items()
        }
    return desc


def compare(
    old: dict[str, Any],
    new: dict[str, Any],
    prefix: str = "",
    *,
    resolve: Callable[[str], str] | None = None,
) -> SchemaDiff:
    """The difference from a snapshot `old` to the fields `new`.

    With `resolve`, a model named in `old` by a former name counts as the
    model it was renamed to.

    """
    if resolve is not None:
        old = resolve_references(old, resolve)
        new = resolve_references(new, resolve)
    diff = SchemaDiff()
    for name, desc in new.items():
        if name == MODEL_KEY:
            continue
        path = prefix + name
        if name not in old:
            diff.added[path] = desc
            continue
        before = old[name]
        if isinstance(before, dict) and isinstance(desc, dict):
            if before.get(MODEL_KEY) != desc.get(MODEL_KEY):
                diff.changed[path] = (before, desc)  # the stored __model__ changes
            else:
                inner = compare(before, desc, path + ".")
                diff.added.update(inner.added)
                diff.removed.update(inner.removed)
                diff.changed.update(inner.changed)
        elif not same_storage(before, desc):
            diff.changed[path] = (before, desc)
    for name, desc in old.items():
        if name != MODEL_KEY and name not in new:
            diff.removed[prefix + name] = desc
    return diff


#: A description with arguments: ``Kind(arguments)``.
CALL = re.compile(r"^(\w+)\((.*)\)$", re.S)


def same_storage(old: Description, new: Description) -> bool:
    """Whether two descriptions store and validate alike (the new one accepting at
    least every value the old one did)."""
    if old == new:
        return True
    if isinstance(new, dict):
        # A snapshot from before embedded models were described in full.
        return isinstance(old, str) and old in (
            f"Typed({new.get(MODEL_KEY)})",
            f"Instance({new.get(MODEL_KEY)})",
        )
    if not isinstance(old, str):
        return False
    old, new = plain(old), plain(new)
    if old == new or _widens(old, new):
        return True
    b = CALL.match(new)
    if b is None:
        return False
    kind_b, args_b = b.groups()
    a = CALL.match(old)
    if a is None:
        # A snapshot from before details were recorded: a bare type name.
        return old == kind_b or (old in LISTS and kind_b == "List")
    kind_a, args_a = a.groups()
    if kind_a in LISTS and kind_b == "List":
        return args_a == args_b
    if kind_a in ("Typed", "Instance") and kind_b in ("Instance", "Ref"):
        return args_a == args_b  # Typed and Instance store alike; a reference as before
    if kind_a == kind_b == "Enum":
        old_items, new_items = literal_arguments(args_a), literal_arguments(args_b)
        return old_items is not None and new_items is not None and old_items <= new_items
    if kind_a == kind_b and kind_a in ("Range", "FloatRange"):
        bounds_a, bounds_b = (
            literal_arguments(args_a, ordered=True),
            literal_arguments(args_b, ordered=True),
        )
        if bounds_a is None or bounds_b is None:
            return False
        (low_a, high_a), (low_b, high_b) = bounds_a, bounds_b
        return (low_b is None or (low_a is not None and low_b <= low_a)) and (
            high_b is None or (high_a is not None and high_b >= high_a)
        )
    return False


#: What a member of each plain kind stores, as the Python type it holds.
_PLAIN_TYPES = {"Int": "int", "Float": "float", "Str": "str", "Bool": "bool", "Bytes": "bytes"}


def plain(description: str) -> str:
    """``Coerced(int)`` as ``Int``: it stores what it coerced to, as ``Int`` does."""
    a = CALL.match(description)
    if a is not None and a.group(1) == "Coerced":
        for kind, python in _PLAIN_TYPES.items():
            if a.group(2).strip() == python:
                return kind
    return description


def _widens(old: str, new: str) -> bool:
    """Whether `new` accepts every value `old` does, storing each the same way:
    a range dropped (``Range(0, 10)`` to ``Int``), None allowed (``Int`` to
    ``Instance(int)``), a container's item type dropped (``List(Str)`` to
    ``List(Value)``)."""
    a, b = CALL.match(old), CALL.match(new)
    kind_a = a.group(1) if a else old
    if b is None:
        return (kind_a, new) in (("Range", "Int"), ("FloatRange", "Float"))
    kind_b, args_b = b.groups()
    if kind_b == "Instance" and args_b.strip() == _PLAIN_TYPES.get(old):
        return True
    if a is None:
        return False
    if kind_a in LISTS and kind_b == "List" and args_b == "Value":
        return True
    if kind_a == kind_b == "Tuple" and args_b == "Value":
        return True
    return kind_a == kind_b == "Dict" and args_b == "Value, Value"


def literal_arguments(args: str, *, ordered: bool = False) -> Any:
    """The literals of a description's arguments: a set of their reprs, or (ordered)
    the tuple of them; None where they are not all literals."""
    try:
        found = tuple(ast.literal_eval(f"({args},)"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if ordered:
        return found if len(found) == 2 else None
    return {repr(i) for i in found}


# The registry reads a model's embedded models at its version from its class.
describe_fields_with(snapshot)
