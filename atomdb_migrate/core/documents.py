"""The document the steps are given: copied as they touch it, and watched.

Steps change the document they are given, so they must never be given the
caller's: a document restored by the app, or a batch the runner read. A
full deep copy of every document costs more than the steps themselves, so a
`StepDocument` starts as a shallow copy, and copies an embedded document or
a list the first time a step reaches it through its top-level field.

It also records which top-level fields the steps looked at (read, tested
for, changed or removed). A conditional write then needs to match only
those fields as they were read: the upgraded document depends on nothing
else. A step that looks at the whole document (iterates it, compares it,
copies it, or returns a new dict) makes the write match the whole document.

Only the documented dict methods are watched. Code that goes around them
(``dict.get(doc, key)``, ``dict.items(doc)``) is not seen: steps should use
the document's own methods, as any normal code does.

"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .caches import resettable
from .storage import JSON_TYPE_KEY

#: A document as atom-db stores it.
Document = dict[str, Any]

_MISSING: Any = object()


def copy_value(value: Any) -> Any:
    """A deep copy of a value read from MongoDB: its dicts and lists are copied.

    Documents read from MongoDB hold dicts (or, with another
    ``document_class``, other mappings such as SON), lists and immutable
    values (strings, numbers, ObjectId, datetime, bytes), so this is a deep
    copy, several times faster than `copy.deepcopy`. Mappings become dicts,
    in the same order.

    """
    kind = type(value)
    kinds = _CONTAINER_KINDS
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        return {
            k: copy_value(v) if kinds.get(type(v), True) and _is_container(v) else v
            for k, v in value.items()
        }
    if kind is list:
        return [
            copy_value(v) if kinds.get(type(v), True) and _is_container(v) else v for v in value
        ]
    return value


#: Whether values of a type are containers `copy_value` copies, decided once
#: per type: the ABC check of `Mapping` costs more than the copy of a small
#: document when it runs for every scalar (an int, an ObjectId, a datetime).
_CONTAINER_KINDS: dict[type, bool] = {dict: True, list: True, str: False}

resettable("atomdb_migrate.core.documents.CONTAINER_KINDS", _CONTAINER_KINDS.clear)


def _is_container(value: Any) -> bool:
    kind = type(value)
    known = _CONTAINER_KINDS.get(kind)
    if known is None:
        known = _CONTAINER_KINDS[kind] = kind is dict or kind is list or _is_mapping_kind(kind)
    return known


#: Whether `copy_value` copies a value: a dict, a list or another mapping.
is_container = _is_container


def _is_mapping_kind(kind: type) -> bool:
    """Whether a type other than dict, list and str is a mapping (SON, a ``Mapping``)."""
    return kind is not str and issubclass(kind, Mapping)


def copy_document(doc: Mapping[str, Any]) -> Document:
    """A deep copy of a document (see `copy_value`)."""
    out: Document = dict(doc.items()) if type(doc) is not dict else doc.copy()
    kinds = _CONTAINER_KINDS
    for key, value in out.items():
        # One dict lookup for a scalar of a type seen before, no call.
        if kinds.get(type(value), True) and _is_container(value):
            out[key] = copy_value(value)
    return out


def _holds_flattened(value: Any) -> bool:
    """Whether a dict or list holds, at any depth, a dict with a ``__py__`` key.

    A walk with a stack of the containers still to see, not a call per
    container: this runs on every nested value of every legacy read.

    """
    kinds = _CONTAINER_KINDS
    todo = [value]
    while todo:
        found = todo.pop()
        if type(found) is list:
            items: Iterable[Any] = found
        elif JSON_TYPE_KEY in found:
            return True
        else:
            items = found.values()
        for item in items:
            # One dict lookup for a scalar of a type seen before, no call.
            if kinds.get(type(item), True) and _is_container(item):
                todo.append(item)
    return False


def own_flattened(
    doc: Document, source: Mapping[str, Any], keys: Iterable[str] | None = None
) -> None:
    """Copy into `doc` the nested values it shares with `source` that atom-db's restore changes.

    atom-db's ``unflatten`` pops the ``__py__`` key of a flattened value (a
    set, a coerced type) from the state it restores: a read that shares an
    unreached nested value with the stored document must give restore a
    copy of any value holding one, or the stored document loses the key.
    `keys`, where given, are the only fields the restore hands to anything
    but a plain assignment (see ``model.reads.restored_fields``); None: any.

    """
    kinds = _CONTAINER_KINDS
    get = doc.get
    for key in doc if keys is None else keys:
        value = get(key)  # None (a scalar) where `doc` has no such key
        if (
            kinds.get(type(value), True)
            and _is_container(value)
            and value is source.get(key)
            and _holds_flattened(value)
        ):
            doc[key] = copy_value(value)


class StepDocument(dict):  # type: ignore[type-arg]
    """A document handed to steps: a lazy deep copy that records what they touch.

    Parameters
    ----------
    source: Mapping
        The stored document. It is never changed.

    """

    __slots__ = ("_copied", "touched", "whole")

    #: The top-level fields the steps read, tested for, set or removed.
    touched: set[str]

    #: Whether the steps looked at the whole document.
    whole: bool

    def __init__(self, source: Mapping[str, Any]) -> None:
        dict.__init__(self, source)
        self.touched = set()
        self.whole = False
        #: The fields whose value is the steps' own (copied, or set by them).
        self._copied: set[str] = set()

    # ------------------------------------------------------------------
    # One field at a time
    # ------------------------------------------------------------------
    def _own(self, key: Any) -> None:
        """Record a look at `key`, and copy its value before a step can change it."""
        self.touched.add(key)
        if key not in self._copied:
            self._copied.add(key)
            value = dict.get(self, key, _MISSING)
            if value is not _MISSING and _is_container(value):
                dict.__setitem__(self, key, copy_value(value))

    def __getitem__(self, key: Any) -> Any:
        self._own(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._own(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self.touched.add(key)  # type: ignore[arg-type]
        return dict.__contains__(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.touched.add(key)
        self._copied.add(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.touched.add(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._own(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._own(key)
        self._copied.add(key)
        return dict.setdefault(self, key, default)

    def update(self, other: Any = (), /, **more: Any) -> None:
        pairs = list(other.items() if isinstance(other, Mapping) else other)
        pairs += more.items()
        for key, value in pairs:
            self[key] = value

    # ------------------------------------------------------------------
    # The whole document
    # ------------------------------------------------------------------
    def look_at_everything(self) -> None:
        """Record a look at the whole document, and copy all of it."""
        if not self.whole:
            self.whole = True
            for key in list(dict.keys(self)):
                self._own(key)

    def __iter__(self) -> Iterator[Any]:
        self.look_at_everything()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self.look_at_everything()
        return dict.keys(self)

    def values(self) -> Any:
        self.look_at_everything()
        return dict.values(self)

    def items(self) -> Any:
        self.look_at_everything()
        return dict.items(self)

    def __len__(self) -> int:
        self.look_at_everything()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        self.look_at_everything()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self.look_at_everything()
        return dict.__ne__(self, other)

    __hash__ = None

    def __repr__(self) -> str:
        self.look_at_everything()
        return dict.__repr__(self)

    def __reversed__(self) -> Iterator[Any]:
        self.look_at_everything()
        return dict.__reversed__(self)

    def copy(self) -> Document:
        self.look_at_everything()
        return dict.copy(self)

    def popitem(self) -> tuple[Any, Any]:
        self.look_at_everything()
        return dict.popitem(self)

    def clear(self) -> None:
        self.look_at_everything()
        dict.clear(self)

    def __or__(self, other: Any) -> Any:
        self.look_at_everything()
        return dict.__or__(self, other)

    def __ror__(self, other: Any) -> Any:
        self.look_at_everything()
        return dict.__ror__(self, other)

    def __ior__(self, other: Any) -> StepDocument:
        self.update(other)
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        self.look_at_everything()
        return (dict, (dict.copy(self),))

    # ------------------------------------------------------------------
    # For the caller, after the steps
    # ------------------------------------------------------------------
    def result(self) -> Document:
        """The document as a plain dict (values the steps never reached are shared)."""
        # Not dict.copy(self): for a subclass it goes through keys().
        return dict(dict.items(self))

    def fields(self) -> Iterable[str] | None:
        """The top-level fields the steps looked at; None when they looked at all of them."""
        return None if self.whole else self.touched


class LazyCopy(dict):  # type: ignore[type-arg]
    """A copy of a stored document whose nested dicts and lists are copied when reached.

    For steps on a read that writes nothing back: unlike `StepDocument` it
    records nothing, so the methods that only set, remove or test for a
    field (``doc[k] = v``, ``del doc[k]``, ``k in doc``) are dict's own. A
    nested value is copied the first time a method hands it out (``doc[k]``,
    ``get``, ``pop``, ``setdefault``); a method handing out the whole
    document (``items``, ``values``, iterating, ``copy``, ``dict(doc)``,
    ``{**doc}``, pickling) copies every nested value first. The stored
    document is never changed.

    Make one with `LazyCopy.of`; `result` gives the plain dict.

    """

    __slots__ = ("_source",)

    #: The stored document; None once every nested value is the copy's own.
    _source: Mapping[str, Any] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A step may make one itself (``type(doc)(...)``, ``doc.fromkeys``):
        # it shares nothing with a stored document.
        dict.__init__(self, *args, **kwargs)
        self._source = None

    @classmethod
    def of(cls, source: Mapping[str, Any]) -> LazyCopy:
        """A lazy copy of `source`.

        Made without calling ``__init__`` (a Python frame): ``dict.update``
        on the new, empty copy takes the C path, half the time of ``cls(source)``
        as measured on a document of ten fields.

        """
        made: LazyCopy = dict.__new__(cls)
        dict.update(made, source)
        made._source = source
        return made

    def _reached(self, key: Any, value: Any) -> Any:
        """`value`, stored under `key`, as the copy's own: copied if it is the source's."""
        source = self._source
        if source is not None and is_container(value) and value is source.get(key):
            value = copy_value(value)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        if _CONTAINER_KINDS.get(type(value)) is False:
            return value  # a scalar of a known type: the common case, one lookup
        return self._reached(key, value)

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        if _CONTAINER_KINDS.get(type(value)) is False:
            return value
        return self._reached(key, value)

    def pop(self, key: Any, *default: Any) -> Any:
        if dict.__contains__(self, key):
            self[key]  # copied before it leaves
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        dict.__setitem__(self, key, default)
        return default

    def own_all(self) -> None:
        """Copy every nested value still shared with the source."""
        if self._source is not None:
            for key, value in list(dict.items(self)):
                self._reached(key, value)
            self._source = None

    def __iter__(self) -> Iterator[Any]:
        # Overridden so that dict(doc), {**doc} and dict.update go through
        # keys() and __getitem__ instead of reading the entries directly.
        return dict.__iter__(self)

    def values(self) -> Any:
        self.own_all()
        return dict.values(self)

    def items(self) -> Any:
        self.own_all()
        return dict.items(self)

    def copy(self) -> Document:
        self.own_all()
        return dict(dict.items(self))

    def popitem(self) -> tuple[Any, Any]:
        self.own_all()
        return dict.popitem(self)

    def __or__(self, other: Any) -> Any:
        self.own_all()
        return dict.__or__(self, other)

    def __ror__(self, other: Any) -> Any:
        self.own_all()
        return dict.__ror__(self, other)

    def __reduce_ex__(self, protocol: Any) -> Any:
        self.own_all()
        return (dict, (dict(dict.items(self)),))

    def result(self) -> Document:
        """The document as a plain dict (values no step reached are the source's)."""
        return dict(dict.items(self))
