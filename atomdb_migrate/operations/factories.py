"""The functions step modules call (`atomdb_migrate.ops` re-exports them).

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

from typing import Any

from .collection import CreateIndex, DropIndex, SetValidator
from .fields import (
    AddField,
    Convert,
    CopyField,
    MoveField,
    RemoveField,
    RenameField,
    SetDefaultWhereMissing,
)
from .paths import MISSING
from .rename_model import RenameModel


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
