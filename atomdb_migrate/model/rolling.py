"""Saves by code one version behind: an object read from a newer document writes
through the steps.

A model with ``__on_newer__ = "downgrade"`` reads a document stored at a
version newer than its code back through the steps' downgrades. Saving such
an object does not replace the document (that would write the older shape
over the newer one); it writes only what the code changed, mapped forward:

1. at read, the document as stored and as downgraded (the old code's view)
   are remembered for the object (`remember`), and the object's state once
   restored (`settle`);
2. at save, what the object's state (what atom-db's save would write)
   changed since then is made to the view: the edited view. A value the
   members changed at restore (an int a ``Float`` made a float, a field the
   document lacks given its default, a value atom-db failed to restore and
   skipped) is not a change the code made, and is not written;
3. both the view and the edited view go forward through the steps, from the
   code's version to the stored one; after each step, every path the code
   changed must come back through the downgrades of the steps so far as it
   was changed (else a step loses the change, and the save is refused with
   `NewerDocumentError`, naming the field and the step); a Python step lets
   through only changes to fields it declares it leaves alone, or carries
   (its ``changes``: a list, or a mapping ``{before: after}``);
4. what differs between the two at the stored version is what the old code
   changed, in the newer shape: it is applied to the stored document as
   read, as a conditional ``$set``/``$unset`` of the paths it changes
   (`path_update`), matching the ``_id``, the stored version and the
   top-level fields they are in, as read;
5. where that matches nothing (another writer changed one of those fields,
   or upgraded the document), the document is read again: if every path
   the code changed still reads as the object read it, the changes are
   made to it instead; else the save fails with `ConflictError`, naming
   those paths. So a concurrent change by newer code to another field
   survives, and one to the same field is a conflict.

An object read at the code's version, or from an older document, while the
steps of a newer version are shipped is remembered too: when newer code
has saved the document since, its save goes through step 5.

The stored version is never lowered: the write keeps the version read.

"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..core.bson_rules import same_value
from ..core.documents import Document, copy_document, copy_value
from ..core.storage import ID_KEY, REF_KEY, VERSION_KEY
from ..core.writes import guarded_write, needs_expression
from ..driver.mongo import changed_since_read, exact_filters
from ..exceptions import ConflictError, MigrateError, NewerDocumentError
from ..operations.paths import MISSING, get_path
from ..steps.registry import MigrationRegistry
from ..steps.versions import Step, apply_chain, stored_version
from .saves import duplicate_id

#: How many times a mapped save re-reads a document that changed elsewhere meanwhile.
ROLLING_ATTEMPTS = 5

#: The keys a save never maps: the identity, the version, atom-db's reference key.
_OWN_KEYS = (ID_KEY, VERSION_KEY, REF_KEY)

#: A change: a path, and the value written there (`MISSING`: removed).
Change = tuple[tuple[str, ...], Any]


@dataclass
class ReadView:
    """What code one version behind read of a document."""

    #: The document as stored when read.
    stored: Document
    #: The document as the code read it (downgraded, when `newer`).
    view: Document
    #: Whether the stored document was newer than the code.
    newer: bool = True
    #: Whether `view` is `stored` as read (False once `stored` was read again
    #: after the view: then the fields a save changes are compared first).
    exact: bool = True
    #: The object's state once restored from `view` (None until `settle`: then
    #: the view stands for it): a save writes what changed since.
    state: Document | None = None


#: The views of the objects restored by models that read newer documents.
_views: weakref.WeakKeyDictionary[Any, ReadView] = weakref.WeakKeyDictionary()
#: The views' own dictionary: empty when no object has a view (a read then has
#: none of its own to check: looked at by `VersionedModel.__restorestate__`
#: without a call, on every read).
KEPT: dict[Any, Any] = _views.data  # type: ignore[attr-defined]  # CPython: its dict of weakrefs

#: The lock of each object being saved, or saved before, with its event loop
#: (see `save_object`).
_locks: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def remember(
    obj: Any,
    stored: Document,
    view: Document,
    *,
    newer: bool = True,
    exact: bool = True,
    state: Mapping[str, Any] | None = None,
) -> None:
    """Keep, for `obj`, the document it was restored from, the view it read, and its
    state then (`state`; None: taken by `settle` once the object is restored)."""
    kept = None if state is None else copy_document(state)
    _views[obj] = ReadView(copy_document(stored), copy_document(view), newer, exact, kept)


def settle(obj: Any, state: Mapping[str, Any] | None = None) -> None:
    """Keep `obj`'s state as restored (or saved: `state`), where its view is kept:
    what a save compares the object with (the members may have changed values
    the view holds)."""
    read = _views.get(obj)
    if read is not None and read.state is None:
        read.state = copy_document(obj.__getstate__() if state is None else state)


def note_read(obj: Any, stored: Document, view: Document) -> None:
    """Remember what `obj` was restored from, where a save may need it.

    Only for a model with ``__on_newer__ = "downgrade"``: an object read
    from a newer document always (its save writes through the steps); one
    read at the code's version only while the steps of a newer version are
    shipped (a rolling deploy), in case newer code saves the document before
    this object is saved (so is one read from an older document, upgraded
    on read). Otherwise nothing is kept, and nothing copied.

    """
    cls = type(obj)
    if cls.__on_newer__ != "downgrade" or stored.get(ID_KEY) is None:
        _views.pop(obj, None)
        return
    head = cls.__parsed_version__
    graph = MigrationRegistry.instance().graph(cls)
    kind = graph.plan(stored.get(VERSION_KEY), head, head=head).kind
    if kind == "newer":
        remember(obj, stored, view)
    elif kind in ("current", "migrate") and (graph.latest or head) > head:
        remember(obj, stored, view, newer=False, exact=kind == "current")
    else:
        _views.pop(obj, None)


def forget(obj: Any) -> None:
    """Forget `obj`'s view (restored from a document its code's version or older)."""
    _views.pop(obj, None)


def view_of(obj: Any) -> ReadView | None:
    """The view `obj` was restored from, if it was restored from a newer document."""
    return _views.get(obj)


class Unmapped(Exception):
    """A change a step cannot carry forward: its field, the step, and why."""

    def __init__(self, field: str, step: Step, reason: str) -> None:
        super().__init__(reason)
        self.field, self.step, self.reason = field, step, reason


# ----------------------------------------------------------------------
# What changed
# ----------------------------------------------------------------------
def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """The paths where `after` differs from `before`, down through documents (not lists).

    The identity and the version of the document are left out.

    """
    found: list[Change] = []
    for key in dict.fromkeys([*before, *after]):
        if key not in _OWN_KEYS:
            _diff((key,), before.get(key, MISSING), after.get(key, MISSING), found)
    return found


def _diff(path: tuple[str, ...], old: Any, new: Any, found: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            if key != REF_KEY:  # atom-db's reference key, anew at each save
                _diff((*path, key), old.get(key, MISSING), new.get(key, MISSING), found)
    elif old is MISSING or new is MISSING:
        if old is not new:
            found.append((path, new))
    elif not same_value(old, new):
        found.append((path, new))


def edited(
    view: Document, state: Mapping[str, Any], restored: Mapping[str, Any] | None = None
) -> Document:
    """The view with what the object changed made to it: the fields the code does
    not know (not in `state`) are kept as read.

    `restored` is the object's state once restored from `view`: only the
    paths where `state` differs from it are changed (where such a path runs
    into a value of the view that is not a document, its whole top-level
    field is taken from `state`). None: all of `state` is laid over the view.

    """
    if restored is not None:
        found = changes(restored, state)
        try:
            return apply_changes(view, found)
        except ValueError:
            keys = {path[0] for path, _ in found}
            found = [((k,), copy_value(state[k]) if k in state else MISSING) for k in keys]
            return apply_changes(view, found)
    doc = copy_document(view)
    for key, value in state.items():
        if key not in _OWN_KEYS:
            doc[key] = copy_value(value)
    return doc


def apply_changes(doc: Document, found: Sequence[Change]) -> Document:
    """A copy of `doc` with each change made.

    Raises
    ------
    ValueError
        If a change's path runs into a value that is not a document.

    """
    result = copy_document(doc)
    for path, value in found:
        parent: Any = result
        for i, part in enumerate(path[:-1]):
            inner = parent.get(part, MISSING)
            if inner is MISSING or inner is None:
                if value is MISSING:
                    break
                inner = parent[part] = {}
            if not isinstance(inner, dict):
                raise ValueError(".".join(path[: i + 1]))
            parent = inner
        else:
            if value is MISSING:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = copy_value(value)
    return result


# ----------------------------------------------------------------------
# Forward through the steps
# ----------------------------------------------------------------------
def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shortest = min(len(a), len(b))
    return a[:shortest] == b[:shortest]


def runs_function(step: Step) -> bool:
    """Whether the step runs a Python function (alone, or after its operations)."""
    return step.operations is None or not step.server_side


def _check_function(step: Step, found: Sequence[Change]) -> None:
    """A Python step lets through only changes to the fields it declares it leaves alone."""
    if not runs_function(step):
        return
    declared = step.changes
    carried = [tuple(before.split(".")) for before, _ in step.maps]
    for path, _ in found:
        if any(path[: len(c)] == c for c in carried):
            continue  # the step declares where it carries the field: run it
        if declared is None:
            raise Unmapped(
                _dotted(path),
                step,
                "a Python step computes the document; declare the fields it changes "
                "(changes = [...]) to let changes to the others through, or where it "
                "carries a field (changes = {before: after})",
            )
        for change in declared:
            if _related(path, tuple(change.split("."))):
                raise Unmapped(
                    _dotted(path), step, f"the Python step declares it changes {change!r}"
                )


async def _up(step: Step, doc: Document) -> Document:
    result, _ = await apply_chain([step], doc, track=False)
    return result


async def _down(step: Step, doc: Document) -> Document:
    result, _ = await apply_chain([step], doc, downgrade=True, track=False)
    return result


async def _through_step(
    step: Step, view: Document, edit: Document
) -> tuple[Document, Document, list[Change]]:
    """The view and the edited view after `step`, and the changes it was given."""
    found = changes(view, edit)
    _check_function(step, found)
    try:
        return await _up(step, view), await _up(step, edit), found
    except MigrateError as exc:
        first = _dotted(found[0][0])
        raise Unmapped(first, step, f"the step fails on the changed document: {exc}") from None


async def _check_back(
    steps: Sequence[Step], edit: Document, found: Sequence[Change], entering: Sequence[Change]
) -> None:
    """Refuse where a change the code made does not come back through the steps'
    downgrades (`edit`: the edited view after the last of `steps`; `entering`: the
    changes as the last step was given them, to name its operation)."""
    back = edit
    for step in steps:
        if step.downgrade_fn is None:
            why = step.downgrade_reason or "it has no downgrade"
            raise Unmapped(_dotted(found[0][0]), step, f"the step {why}")
    try:
        for step in reversed(steps):
            back = await _down(step, back)
    except MigrateError as exc:
        raise Unmapped(_dotted(found[0][0]), steps[-1], f"no way back: {exc}") from None
    for path, value in found:
        if not same_value(get_path(back, path), value):
            raise Unmapped(_dotted(path), steps[-1], _lost(steps[-1], entering))


def _lost(step: Step, entering: Sequence[Change]) -> str:
    """Why `step` loses a change (its operation on a changed path, if it has one)."""
    operations = step.operations.operations if step.operations is not None else ()
    for op in operations:
        touched = [getattr(op, n, None) for n in ("parts", "src_parts", "dst_parts")]
        if any(t is not None and _related(p, tuple(t)) for t in touched for p, _ in entering):
            return (
                f"{op!r} does not carry the change forward: through the downgrades it "
                "comes back as another value (a field the newer version removed or sets "
                "itself, or a conversion that cannot be inverted for this value)"
            )
    return (
        "the step does not carry the change forward: through the downgrades it "
        "comes back as another value"
    )


async def forward(steps: Sequence[Step], view: Document, edit: Document) -> list[Change]:
    """The changes from `view` to `edit` (old shape), in the shape after `steps`.

    After each step, every change the code made must come back as it was
    made through the downgrades of the steps so far; what it carried to
    other paths on the way (a copy) may be lost after.

    Raises
    ------
    Unmapped
        Where a step cannot carry a change forward.

    """
    made = changes(view, edit)
    for i, step in enumerate(steps):
        if not changes(view, edit):
            return []
        view, edit, entering = await _through_step(step, view, edit)
        await _check_back(steps[: i + 1], edit, made, entering)
    return changes(view, edit)


def forward_steps(cls: Any, stored: Any) -> tuple[Step, ...]:
    """The steps from the model's version up to the stored one (a newer version)."""
    graph = MigrationRegistry.instance().graph(cls)
    return tuple(graph.plan_upgrade(cls.__parsed_version__, stored_version(stored)))


# ----------------------------------------------------------------------
# The save
# ----------------------------------------------------------------------
def _refuse(cls: Any, stored: Document, exc: Unmapped) -> NewerDocumentError:
    return NewerDocumentError(
        cls.__model__,
        stored.get(ID_KEY),
        str(stored_version(stored.get(VERSION_KEY))),
        cls.__version__,
        action="save over it",
        field=exc.field,
        step=str(exc.step),
        reason=exc.reason,
    )


def _settable(stored: Document, path: tuple[str, ...]) -> bool:
    """Whether ``$set`` can write at `path`: each value on the way, up to the first
    missing one, is a document."""
    current: Any = stored
    for part in path[:-1]:
        current = current.get(part, MISSING)
        if current is MISSING:
            return True
        if not isinstance(current, dict):
            return False
    return True


def path_update(stored: Document, found: Sequence[Change]) -> dict[str, Any] | None:
    """The update that makes each change at its own path (``$set`` of ``"m.y"``, not
    of all of ``m``), or None where a path cannot be written so (a name with a
    ``.`` or a leading ``$``; a parent that is stored, and not as a document).

    The filter matches a top-level field whole, but the numbers inside it by
    value: a change another writer made beside the save's, inside the same
    field (``m.x`` from ``1`` to ``1.0``), is not seen, and writing the whole
    field as read would undo it.

    """
    sets: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    for path, value in found:
        if any(needs_expression(part) for part in path) or not _settable(stored, path):
            return None
        if value is MISSING:
            unsets[_dotted(path)] = ""
        else:
            sets[_dotted(path)] = copy_value(value)
    update: dict[str, Any] = {"$set": sets} if sets else {}
    if unsets:
        update["$unset"] = unsets
    return update


async def _write(cls: Any, read: ReadView, state: Mapping[str, Any]) -> tuple[Any, Document]:
    """One attempt: the mapped conditional write (None: nothing matched), and the
    stored document it leaves. `read.view` is what the object was restored
    from; `read.stored`, the stored document the changes are made to."""
    edit = edited(read.view, state, read.state)
    steps = forward_steps(cls, read.stored.get(VERSION_KEY))
    try:
        found = await forward(steps, read.view, edit)
    except Unmapped as exc:
        raise _refuse(cls, read.stored, exc) from None
    try:
        after = apply_changes(read.stored, found)
    except ValueError as exc:
        why = Unmapped(str(exc), steps[-1], "the newer document holds no document there")
        raise _refuse(cls, read.stored, why) from None
    fields = {path[0] for path, _ in found}
    write = guarded_write(read.stored, after, fields, expressions=exact_filters(cls.objects))
    if not write.update:
        return True, after
    by_path = path_update(read.stored, found)
    if by_path is not None and isinstance(write.update, dict):
        write = write._replace(update=by_path)
    if await changed_since_read(cls.objects, [write]):
        return None, after
    result = await cls.objects.update_one(write.query, write.update)
    return (result if result.matched_count else None), after


async def rolling_save(obj: Any, read: ReadView, *, stale: bool = False) -> Any:
    """Save `obj`, read by code one version behind, through the steps (see the module).

    The changes are always those from what the object was restored from
    (`read.view`); when the stored document changed meanwhile (and, with
    `stale`, first), it is read again, and the changes are made to it if
    the fields they change are still as the object read them.

    Returns None where the stored document is no longer newer than the code
    (the caller saves it as any other).

    Raises
    ------
    NewerDocumentError
        If a change cannot be carried forward (naming the field and the step).
    ConflictError
        If a field the code changed was changed by another writer.

    """
    cls = type(obj)
    state = obj.__getstate__()
    stale = stale or not read.exact
    for attempt in range(ROLLING_ATTEMPTS):
        if stale or attempt:
            fresh = await _reread(cls, read, state)
            if fresh is None:
                return None
            read = fresh
        result, after = await _write(cls, read, state)
        if result is not None:
            # Read again: the stored document may hold changes this object never saw.
            remember(
                obj, after, edited(read.view, state, read.state), exact=read.exact, state=state
            )
            return result
    raise ConflictError(cls.__model__, read.stored.get(ID_KEY), ROLLING_ATTEMPTS)


async def _reread(cls: Any, read: ReadView, state: Mapping[str, Any]) -> ReadView | None:
    """The stored document read again, beside the view the object was restored from,
    if the fields the code changed still read as they did; None where it is no
    longer newer than the code.

    Raises
    ------
    ConflictError
        If a field the code changed was changed meanwhile, or the document is gone.

    """
    doc_id = read.stored.get(ID_KEY)
    stored = await cls.objects.find_one({ID_KEY: doc_id})
    if stored is None:
        raise ConflictError(cls.__model__, doc_id, 1, fields=["_id"])
    version = stored_version(stored.get(VERSION_KEY), model=cls.__model__, doc_id=doc_id)
    if version <= cls.__parsed_version__:
        return None
    view, _, _ = await cls._migrate(stored, track=False)
    mine = changes(read.view, edited(read.view, state, read.state))
    moved = [p for p, _ in mine if not same_value(get_path(view, p), get_path(read.view, p))]
    if moved:
        raise ConflictError(cls.__model__, doc_id, 1, fields=[_dotted(p) for p in moved])
    return ReadView(stored, read.view, exact=False, state=read.state)


def _lock(obj: Any) -> asyncio.Lock:
    """The lock that makes the saves of `obj` one after another, in the running
    event loop (an object may outlive its loop; a lock waited on is bound to one)."""
    loop = asyncio.get_running_loop()
    held = _locks.get(obj)
    if held is None or held[0] is not loop:
        held = _locks[obj] = (loop, asyncio.Lock())
    return held[1]


async def save_object(
    obj: Any,
    insert_own: Callable[[], Awaitable[Any]],
    replace: Callable[[Any, Document], Awaitable[Any]],
) -> Any:
    """Save a versioned object: a new one inserted at the version ``__insert_at__``
    says (`insert_own`, or `insert_newest`), an existing one by `save_existing`.

    A new object is one without an ``_id``, or, with ``__insert_at__ =
    "newest"``, one given its own ``_id`` and never restored (where that
    ``_id`` is stored already, it is saved as any other).

    The saves of one object (of a model with ``__on_newer__ = "downgrade"``)
    run one after another: atom-db's cache hands the same object to every
    reader of its document, and a save compares the object with what the
    last save of it wrote (saves at once would each compare it with the
    read, and take each other's changes for another writer's, or insert
    a new object twice).

    """
    if type(obj).__on_newer__ != "downgrade":
        return await _save_object(obj, insert_own, replace)
    async with _lock(obj):
        return await _save_object(obj, insert_own, replace)


async def _save_object(
    obj: Any,
    insert_own: Callable[[], Awaitable[Any]],
    replace: Callable[[Any, Document], Awaitable[Any]],
) -> Any:
    newest = type(obj).__insert_at__ == "newest"
    if obj._id is None:
        return await (insert_newest(obj) if newest else insert_own())
    if newest and not obj.__restored__:
        try:
            return await insert_newest(obj)  # given its own _id
        except DuplicateKeyError as exc:
            if not duplicate_id(exc):
                raise  # another unique index
            # stored already: saved as any other
    return await save_existing(obj, replace)


async def save_existing(obj: Any, replace: Callable[[Any, Document], Awaitable[Any]]) -> Any:
    """Save an object that has an ``_id``: through the steps where it was read from a
    newer document, else with `replace` (`guarded_replace`); through the steps
    again where that finds the document saved by newer code since the read."""
    cls = type(obj)
    read = view_of(obj)
    if read is not None and read.newer:
        written = await rolling_save(obj, read)
        if written is not None:
            return written
    state = obj.__getstate__()
    try:
        result = await replace(cls, state)
    except NewerDocumentError:
        if read is None:
            raise
        # Read at the code's version, saved by newer code since: through the steps.
        result = await rolling_save(obj, read, stale=True)
        if result is None:
            raise
    else:
        if cls.__on_newer__ == "downgrade":
            note_read(obj, state, state)
            settle(obj, state)
    return result


# ----------------------------------------------------------------------
# New objects at the newest version
# ----------------------------------------------------------------------
def newest_known(cls: Any) -> Any:
    """The newest version the model's steps know (its own when none is newer)."""
    graph = MigrationRegistry.instance().graph(cls)
    return max(graph.known_versions(cls.__parsed_version__))


async def insert_newest(obj: Any) -> Any:
    """Insert a new object's document taken forward to the newest version known.

    A ``rename_model`` is a step of the model's new name: the chain of the
    model under its old name never holds one.

    """
    cls = type(obj)
    state = obj.__getstate__()
    newest = newest_known(cls)
    graph = MigrationRegistry.instance().graph(cls)
    steps = graph.plan_upgrade(cls.__parsed_version__, newest)
    doc, _ = await apply_chain(steps, state, track=False)
    result = await cls.objects.insert_one(doc)
    obj._id = result.inserted_id
    cls.objects.cache[obj._id] = obj
    doc[ID_KEY] = obj._id
    if steps:
        remember(obj, doc, {**state, ID_KEY: obj._id}, state=state)
    return result


__all__ = [
    "ReadView",
    "changes",
    "forget",
    "forward",
    "insert_newest",
    "note_read",
    "remember",
    "rolling_save",
    "save_existing",
    "save_object",
    "settle",
    "view_of",
]
