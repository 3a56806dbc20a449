"""Renaming a model: the documents' ``__model__`` and the references to it.

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

from typing import Any

from ..core.documents import Document
from ..exceptions import IrreversibleOperationError
from .base import Operation
from .paths import MODEL_KEY, Fast, _replace, _set_field, literal


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
