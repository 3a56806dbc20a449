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

From the snapshot of the model's previous version and the live class:

- ``atomdb-migrate revision --autogenerate`` infers the operations of the
  next step (fields added, removed or converted, inside embedded models
  too), marks likely renames and moves (across embedded models) for the
  author to confirm instead of guessing, and writes an ``upgrade()`` that
  raises until written where a default is computed or a change is one no
  operation makes whole (a type changed inside a container, say). A
  removed field and a conversion that loses values get a comment that
  ``check`` refuses until the author deletes it (`CONFIRM_TAGS`);
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
from datetime import date, datetime
from typing import Any, TypeAlias

from atom.api import DefaultValue, Member
from atomdb.base import Model, resolve_member_types
from atomdb.nosql import NoSQLModel
from packaging.version import Version

from ..core.literals import Source
from ..core.storage import IMPLICIT, MODEL_KEY
from ..exceptions import ConfigError, short_repr
from ..operations.conversions import check_value
from ..operations.paths import CONVERSIONS
from ..steps.registry import describe_fields_with
from ..steps.versions import Step, StepGraph

#: What a snapshot records of a field: a type's description, or, for an
#: embedded model, a dict of its fields (with its ``__model__``).
Description: TypeAlias = "str | dict[str, Description]"

#: The conversion `ops.convert` makes for a member type, where there is one.
CONVERSION_FOR = {
    "Int": "int",
    "Float": "float",
    "Str": "str",
    "Bool": "bool",
    "Instance(datetime)": "datetime",
}

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
        parts = [f"added {n} ({_shown(t)})" for n, t in self.added.items()]
        parts += [f"removed {n} ({_shown(t)})" for n, t in self.removed.items()]
        parts += [
            f"{n} changed from {_shown(a)} to {_shown(b)}" for n, (a, b) in self.changed.items()
        ]
        return "; ".join(parts)


def _shown(description: Description) -> str:
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


_CALL = re.compile(r"^(\w+)\((.*)\)$", re.S)


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
    old, new = _plain(old), _plain(new)
    if old == new or _widens(old, new):
        return True
    b = _CALL.match(new)
    if b is None:
        return False
    kind_b, args_b = b.groups()
    a = _CALL.match(old)
    if a is None:
        # A snapshot from before details were recorded: a bare type name.
        return old == kind_b or (old in LISTS and kind_b == "List")
    kind_a, args_a = a.groups()
    if kind_a in LISTS and kind_b == "List":
        return args_a == args_b
    if kind_a in ("Typed", "Instance") and kind_b in ("Instance", "Ref"):
        return args_a == args_b  # Typed and Instance store alike; a reference as before
    if kind_a == kind_b == "Enum":
        old_items, new_items = _literals(args_a), _literals(args_b)
        return old_items is not None and new_items is not None and old_items <= new_items
    if kind_a == kind_b and kind_a in ("Range", "FloatRange"):
        bounds_a, bounds_b = _literals(args_a, ordered=True), _literals(args_b, ordered=True)
        if bounds_a is None or bounds_b is None:
            return False
        (low_a, high_a), (low_b, high_b) = bounds_a, bounds_b
        return (low_b is None or (low_a is not None and low_b <= low_a)) and (
            high_b is None or (high_a is not None and high_b >= high_a)
        )
    return False


#: What a member of each plain kind stores, as the Python type it holds.
_PLAIN_TYPES = {"Int": "int", "Float": "float", "Str": "str", "Bool": "bool", "Bytes": "bytes"}


def _plain(description: str) -> str:
    """``Coerced(int)`` as ``Int``: it stores what it coerced to, as ``Int`` does."""
    a = _CALL.match(description)
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
    a, b = _CALL.match(old), _CALL.match(new)
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


def _literals(args: str, *, ordered: bool = False) -> Any:
    """The literals of a description's arguments: a set of their reprs, or (ordered)
    the tuple of them; None where they are not all literals."""
    try:
        found = tuple(ast.literal_eval(f"({args},)"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if ordered:
        return found if len(found) == 2 else None
    return {repr(i) for i in found}


# ----------------------------------------------------------------------
# Inferring operations
# ----------------------------------------------------------------------
#: The tags of comments that ask the author to confirm what a generated step
#: does to stored data. `atomdb-migrate check` refuses a step module holding
#: one until the comment is deleted (see `atomdb_migrate.loader`).
CONFIRM_TAGS = ("DELETES DATA", "LOSSY")

#: What the author does with a comment of `CONFIRM_TAGS`.
CONFIRM = "delete this comment once that is what you want (`check` fails while it is here)"


@dataclass
class Inferred:
    """What autogenerate writes for a difference."""

    #: The lines of the ``operations`` list, with comments for the author.
    lines: list[str] = field(default_factory=list)
    #: Fields whose default is computed for each object: a hand-written
    #: ``upgrade`` must give each existing document its own value.
    computed: list[str] = field(default_factory=list)
    #: Changes no operation makes (a type changed inside a container, say),
    #: described: a hand-written ``upgrade`` must make them.
    by_hand: list[str] = field(default_factory=list)
    #: What the author must read, a line each: the renames and moves to
    #: consider, the steps to write by hand, the values to confirm or set.
    #: ``revision`` prints them too.
    hints: list[str] = field(default_factory=list)


def _member_at(cls: type, path: str) -> tuple[type, str] | None:
    """The class holding a dotted field (an embedded model's, for a dotted path)."""
    *outer, last = path.split(".")
    kind: Any = cls
    for name in outer:
        member = kind.members().get(name)
        kinds = resolve_member_types(member) if member is not None else None
        if not kinds or len(kinds) != 1:
            return None
        kind = kinds[0]
    return (kind, last) if last in kind.members() else None


def _is_computed(kind: type, name: str) -> bool:
    """Whether a member's default is computed for each object (a factory, a
    ``_default_`` method), rather than one value shared by all."""
    mode, context = kind.members()[name].default_value_mode  # type: ignore[attr-defined]
    if mode in (DefaultValue.ObjectMethod, DefaultValue.ObjectMethod_Name):
        return True
    if mode in (DefaultValue.MemberMethod_Object,):
        return True
    if mode == DefaultValue.CallObject:
        # atom's own factories (Typed(dict, ()), Instance(list, factory=list),
        # Coerced) make one value; a user's callable may make a new one each time.
        qualname = getattr(context, "__qualname__", "")
        return not isinstance(context, type) and "__init__.<locals>" not in qualname
    return False


def _default(cls: type, path: str) -> tuple[Any, str, bool]:
    """The value an added field gets, a comment when it must be checked, and whether
    it is computed for each object."""
    found = _member_at(cls, path)
    if found is None:
        return None, "  # its default could not be found: set one", False
    kind, name = found
    if _is_computed(kind, name):
        return None, "", True
    try:
        values = [getattr(kind.__new__(kind), name) for _ in range(2)]  # type: ignore[call-overload]
    except Exception as exc:
        return None, f"  # its default could not be read ({type(exc).__name__}): set one", False
    value = values[0]
    if isinstance(value, (datetime, date)) or not _same(values[0], values[1]):
        return None, "", True
    if isinstance(value, Model):
        return None, "  # its default is an object: set one, as it is stored", False
    try:
        check_value(value, name)
    except ValueError:
        return None, f"  # its default {_shown_value(value)} is not stored as it is: set one", False
    return value, "", False


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) or (a != a and b != b)
    except Exception:
        return False


def _shown_value(value: Any) -> str:
    """A value as a comment shows it: one line."""
    return " ".join(short_repr(value, 60).split())


def infer_operations(
    cls: type[NoSQLModel], diff: SchemaDiff, source: Source | None = None
) -> Inferred:
    """The lines of an ``operations`` list for a difference, with comments for the author.

    Added fields keep a value already there (`set_default_where_missing`):
    a field can be new to the model and still be stored in some documents.
    A field whose default is computed for each object gets no operation: the
    step's ``upgrade`` must compute it per document; so must a type change
    no conversion makes whole (inside a container, an embedded model's
    class, bytes, a range or an enum narrowed). A removed field, and a
    conversion that loses or refuses values, get a comment the author must
    delete to confirm (`CONFIRM_TAGS`). A field removed while another of the
    same kind is added anywhere in the model is offered as a rename or a
    move. Values are written as Python expressions; `source` collects the
    imports they need.

    """
    source = source or Source()
    out = Inferred()
    for name in diff.added:
        _infer_added(out, cls, name, source)
    for name, before in diff.removed.items():
        out.lines.append(f"ops.remove_field({name!r}),")
        deletes = (
            f"# DELETES DATA: remove_field({name!r}) deletes every stored {name!r} "
            f"({_shown(before)}); {CONFIRM}"
        )
        out.lines.append(deletes)
        out.hints.append(deletes[2:])
    for name, (before, after) in diff.changed.items():
        _infer_changed(out, name, before, after)
    for hint in _move_hints(diff):
        out.lines.append(f"# {hint}")
        out.hints.append(hint)
    if out.computed:
        out.hints.append(
            f"{', '.join(out.computed)}: computed defaults; write upgrade() to give each "
            "document its own value"
        )
    if out.by_hand:
        out.hints.append(
            f"no operation makes these; write them in upgrade(): {'; '.join(out.by_hand)}"
        )
    # Names and types in comments are the model's own text: keep each line one line.
    out.lines = [" ".join(line.splitlines()) for line in out.lines]
    out.hints = [" ".join(line.splitlines()) for line in out.hints]
    return out


def _infer_added(out: Inferred, cls: type, name: str, source: Source) -> None:
    value, note, computed = _default(cls, name)
    if computed:
        out.computed.append(name)
        out.lines.append(f"# {name!r}: its default is computed for each object: see upgrade()")
        return
    try:
        text = source.literal(value)
    except ValueError:
        text, note = "None", f"  # its default {_shown_value(value)} cannot be written: set one"
    out.lines.append(f"ops.set_default_where_missing({name!r}, {text}),{note}")
    if note:
        out.hints.append(f"{name!r}:{note.partition('#')[2]}")


def _infer_changed(out: Inferred, name: str, before: Description, after: Description) -> None:
    found = conversion(before, after)
    if found is None:
        what = f"{name!r} changed from {_shown(before)} to {_shown(after)}"
        out.by_hand.append(what)
        out.lines.append(f"# {what}: no operation converts it; write the change in upgrade()")
        return
    to, lossy = found
    out.lines.append(f"ops.convert({name!r}, {to!r}),  # was {_shown(before)}")
    if lossy:
        line = f"# LOSSY: {name!r} {lossy}; check the stored values first, then {CONFIRM}"
        out.lines.append(line)
        out.hints.append(line[2:])


def moves(diff: SchemaDiff) -> list[tuple[str, str, Description]]:
    """Fields removed while another of the same kind is added, anywhere in the model:
    (removed, added, description), each pair once; inside an embedded model
    added or removed whole too. A pair inside a pair already found is left out."""
    removed, added = dict(_flattened(diff.removed)), dict(_flattened(diff.added))
    found: list[tuple[str, str, Description]] = []
    for old, before in removed.items():
        for new, after in added.items():
            if old == new or not (before == after or same_storage(before, after)):
                continue
            if any(_inside(old, a) and _inside(new, b) for a, b, _ in found):
                continue
            found.append((old, new, after))
    return found


def _flattened(fields: dict[str, Description]) -> list[tuple[str, Description]]:
    """Fields, and the fields inside each embedded model among them, by dotted path,
    outer ones first."""
    out: list[tuple[str, Description]] = []
    inner: list[tuple[str, Description]] = []
    for path, description in fields.items():
        out.append((path, description))
        if isinstance(description, dict):
            nested = {f"{path}.{k}": v for k, v in description.items() if k != MODEL_KEY}
            inner += _flattened(nested)
    return out + inner


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent + ".")


#: The most renames or moves offered for one removed field, a line each; more
#: are offered in one line.
MOST_MOVES = 3


def _move_hints(diff: SchemaDiff) -> list[str]:
    """The ``RENAME?`` and ``MOVE?`` comments for the pairs `moves` finds: a line a
    pair, or, for a field removed beside many added of its kind, one line."""
    by_old: dict[str, list[tuple[str, Description]]] = {}
    for old, new, description in moves(diff):
        by_old.setdefault(old, []).append((new, description))
    hints = []
    for old, found in by_old.items():
        if len(found) <= MOST_MOVES:
            hints += [_move_hint(diff, old, new, description) for new, description in found]
            continue
        names = ", ".join(repr(new) for new, _ in found)
        hints.append(
            f"RENAME? or MOVE? {old!r} was removed and {len(found)} fields of its kind "
            f"({_shown(found[0][1])}) added: {names}. If one of them is {old!r} renamed or "
            f"moved, write ops.rename_field({old!r}, ...) or ops.move_field({old!r}, ...) in "
            f"place of its line and of ops.remove_field({old!r})"
        )
    return hints


def _move_hint(diff: SchemaDiff, old: str, new: str, description: Description) -> str:
    """The ``RENAME?`` or ``MOVE?`` comment for a pair `moves` found."""
    same_parent = old.rpartition(".")[0] == new.rpartition(".")[0]
    if same_parent:
        tag, done, op = (
            "RENAME?",
            "renamed",
            f"ops.rename_field({old!r}, {new.rpartition('.')[2]!r})",
        )
    else:
        tag, done, op = "MOVE?", "moved", f"ops.move_field({old!r}, {new!r})"
    if old in diff.removed and new in diff.added:
        how = f"replace their two lines with {op},"
    else:
        lines = [f"the line that adds {new!r}"] if new in diff.added else []
        lines += [f"ops.remove_field({old!r})"] if old in diff.removed else []
        how = f"write {op} in place of {' and '.join(lines)}" if lines else f"write {op}"
        outer = [p for p in diff.removed if _inside(old, p)]
        if outer:
            how += f", before ops.remove_field({outer[0]!r})"
        parent = [p for p in diff.added if _inside(new, p)]
        if parent:
            how += f", after the line that adds {parent[0]!r}"
    return (
        f"{tag} {old!r} was removed and {new!r} added, both {_shown(description)}: "
        f"if {new!r} is {old!r} {done}, {how}"
    )


def conversion(before: Description, after: Description) -> tuple[str, str] | None:
    """How `convert` takes a stored value of `before` to `after`: the target, and
    what it loses or refuses ("" when nothing); None when no conversion does
    it whole (the step's ``upgrade`` must)."""
    target = _target(after)
    stored = _scalar(before)
    if target is None or stored is None:
        return None
    kind, nullable = stored
    to, accepts_none = target
    if (kind, to) not in CONVERTS:
        return None
    lossy = [CONVERTS[(kind, to)]] if CONVERTS[(kind, to)] else []
    if nullable and not accepts_none:
        lossy.append(f"a stored None stays None, which {_shown(after)} refuses")
    return to, "; ".join(lossy)


def _target(description: Description) -> tuple[str, bool] | None:
    """The conversion to a description's values, and whether it accepts None."""
    if not isinstance(description, str):
        return None
    plain = _plain(description)
    if plain in CONVERSION_FOR:
        return CONVERSION_FOR[plain], plain.startswith("Instance(")
    a = _CALL.match(plain)
    if a is not None and a.group(1) == "Instance" and a.group(2).strip() in CONVERSIONS:
        return a.group(2).strip(), True
    return None


def _scalar(description: Description) -> tuple[str, bool] | None:
    """The plain kind a description stores its values as (``Int``, ``Float``, ``Str``,
    ``Bool``, ``datetime``), and whether it holds None; None for any other."""
    if not isinstance(description, str):
        return None
    plain = _plain(description)
    if plain in ("Int", "Float", "Str", "Bool"):
        return plain, False
    a = _CALL.match(plain)
    if a is None:
        return None
    kind, args = a.group(1), a.group(2).strip()
    if kind in ("Range", "FloatRange"):
        return ("Int" if kind == "Range" else "Float"), False
    if kind == "Instance":
        found = {"int": "Int", "float": "Float", "str": "Str", "bool": "Bool"}.get(args)
        found = found or ("datetime" if args == "datetime" else None)
        return (found, True) if found else None
    if kind == "Enum":
        items = _literals(args)
        kinds = {type(ast.literal_eval(i)) for i in items} if items else set()
        names = {int: "Int", float: "Float", str: "Str", bool: "Bool"}
        return (names[kinds.pop()], False) if len(kinds) == 1 and kinds <= names.keys() else None
    return None


#: The conversions `ops.convert` makes whole, by stored kind and target, and
#: what each loses or refuses ("" for nothing). A pair not here is not made
#: by an operation: the step's ``upgrade`` must.
CONVERTS = {
    ("Int", "int"): "",
    ("Float", "float"): "",
    ("Str", "str"): "",
    ("Bool", "bool"): "",
    ("datetime", "datetime"): "",
    ("Bool", "int"): "",
    ("Bool", "float"): "",
    ("Bool", "str"): "",
    ("Int", "str"): "",
    ("Float", "str"): "",
    ("Int", "float"): "rounds integers beyond 2**53 (2**60 + 1 becomes 2**60)",
    ("Float", "int"): "loses fractions (2.5 becomes 2), and a value beyond 64 bits fails",
    ("Int", "bool"): "keeps only zero or not (5 becomes True)",
    ("Float", "bool"): "keeps only zero or not (0.5 becomes True)",
    ("Str", "int"): "fails on text that is no integer ('', '3.7', 'abc'): those documents fail",
    ("Str", "float"): "fails on text that is no number (''): those documents fail",
    ("Str", "bool"): "fails on text other than 'true', 'false', '1', '0': those documents fail",
    ("Str", "datetime"): "takes only atom-db's JSON form of a datetime: text fails",
}


#: What `convert` loses or refuses, by stored kind and target (see `CONVERTS`).
LOSSY = {pair: what for pair, what in CONVERTS.items() if what}


def computed_upgrade(names: list[str]) -> str:
    """The ``upgrade`` function a step needs when added fields have computed defaults."""
    return upgrade_to_write(names, [])


def upgrade_to_write(computed: list[str], by_hand: list[str]) -> str:
    """The ``upgrade`` function a step needs for what no operation does: added
    fields with computed defaults, and changes described in `by_hand`. It
    raises until written, and `check` fails until then."""
    todo = [f"{name}: give each document its own value" for name in computed]
    todo += [f"{what}: convert each stored value" for what in by_hand]
    listed = "".join(f"    # - {' '.join(item.splitlines())}\n" for item in todo)
    why = (
        "    # A computed default (a factory, a _default_ method) makes a new value per\n"
        "    # object, so no one value suits all.\n"
        if computed
        else ""
    )
    names = [*computed, *(what.partition(" changed ")[0].strip("'") for what in by_hand)]
    message = f"write upgrade() for {', '.join(names)}"
    return (
        "\n\ndef upgrade(doc):\n"
        "    # Runs after the operations above, on each document. Write here what no\n"
        "    # operation does:\n"
        f"{listed}{why}"
        f"    raise NotImplementedError({message!r})\n"
    )


# The registry reads a model's embedded models at its version from its class.
describe_fields_with(snapshot)
