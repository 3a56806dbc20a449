"""The operation base class, and helpers its subclasses share.

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..core.documents import Document
from ..exceptions import (
    IrreversibleOperationError,
)
from .paths import NO_EMBEDDED, Embedded, Fast


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

    #: Whether `apply` changes, and reads, nothing but the top-level fields
    #: `touches` names: then a read copies only those fields for it (see
    #: `StepOperations.confined_fields`). False for an operation that may
    #: reach anywhere in the document (``rename_model`` rewrites references
    #: nested at any depth), and for any operation that does not say.
    confined: ClassVar[bool] = False

    #: Where the operation learns the embedded models on its paths (set by
    #: `StepOperations`, for the step's version; see `bound`).
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
