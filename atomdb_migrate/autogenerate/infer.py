"""Inferring a step's operations from the difference between two schema snapshots.

From the snapshot of the model's previous version and the live class
(`atomdb_migrate.schema.snapshots.compare`), ``atomdb-migrate revision
--autogenerate`` infers the operations of the next step: fields added,
removed or converted, inside embedded models too. It marks likely renames
and moves (across embedded models) for the author to confirm instead of
guessing, and leaves to a hand-written ``upgrade()`` a default computed for
each object and a change no operation makes whole (a type changed inside a
container, say). A removed field and a conversion that loses values get a
comment that ``check`` refuses until the author deletes it (`CONFIRM_TAGS`).

The inference gives operation objects, and comments for the author
(`Inferred.entries`); `atomdb_migrate.autogenerate.render` writes them out.

"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from atom.api import DefaultValue
from atomdb.base import Model, resolve_member_types
from atomdb.nosql import NoSQLModel

from ..core.literals import Source
from ..core.storage import MODEL_KEY
from ..exceptions import short_repr
from ..operations.base import Operation
from ..operations.conversions import check_value
from ..operations.fields import Convert, RemoveField, SetDefaultWhereMissing
from ..operations.paths import CONVERSIONS
from ..schema.snapshots import (
    CALL,
    Description,
    SchemaDiff,
    literal_arguments,
    plain,
    same_storage,
    shown,
)
from ..steps.definition import CONFIRM_TAGS as CONFIRM_TAGS
from .render import Call, Comment, Entry, Noted, call, one_line
from .render import lines as written_lines

#: The conversion `ops.convert` makes for a member type, where there is one.
CONVERSION_FOR = {
    "Int": "int",
    "Float": "float",
    "Str": "str",
    "Bool": "bool",
    "Instance(datetime)": "datetime",
}


#: What the author does with a comment of `CONFIRM_TAGS`.
CONFIRM = "delete this comment once that is what you want (`check` fails while it is here)"


@dataclass
class Inferred:
    """What autogenerate infers from a difference."""

    #: What the ``operations`` list holds: operations, some with a comment
    #: after them, and comments for the author (see `render.written`).
    entries: list[Entry] = field(default_factory=list)
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

    @property
    def lines(self) -> list[str]:
        """The entries as the lines of an ``operations`` list (`render.lines`)."""
        return written_lines(self.entries, Source())


def operation(make: Callable[..., Operation], name: str, *arguments: Any) -> Operation | Call:
    """The operation `make` makes of `arguments`; where it refuses them (a field
    name only a hand-written snapshot can hold), the call of ``ops.<name>``
    written as it is, which loading the step then refuses, saying why."""
    try:
        return make(*arguments)
    except ValueError:
        return Call(name, arguments)


def infer_operations(cls: type[NoSQLModel], diff: SchemaDiff) -> Inferred:
    """The operations of a step for a difference, with comments for the author.

    Added fields keep a value already there (`set_default_where_missing`):
    a field can be new to the model and still be stored in some documents.
    A field whose default is computed for each object gets no operation: the
    step's ``upgrade`` must compute it per document; so must a type change
    no conversion makes whole (inside a container, an embedded model's
    class, bytes, a range or an enum narrowed). A removed field, and a
    conversion that loses or refuses values, get a comment the author must
    delete to confirm (`CONFIRM_TAGS`). A field removed while another of the
    same kind is added anywhere in the model is offered as a rename or a
    move.

    """
    out = Inferred()
    for name in diff.added:
        _infer_added(out, cls, name)
    for name, before in diff.removed.items():
        out.entries.append(operation(RemoveField, "remove_field", name))
        deletes = (
            f"DELETES DATA: remove_field({name!r}) deletes every stored {name!r} "
            f"({shown(before)}); {CONFIRM}"
        )
        out.entries.append(Comment(deletes))
        out.hints.append(deletes)
    for name, (before, after) in diff.changed.items():
        _infer_changed(out, name, before, after)
    for hint in _move_hints(diff):
        out.entries.append(Comment(hint))
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
    # Names and types in hints are the model's own text: keep each hint one line.
    out.hints = [one_line(hint) for hint in out.hints]
    return out


def _infer_added(out: Inferred, cls: type, name: str) -> None:
    value, note, computed = _default(cls, name)
    if computed:
        out.computed.append(name)
        out.entries.append(
            Comment(f"{name!r}: its default is computed for each object: see upgrade()")
        )
        return
    try:
        Source().literal(value)
    except ValueError:
        value, note = None, f"its default {_shown_value(value)} cannot be written: set one"
    op = operation(SetDefaultWhereMissing, "set_default_where_missing", name, value)
    out.entries.append(Noted(op, note) if note else op)
    if note:
        out.hints.append(f"{name!r}: {note}")


def _infer_changed(out: Inferred, name: str, before: Description, after: Description) -> None:
    found = conversion(before, after)
    if found is None:
        what = f"{name!r} changed from {shown(before)} to {shown(after)}"
        out.by_hand.append(what)
        out.entries.append(
            Comment(f"{what}: no operation converts it; write the change in upgrade()")
        )
        return
    to, lossy = found
    out.entries.append(Noted(operation(Convert, "convert", name, to), f"was {shown(before)}"))
    if lossy:
        line = f"LOSSY: {name!r} {lossy}; check the stored values first, then {CONFIRM}"
        out.entries.append(Comment(line))
        out.hints.append(line)


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
    """The value an added field gets, a note when it must be checked (the text of
    a comment), and whether it is computed for each object."""
    found = _member_at(cls, path)
    if found is None:
        return None, "its default could not be found: set one", False
    kind, name = found
    if _is_computed(kind, name):
        return None, "", True
    try:
        values = [getattr(kind.__new__(kind), name) for _ in range(2)]  # type: ignore[call-overload]
    except Exception as exc:
        return None, f"its default could not be read ({type(exc).__name__}): set one", False
    value = values[0]
    if isinstance(value, (datetime, date)) or not _same(values[0], values[1]):
        return None, "", True
    if isinstance(value, Model):
        return None, "its default is an object: set one, as it is stored", False
    try:
        check_value(value, name)
    except ValueError:
        return None, f"its default {_shown_value(value)} is not stored as it is: set one", False
    return value, "", False


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) or (a != a and b != b)
    except Exception:
        return False


def _shown_value(value: Any) -> str:
    """A value as a comment shows it: one line."""
    return " ".join(short_repr(value, 60).split())


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
            f"({shown(found[0][1])}) added: {names}. If one of them is {old!r} renamed or "
            f"moved, {_delete_comment(old)}write ops.rename_field({old!r}, ...) or "
            f"ops.move_field({old!r}, ...) in place of its line and of "
            f"{call('remove_field', (old,))}"
        )
    return hints


def _delete_comment(old: str) -> str:
    """The start of what a ``RENAME?`` or ``MOVE?`` hint asks: the ``DELETES DATA``
    comment of the ``remove_field`` it replaces goes too (`check` fails while it
    is there); the operation to write stays last, to copy."""
    return f"delete the comment DELETES DATA: remove_field({old!r}) and "


def _move_hint(diff: SchemaDiff, old: str, new: str, description: Description) -> str:
    """The ``RENAME?`` or ``MOVE?`` comment for a pair `moves` found."""
    same_parent = old.rpartition(".")[0] == new.rpartition(".")[0]
    if same_parent:
        tag, done, op = "RENAME?", "renamed", call("rename_field", (old, new.rpartition(".")[2]))
    else:
        tag, done, op = "MOVE?", "moved", call("move_field", (old, new))
    if old in diff.removed and new in diff.added:
        how = f"replace their two lines with {op}"
    else:
        places = [f"the line that adds {new!r}"] if new in diff.added else []
        places += [call("remove_field", (old,))] if old in diff.removed else []
        how = f"write {op} in place of {' and '.join(places)}" if places else f"write {op}"
        outer = [p for p in diff.removed if _inside(old, p)]
        if outer:
            how += f", before {call('remove_field', (outer[0],))}"
        parent = [p for p in diff.added if _inside(new, p)]
        if parent:
            how += f", after the line that adds {parent[0]!r}"
    if old in diff.removed:
        how = _delete_comment(old) + how
    return (
        f"{tag} {old!r} was removed and {new!r} added, both {shown(description)}: "
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
        lossy.append(f"a stored None stays None, which {shown(after)} refuses")
    return to, "; ".join(lossy)


def _target(description: Description) -> tuple[str, bool] | None:
    """The conversion to a description's values, and whether it accepts None."""
    if not isinstance(description, str):
        return None
    kind = plain(description)
    if kind in CONVERSION_FOR:
        return CONVERSION_FOR[kind], kind.startswith("Instance(")
    a = CALL.match(kind)
    if a is not None and a.group(1) == "Instance" and a.group(2).strip() in CONVERSIONS:
        return a.group(2).strip(), True
    return None


def _scalar(description: Description) -> tuple[str, bool] | None:
    """The plain kind a description stores its values as (``Int``, ``Float``, ``Str``,
    ``Bool``, ``datetime``), and whether it holds None; None for any other."""
    if not isinstance(description, str):
        return None
    stored = plain(description)
    if stored in ("Int", "Float", "Str", "Bool"):
        return stored, False
    a = CALL.match(stored)
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
        items = literal_arguments(args)
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
