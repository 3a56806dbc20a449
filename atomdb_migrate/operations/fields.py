"""Operations on a document's fields: add, set default, remove, copy, move, rename, convert.

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.documents import Document, copy_value
from ..exceptions import ConversionError, IrreversibleOperationError, UnsettablePathError
from .base import Operation, _refuse_overlap
from .conversions import check_value, conversion_expr, convert_value
from .paths import (
    _REFUSED,
    CONVERSIONS,
    FAILED_FIELD,
    MISSING,
    Fast,
    Reference,
    _all,
    _field,
    _replace,
    _set_field,
    _type_is,
    blocked,
    exists_expr,
    exists_query,
    get_path,
    literal,
    references_of,
    set_path,
    settable_expr,
    settable_query,
    setting_expr,
    setting_if_settable,
    split_path,
    unset_path,
    unsetting_expr,
)


class AddField(Operation):
    __op_name__ = "add_field"
    confined = True

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
    confined = True

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

    confined = True

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
    confined = True
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
                    "made": {"$let": {"vars": {"v": value}, "in": conversion_expr(self.to, "$$v")}}
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
