"""Schema snapshots: a model's stored fields, recorded in its step modules.

Each step module written by ``atomdb-migrate revision`` ends with the model's
stored fields after the step, by name, with their member types::

    schema = {"title": "Str", "views": "Int", "author": "Instance(blog.User)"}

From the newest snapshot and the live model class:

- ``atomdb-migrate revision --autogenerate`` infers the operations of the
  next step (fields added and removed, types changed), and marks likely
  renames for the author to confirm instead of guessing;
- ``atomdb-migrate check`` fails when the fields differ from the snapshot
  while the version is the same: a change made without a migration.

"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from atom.api import Member

from .exceptions import short_repr
from .literals import Source
from .ops import check_value
from .versions import Step

if TYPE_CHECKING:
    from .model import VersionedModel

#: Fields atom-db stores for every model: not part of a snapshot.
IMPLICIT = frozenset(("_id", "__model__", "__ref__", "__version__"))

#: The conversion `ops.convert` makes for a member type, where there is one.
CONVERSION_FOR = {
    "Int": "int",
    "Float": "float",
    "Str": "str",
    "Bool": "bool",
    "Instance(datetime)": "datetime",
    "Typed(datetime)": "datetime",
}


def _type_name(kind: Any) -> str:
    model = getattr(kind, "__model__", None)
    if isinstance(model, str):
        return model
    return getattr(kind, "__name__", repr(kind))


def describe_member(member: Member[Any, Any]) -> str:
    """A member's type as a snapshot records it: ``Str``, ``List(Int)``, ``Instance(datetime)``."""
    name = type(member).__name__
    if name in ("Typed", "Instance", "ForwardTyped", "ForwardInstance", "Coerced"):
        from atomdb.base import resolve_member_types

        try:
            kinds = resolve_member_types(member)
        except Exception:  # an unresolvable forward reference
            kinds = None
        base = name.replace("Forward", "")
        if kinds:
            return f"{base}({', '.join(_type_name(k) for k in kinds)})"
        return base
    if name in ("List", "ContainerList", "Set"):
        item = getattr(member, "item", None)
        return f"{name}({describe_member(item)})" if item is not None else name
    if name == "Dict":
        key, value = getattr(member, "key", None), getattr(member, "value", None)
        if key is not None or value is not None:
            k = describe_member(key) if key is not None else "Value"
            v = describe_member(value) if value is not None else "Value"
            return f"Dict({k}, {v})"
        return name
    if name == "Enum":
        items = getattr(member, "items", ())
        return f"Enum({', '.join(repr(i) for i in items)})"
    return name


def snapshot(cls: type[VersionedModel]) -> dict[str, str]:
    """The model's stored fields and their member types, by name."""
    members = cls.members()
    return {
        name: describe_member(members[name])
        for name in sorted(cls.__fields__)
        if name not in IMPLICIT
    }


def newest_snapshot(steps: list[Step]) -> Step | None:
    """The step with the newest snapshot, of a model's steps."""
    recorded = [s for s in steps if s.schema is not None]
    return max(recorded, key=lambda s: s.to_key) if recorded else None


@dataclass
class SchemaDiff:
    """How a model's fields differ from a snapshot."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    #: Fields whose type changed: (old type, new type).
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"added {n} ({t})" for n, t in self.added.items()]
        parts += [f"removed {n} ({t})" for n, t in self.removed.items()]
        parts += [f"{n} changed from {a} to {b}" for n, (a, b) in self.changed.items()]
        return "; ".join(parts)


def compare(old: dict[str, str], new: dict[str, str]) -> SchemaDiff:
    """The difference from a snapshot `old` to the fields `new`."""
    return SchemaDiff(
        added={n: t for n, t in new.items() if n not in old},
        removed={n: t for n, t in old.items() if n not in new},
        changed={n: (old[n], t) for n, t in new.items() if n in old and old[n] != t},
    )


def _default(cls: type[VersionedModel], name: str) -> tuple[Any, str]:
    """The value an added field gets, and a comment when it must be checked."""
    try:
        value = getattr(cls.__new__(cls), name)
    except Exception as exc:
        return None, f"  # its default could not be read ({type(exc).__name__}): set one"
    if isinstance(value, datetime):
        return None, "  # its default is computed (a datetime): set one"
    try:
        check_value(value, name)
    except ValueError:
        return None, f"  # its default {_shown(value)} is not stored as it is: set one"
    return value, ""


def _shown(value: Any) -> str:
    """A value as a comment shows it: one line."""
    return " ".join(short_repr(value, 60).split())


def infer_operations(
    cls: type[VersionedModel], diff: SchemaDiff, source: Source | None = None
) -> list[str]:
    """The lines of an ``operations`` list for a difference, with comments for the author.

    Values are written as Python expressions; `source` collects the imports
    they need.

    """
    source = source or Source()
    lines: list[str] = []
    for name in diff.added:
        value, note = _default(cls, name)
        try:
            text = source.literal(value)
        except ValueError:
            text, note = "None", f"  # its default {_shown(value)} cannot be written: set one"
        lines.append(f"ops.add_field({name!r}, {text}),{note}")
    for name in diff.removed:
        lines.append(f"ops.remove_field({name!r}),")
    for name, (before, after) in diff.changed.items():
        to = CONVERSION_FOR.get(after)
        if to is not None:
            lines.append(f"ops.convert({name!r}, {to!r}),  # was {before}")
        else:
            lines.append(
                f"# {name!r} changed from {before} to {after}: no operation converts "
                "it; write the change in upgrade()"
            )
    for old, before in diff.removed.items():
        for new, after in diff.added.items():
            if before == after:
                lines.append(
                    f"# RENAME? {old!r} was removed and {new!r} added, both {after}: "
                    f"if {new!r} is {old!r} renamed, replace their two lines with "
                    f"ops.rename_field({old!r}, {new!r}),"
                )
    # Names and types in comments are the model's own text: keep each line one line.
    return [" ".join(line.splitlines()) for line in lines]
