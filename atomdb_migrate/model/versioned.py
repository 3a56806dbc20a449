"""Versioned atom-db models: the lazy path.

A `VersionedModel` is an atom-db `NoSQLModel` whose documents carry the
model's ``__version__``. Whenever atom-db restores an object from a document
(``Model.restore(state)``, ``obj.load()``, a reference restored while
restoring another object, an embedded object), a document at an older
version is first taken through the model's steps, in order.

Restoring a document that is already at the current version costs one
dictionary lookup and one string comparison more than atom-db's own restore.

"""

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from atom.api import Member
from atomdb.base import ModelMeta, ModelSerializer, RestoreError, ScopeType, StateType
from atomdb.nosql import NoSQLModel, NoSQLModelManager, NoSQLModelSerializer
from packaging.version import Version

from ..core.documents import Document
from ..core.storage import ID_KEY, MODEL_KEY, REF_KEY, REFERENCE_KEYS, VERSION_KEY
from ..core.writes import guarded_write
from ..driver.mongo import changed_since_read, exact_filters
from ..exceptions import (
    MigrateError,
    NewerDocumentError,
    RestoreFailedError,
    short_repr,
    shorten,
)
from ..schema.indexes import declared as declared_indexes
from ..schema.validators import versioned_base
from ..steps.registry import MigrationRegistry, listen_to_aliases
from ..steps.versions import (
    BASE_VERSION,
    apply_chain,
    base_version,
    parse_version,
    stored_version,
)
from .offline import is_offline
from .reads import ReadChain, read_chain
from .rolling import KEPT, forget, note_read, save_object, settle
from .saves import guarded_replace

if TYPE_CHECKING:
    from .finders import Found

log = logging.getLogger("atomdb_migrate")

#: The keys of the reference atom-db stores for a saved object held by
#: another one (moved to `atomdb_migrate.core.storage`).
STUB_KEYS = REFERENCE_KEYS

#: What a model may say about documents newer than its code.
NEWER_POLICIES = ("raise", "restore", "downgrade")

#: The versions a model may insert new objects at (``__insert_at__``).
INSERT_VERSIONS = ("own", "newest")


#: While set, restore errors are collected here instead of logged, and
#: nothing is written back (see `restore_check`).
_restore_problems: ContextVar[list[str] | None] = ContextVar(
    "atomdb_migrate_restore_problems", default=None
)


@contextmanager
def restore_check() -> Iterator[list[str]]:
    """Collect the fields that fail to restore, and write nothing back, in the block.

    Used by dry runs to check that an upgraded document restores cleanly::

        with restore_check() as problems:
            await Model.__new__(Model).__restorestate__(doc)
        assert not problems

    """
    problems: list[str] = []
    token = _restore_problems.set(problems)
    try:
        yield problems
    finally:
        _restore_problems.reset(token)


def is_reference_stub(state: StateType) -> bool:
    """Whether a state is a reference atom-db stored in place of an object.

    A stub names an object by ``_id`` and ``__model__``; it is not a
    document, carries no version, and is never run through steps. atom-db
    also stores ``{"__ref__", "__model__"}`` alone, without the ``_id``, for
    an object met twice while saving one document: that is a stub too.

    """
    return (
        VERSION_KEY not in state
        and state.keys() <= REFERENCE_KEYS
        and (ID_KEY in state or REF_KEY in state)
    )


class VersionedModelMeta(ModelMeta):
    """Checks ``__version__`` and registers each versioned model class."""

    def __new__(meta, name: str, bases: tuple[type, ...], dct: dict[str, Any]) -> Any:
        cls = super().__new__(meta, name, bases, dct)  # type: ignore[no-untyped-call]
        model = cls.__model__
        parsed = parse_version(cls.__version__, model=model, what="__version__")
        cls.__version__ = str(parsed)
        cls.__parsed_version__ = parsed
        cls.__base_version__ = str(base_version(cls))  # refuses a wrong base at import
        if cls.__on_newer__ not in NEWER_POLICIES:
            raise ValueError(
                f"model {model!r}: __on_newer__ must be one of {NEWER_POLICIES}, "
                f"not {cls.__on_newer__!r}"
            )
        if cls.__insert_at__ not in INSERT_VERSIONS:
            raise ValueError(
                f"model {model!r}: __insert_at__ must be one of {INSERT_VERSIONS}, "
                f"not {cls.__insert_at__!r}"
            )
        declared_indexes(cls)  # refuses a wrong entry at import
        if any(isinstance(base, VersionedModelMeta) for base in bases):
            MigrationRegistry.instance().register_model(cls)
            add_to_serializer_registries(cls)
        return cls


def _alias_changed(name: str, cls: type[NoSQLModel] | None) -> None:
    """Follow the registry's former names in atom-db's serializer registries."""
    if cls is not None:
        add_to_serializer_registries(cls, name)
        return
    for serializer in list(ModelSerializer._instances.values()):
        if isinstance(serializer, NoSQLModelSerializer):
            registry = serializer.get_member("registry").get_slot(serializer)
            found = registry.get(name) if registry is not None else None
            if found is not None and getattr(found, "__model__", name) != name:
                del registry[name]


def add_to_serializer_registries(cls: type[NoSQLModel], name: str | None = None) -> None:
    """Make a model class restorable by reference under its name (or `name`).

    atom-db builds each serializer's registry of model names once, on first
    use, so a model class defined after that could not be restored by
    reference. Registries already built get the new class; those not built
    yet will find it themselves.

    A former name (`name`, from ``ops.rename_model``) is not found by atom-db
    at all, so it is added to every NoSQL serializer's registry, building the
    registries not built yet.

    """
    for serializer in list(ModelSerializer._instances.values()):
        if not isinstance(serializer, NoSQLModelSerializer):
            continue
        member: Member[Any, Any] = serializer.get_member("registry")
        if name is not None or member.get_slot(serializer) is not None:
            serializer.registry[name or cls.__model__] = cls


class VersionedModelSerializer(NoSQLModelSerializer):
    """atom-db's NoSQL serializer, upgrading the documents it fetches.

    When an object is restored by reference, the serializer fetches its
    document through the model's standard manager (``Model.objects``);
    this one returns the document upgraded to the model's version. With no
    database (`offline`, in a step test) it returns the reference itself:
    the object restores not loaded yet.

    """

    async def get_object_state(self, obj: Any, state: Any, scope: ScopeType) -> Any:
        cls = type(obj)
        if not isinstance(obj, VersionedModel):
            return await cls.objects.find_one({"_id": state["_id"]})
        if is_offline():
            # No database (a step test): the reference restores not loaded yet.
            return state
        doc = await find_document(cls, state["_id"])
        if doc is None:
            return None
        return await cls._upgrade_for_restore(doc)

    def _default_registry(self) -> dict[str, type[Any]]:
        """atom-db's registry, with the former names of renamed models."""
        found: dict[str, type[Any]] = super()._default_registry()  # type: ignore[no-untyped-call]
        for old, cls in MigrationRegistry.instance()._alias_classes().items():
            found.setdefault(old, cls)
        return found


async def find_document(cls: type[NoSQLModel], doc_id: Any) -> Document | None:
    """Fetch a document by ``_id``; for a renamed model, also from its former collections.

    Until ``atomdb-migrate upgrade`` renames the collection, the documents of
    a model moved to another module are still stored under its old name.

    """
    doc: Document | None = await cls.objects.find_one({"_id": doc_id})
    if doc is None:
        for collection in former_collections(cls):
            doc = await collection.find_one({"_id": doc_id})
            if doc is not None:
                break
    return doc


def former_collections(cls: type[NoSQLModel]) -> list[Any]:
    """The collections of a renamed model's former names, the most recent first
    (none for a model never renamed)."""
    names = MigrationRegistry.instance().former_names(cls.__model__)
    if not names:
        return []
    database = NoSQLModelManager.instance().database
    return [database[name] for name in names]


class VersionedModel(NoSQLModel, metaclass=VersionedModelMeta):
    """A NoSQL model whose documents carry a schema version.

    Set ``__version__`` on a subclass, and register a step for each change
    of version with `atomdb_migrate.step`. Every document the model saves
    carries ``"__version__"``; a stored document without it is at version
    ``"0"``.

    Examples
    --------
    >>> class User(VersionedModel):
    ...     __version__ = 2
    ...     first = Str()
    ...     last = Str()
    >>> @step(User, 1, 2)
    ... def split_name(doc):
    ...     doc["first"], _, doc["last"] = doc.pop("name").partition(" ")

    """

    # --------------------------------------------------------------------------
    # Class attributes
    # --------------------------------------------------------------------------

    #: The version of the model's schema: a PEP 440 version such as "3" or
    #: "1.2" (an int is taken as its string). Stored in every document.
    __version__: ClassVar[str] = BASE_VERSION

    #: The parsed ``__version__``, set by the metaclass.
    __parsed_version__: ClassVar[Version]

    #: The lowest version a stored document may have: 0, or, once the steps
    #: below some version are squashed (deleted), that version. The chain must
    #: lead from it to ``__version__``; ``check --pending`` counts documents
    #: stored below it, and reading one raises `BelowBaseError`.
    __base_version__: ClassVar[str] = BASE_VERSION

    #: What to do with a stored document newer than this code: "raise"
    #: (`NewerDocumentError`), "restore" it as it is, or "downgrade" it
    #: through the registered steps' downgrade functions (raising when they
    #: are not all there). With "downgrade", `save()` writes what the code
    #: changed through the steps, in the newer shape (`atomdb_migrate.model.rolling`);
    #: otherwise it refuses to replace a newer document.
    __on_newer__: ClassVar[str] = "raise"

    #: The version `save()` writes a new object at: "own", the model's
    #: ``__version__`` (newer code upgrades it lazily), or "newest", the
    #: newest version its steps know, taken there through them.
    __insert_at__: ClassVar[str] = "own"

    #: Persist a document upgraded on restore, with a write that matches its
    #: ``_id`` and its old version, so a newer write is never overwritten.
    __write_back__: ClassVar[bool] = False

    #: The indexes the collection should have, in the shapes
    #: `ops.create_index` takes (keys, or ``ops.create_index(keys, **options)``).
    #: ``revision --autogenerate`` writes the operations that create and drop
    #: them, and ``check`` reports drift (see `atomdb_migrate.indexes`). None:
    #: the model's indexes are not managed.
    __indexes__: ClassVar[Sequence[Any] | None] = None

    #: Handles encoding and decoding, upgrading fetched references
    serializer = VersionedModelSerializer.instance()

    # --------------------------------------------------------------------------
    # Serialization
    # --------------------------------------------------------------------------
    def __getstate__(self, scope: ScopeType | None = None) -> StateType:
        """Get the state to store, with the model's version."""
        state = self.__generated_getstate__(scope)
        state[VERSION_KEY] = self.__version__
        return state

    async def __restorestate__(self, state: StateType, scope: ScopeType | None = None) -> None:
        """Restore from a document, upgrading it first when it is older.

        Raises
        ------
        RestoreFailedError
            Where atom-db raises its ``RestoreError`` (a member refuses a
            value, with ``__on_error__ = "raise"``): the same, naming the
            model and the document's ``_id``.

        Whatever it raises, the object is no longer in atom-db's cache, and
        keeps no view for a save through the steps (half restored, its save
        of a newer document is refused, not written over it).

        One coroutine, not two: it runs for every document read, current
        ones included, and a coroutine's frame is a measurable part of it.

        """
        doc = state
        # Views for saves through the steps: only a "downgrade" model keeps them
        # (a dictionary lookup per read costs a current read a few percent).
        views = self.__on_newer__ == "downgrade" or len(KEPT) > 0
        try:
            if doc.get(VERSION_KEY) != self.__version__:
                if is_reference_stub(doc):
                    # Only the _id is known: leave the object to be loaded.
                    if doc.get(MODEL_KEY, self.__model__) != self.__model__:
                        doc = self._renamed_stub(doc)
                    await self.__generated_restorestate__(doc, scope)  # type: ignore[func-returns-value, misc]
                    self.__restored__ = False
                    return
                chain = self._read_chain(doc)
                if chain is not None:
                    doc = await chain(doc)
                else:
                    doc = await self._upgrade_for_restore(doc)
                if views:
                    note_read(self, state, doc)  # for a save through the steps
            elif views:
                note_read(self, doc, doc)
            await self.__generated_restorestate__(doc, scope)  # type: ignore[func-returns-value, misc]
            if views:
                settle(self)  # the state as restored: a save writes what changed since
        except BaseException as exc:
            self._uncache(state.get("_id"))
            forget(self)
            if isinstance(exc, RestoreError) and not isinstance(exc, RestoreFailedError):
                raise RestoreFailedError(self.__model__, state.get("_id"), exc) from exc
            raise

    def _uncache(self, pk: Any) -> None:
        """Take this object out of atom-db's object cache, where `restore` put it.

        atom-db's `restore` caches a new object under its ``_id`` before
        restoring it: when the restore fails, the empty object would stay
        there, and every later read of the document would return it
        silently, with no field set, instead of failing again.

        """
        if pk is None:
            return
        try:
            cache = type(self).objects.cache
        except Exception:  # no database set: nothing was cached
            return
        if cache.get(pk) is self:
            del cache[pk]

    @classmethod
    def _renamed_stub(cls, state: StateType) -> StateType:
        """A reference stored under a former name of the model, under its name."""
        if state[MODEL_KEY] in MigrationRegistry.instance().former_names(cls.__model__):
            return {**state, MODEL_KEY: cls.__model__}
        return state

    def __log_restore_error__(
        self, e: Exception, k: str, state: StateType, scope: ScopeType | None
    ) -> None:
        """Log a field that failed to restore; a migration error propagates.

        atom-db logs and skips a field that fails to restore. A referenced
        document that cannot be upgraded is not such a field: skipping it
        would let the next `save()` write the default over it, so the error
        is raised to the caller.

        """
        if isinstance(e, MigrateError):
            raise e
        problems = _restore_problems.get()
        if problems is not None:
            problems.append(f"{self.__model__}.{k}: {type(e).__name__}: {e}")
            return
        super().__log_restore_error__(e, k, state, scope)

    @classmethod
    async def upgrade_state(cls, state: Document) -> Document:
        """Return a stored document taken to the model's version; write nothing.

        The given document is not changed: the steps run on a copy, and the
        result shares nothing with it. A document already at the model's
        version is returned as it is.

        Raises
        ------
        InvalidVersionError
            If the stored version is not a version.
        NewerDocumentError
            If the document is newer than the code and ``__on_newer__`` is
            "raise" (with "restore" it is returned as it is; with
            "downgrade" it is taken back through the downgrade functions).
        ChainError
            If the steps do not lead from the stored version to the model's.
        StepError
            If a step fails on the document.

        """
        __tracebackhide__ = True  # a failing step's test shows the step, not the helpers
        doc, _, _ = await cls._migrate(state, track=False)
        return doc  # untracked, the steps ran on a deep copy: it shares nothing

    # --------------------------------------------------------------------------
    # Queries across versions
    # --------------------------------------------------------------------------
    @classmethod
    async def find(
        cls,
        query: dict[str, Any] | None = None,
        *,
        stored: bool = False,
        limit: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> "Found":
        """The objects whose documents match `query` once upgraded, legacy ones included.

        `query` is written against the model's current fields; see
        `atomdb_migrate.finders.find` (also for a model with a member
        named ``find``) and docs/queries.md. ``stored=True`` asks only the
        versions a cached survey finds stored. ``on_error="skip"`` leaves
        out a matched document that cannot be restored (a step fails on
        it) instead of raising: the result, a list, holds their errors in
        ``skipped``.

        """
        from .finders import find

        return await find(cls, query, stored=stored, limit=limit, on_error=on_error)

    @classmethod
    async def find_one(cls, query: dict[str, Any] | None = None, *, stored: bool = False) -> Any:
        """One object whose document matches `query` once upgraded, or None."""
        from .finders import find_one

        return await find_one(cls, query, stored=stored)

    @classmethod
    async def count(cls, query: dict[str, Any] | None = None, *, stored: bool = False) -> int:
        """How many documents match `query` once upgraded, legacy ones included."""
        from .finders import count

        return await count(cls, query, stored=stored)

    @classmethod
    async def _migrate(
        cls, state: Document, *, track: bool = True
    ) -> tuple[Document, Iterable[str] | None, bool]:
        """Take a stored document to the model's version, as `upgrade_state` does.

        Returns the document (`state` itself when no step ran), the top-level
        fields the steps looked at (None: all of them, or not `track`ed: see
        `apply_chain`), and whether the document was upgraded (False when it
        was taken back to an older version, or left as it is).

        """
        __tracebackhide__ = True
        head = cls.__parsed_version__
        graph = MigrationRegistry.instance().graph(cls)
        raw = state.get(VERSION_KEY)
        plan = graph.plan(raw, head, head=head)
        if plan.kind == "migrate":
            return (*await apply_chain(plan.steps, state, track=track), True)
        if plan.kind == "current":
            return state, (), False
        if plan.kind != "newer":
            plan.raise_for(state.get("_id"))
        if cls.__on_newer__ == "restore":
            return state, (), False
        if cls.__on_newer__ == "downgrade":
            assert plan.stored is not None
            back = graph.plan(raw, head, head=plan.stored, downgrade=True)
            if back.kind != "migrate":
                back.raise_for(state.get("_id"))
            return (*await apply_chain(back.steps, state, downgrade=True, track=False), False)
        raise NewerDocumentError(
            cls.__model__, state.get("_id"), str(plan.stored), cls.__version__, action="restore it"
        )

    @classmethod
    def _read_chain(cls, state: Document) -> ReadChain | None:
        """The compiled chain a restore that writes nothing back runs, if there is one."""
        if cls.__write_back__ and state.get("_id") is not None and _restore_problems.get() is None:
            return None
        return read_chain(cls, state.get(VERSION_KEY))

    @classmethod
    async def _upgrade_for_restore(cls, state: Document) -> Document:
        """Upgrade a document being restored, writing it back if the model says so.

        Only an upgrade is written back: a document taken back to an older
        version for old code to read (``__on_newer__ = "downgrade"``) is
        changed in memory only.

        """
        chain = cls._read_chain(state)
        if chain is not None:
            return await chain(state)
        writes = (
            cls.__write_back__ and state.get("_id") is not None and _restore_problems.get() is None
        )
        # What the steps looked at is needed only to guard a write.
        doc, fields, upgraded = await cls._migrate(state, track=writes)
        if upgraded and writes:
            await write_back(cls, state, doc, fields)
        return doc

    # --------------------------------------------------------------------------
    # Database API
    # --------------------------------------------------------------------------
    async def load(self) -> None:
        """Load the object from the database, if it is not loaded yet."""
        pk = self._id
        if self.__restored__ or pk is None:
            return
        state = await find_document(type(self), pk)
        if state is not None:
            await self.__restorestate__(state)

    async def delete(self) -> Any:
        """Delete the object's document, under every name it may be stored under.

        Until ``upgrade`` renames the collection, the document of a model
        moved to another module (``ops.rename_model``) may still be stored
        under a former name, and read from there (`find_document`), and a
        `save` puts a copy under the model's name beside it. atom-db's
        delete looks at the model's name only: the copy under the former
        name would stay, and ``upgrade`` would merge it back. The copies
        under the former names are deleted first, then the one under the
        model's name: a delete stopped half-way leaves the document still
        found, never an old copy alone (see also
        `atomdb_migrate.renames.rename_collection`).

        Returns
        -------
        result: DeleteResult or None
            The delete that removed the document (that of the model's
            collection when none did); None for an object never saved.

        """
        pk = self._id
        if not pk:
            return None
        forget(self)
        done = None
        for collection in former_collections(type(self)):
            result = await collection.delete_one({"_id": pk})
            if result.deleted_count:
                done = result
        db = self.objects
        result = await db.delete_one({"_id": pk})
        db.cache.pop(pk, None)
        del self._id
        return result if result.deleted_count or done is None else done

    async def save(self) -> Any:
        """Save the object, never replacing a document newer than the code.

        An object restored from a newer document through the downgrades
        (``__on_newer__ = "downgrade"``) writes what the code changed,
        through the steps, at the stored version (see
        `atomdb_migrate.model.rolling`). A new object is inserted at the
        version ``__insert_at__`` says.

        Raises
        ------
        NewerDocumentError
            If the stored document's version is newer than the model's, and
            the object was not read from it through the downgrades, or a
            change cannot be written through a step (naming the field and
            the step).
        ConflictError
            If the stored document kept changing between reads and writes,
            or a field the code changed was changed by another writer.

        """
        result = await save_object(self, self._insert_own, guarded_replace)
        self.__restored__ = True
        return result

    async def _insert_own(self) -> Any:
        """Insert a new object at the model's version, as atom-db does."""
        inserted = await super().save()  # type: ignore[no-untyped-call]
        if self.__on_newer__ == "downgrade":
            state = self.__getstate__()
            note_read(self, state, state)
            settle(self, state)
        return inserted


async def write_back(
    cls: type[VersionedModel],
    old: Document,
    new: Document,
    fields: Iterable[str] | None = None,
) -> bool:
    """Persist an upgraded document if it is still stored as it was read.

    Best effort, never an error: a read must not fail because its write-back
    did. Only the top-level fields the steps changed are written, with a
    filter on the fields they looked at as read (see `atomdb_migrate.writes`),
    so that:

    - a document another process changed meanwhile is left alone (the newer
      document wins), and a field it added is kept;
    - a document read through a projection is written only where the steps
      looked at nothing the projection left out; otherwise nothing matches;
    - nothing is ever written at a version lower than, or equal to, the one
      stored.

    Parameters
    ----------
    old: dict
        The document as read.
    new: dict
        The upgraded document.
    fields: iterable of str, optional
        The top-level fields the steps looked at; None (the default) for
        every field, in which case the stored document must also have no
        field `old` lacks.

    Returns
    -------
    written: bool
        Whether the stored document is now `new`.

    """
    doc_id = old.get("_id")
    try:
        before = stored_version(old.get(VERSION_KEY))
        after = stored_version(new.get(VERSION_KEY))
    except MigrateError:
        return False
    if after <= before:
        log.warning(
            "%s: document _id=%s: not written back at version %s over version %s",
            cls.__model__,
            short_repr(doc_id),
            after,
            before,
        )
        return False
    try:
        write = guarded_write(
            old, new, fields, complete=True, expressions=exact_filters(cls.objects)
        )
        if not write.update:
            return True
        if await changed_since_read(cls.objects, [write]):
            result = None  # its large values changed since the read
        else:
            result = await cls.objects.update_one(write.query, write.update)
    except Exception as exc:  # the read goes on; the document stays for later
        log.warning(
            "%s: document _id=%s upgraded on read but not written back: %s: %s",
            cls.__model__,
            short_repr(doc_id),
            type(exc).__name__,
            shorten(str(exc)),
        )
        return False
    if result is None or not result.matched_count:
        log.info(
            "%s: document _id=%s changed since it was read (or was read through a "
            "projection the steps reached past); upgraded copy not written back",
            cls.__model__,
            short_repr(doc_id),
        )
        return False
    return True


listen_to_aliases(_alias_changed, lasting=True)
versioned_base(VersionedModel)  # its documents hold __version__ (json_schema)
