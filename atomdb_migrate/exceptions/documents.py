"""Stored documents: too large a write, a newer document, a downgrade that
left newer documents, a conflict, a document that does not restore,
documents sharing a unique key.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from typing import Any

from atomdb.base import RestoreError
from packaging.version import Version

from .base import MigrateError, _describe, short_repr


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 100 * 1024 else f"{size / 1024:.1f} KB"


class GuardTooLargeError(MigrateError, ValueError):
    """A conditional write cannot be sent: its update and the filter that matches
    the document as read do not fit in one command under MongoDB's 16 MB limit.

    The document is not the cause (it fits); what the filter must repeat of
    it beside the update is.

    Attributes
    ----------
    read: dict
        The encoded size of each value the filter matches as read, by name.
    update_size: int
        The encoded size of the update.
    loose: bool
        Whether matching the large values by type and size alone was tried.

    """

    read: dict[str, int]
    update_size: int
    loose: bool

    def __init__(self, read: dict[str, int], update_size: int, *, loose: bool) -> None:
        shown = ", ".join(
            f"{short_repr(k, 60)}: {_megabytes(n)}" for k, n in list(read.items())[:3]
        )
        more = f" and {len(read) - 3} more" if len(read) > 3 else ""
        how = "even matching its large values by size, " if loose else ""
        super().__init__(
            f"the update ({_megabytes(update_size)}) and the filter that matches what was "
            f"read ({shown}{more}) do not fit in one command: {how}they are over MongoDB's "
            "16 MB limit for a command",
            read=read,
            update_size=update_size,
            loose=loose,
        )


class NewerDocumentError(MigrateError):
    """A stored document's version is newer than the model's code.

    Raised when restoring such a document (unless the model's
    ``__on_newer__`` is ``"restore"``) and when `save()` would replace it.

    """

    stored: str
    current: str
    #: On a save through the steps (``__on_newer__ = "downgrade"``): the
    #: changed field that cannot be written in the newer shape, the step
    #: that stands in the way, and why; None (and "") otherwise.
    field: str | None
    step: str | None
    reason: str

    def __init__(
        self,
        model: str,
        doc_id: Any,
        stored: str,
        current: str,
        *,
        action: str,
        field: str | None = None,
        step: str | None = None,
        reason: str = "",
    ) -> None:
        message = (
            f"stored version {stored} is newer than the code's version {current}; "
            f"refusing to {action}"
        )
        if field is not None:
            message += f": the change to {field!r} cannot be written through step {step}: {reason}"
        super().__init__(
            message,
            model=model,
            doc_id=doc_id,
            stored=stored,
            current=current,
            field=field,
            step=step,
            reason=reason,
        )


class DowngradeLeftNewerError(MigrateError):
    """A downgrade left documents alone because they are newer than the code running it.

    The code that runs a downgrade must know the documents' version: its
    model at that version (or later), its step modules holding the
    downgrade functions. Run from older code, the downgrade takes none of
    those documents back. Not raised: a run's report holds it
    (`ModelReport.left_newer`), and the command exits with its code.

    Attributes
    ----------
    newer: int
        How many documents were left (a dry run: would be).
    versions: list of str
        The stored versions newer than the code, as counted when the run
        started (empty if documents reached such a version only later).
    code_version: str
        The model's version in the code that ran the downgrade.
    needed: str
        The version the model must be at in the code that runs the
        downgrade: the newest of `versions` (or, without them, above
        `code_version`).
    target: str
        The version the downgrade takes documents to.
    dry_run: bool
        Whether the run was a dry run (the documents would be left).
    command: str
        The command to run again from that code (without ``atomdb-migrate``):
        ``downgrade MODEL --to V`` by default; a downgrade of releases names
        its own (``downgrade --release -1``), so that the releases it takes
        back are recorded as taken back.

    """

    newer: int
    versions: list[str]
    code_version: str
    needed: str
    target: str
    dry_run: bool
    command: str

    def __init__(
        self,
        model: str,
        newer: int,
        versions: list[str],
        code_version: str,
        target: str,
        *,
        dry_run: bool = False,
        command: str | None = None,
    ) -> None:
        command = command or f"downgrade {model} --to {target}"
        needed = max(versions, key=Version) if versions else ""
        stored = f" (stored at {', '.join(versions)})" if versions else ""
        left, did = (
            ("would be left as they are", "would not take")
            if dry_run
            else ("were left", "did not take")
        )
        which = f"is at version {needed} or later" if needed else f"is past version {code_version}"
        super().__init__(
            f"{newer} documents{stored} are newer than this code's version {code_version} "
            f"and {left}: the downgrade to {target} {did} them back. Run `atomdb-migrate "
            f"{command}` from the image whose code knows their "
            f"version: the release whose model {which} (its __version__), with its step "
            "modules (they hold the downgrade functions)",
            model=model,
            newer=newer,
            versions=versions,
            code_version=code_version,
            needed=needed,
            target=target,
            dry_run=dry_run,
            command=command,
        )

    def naming(self, command: str) -> DowngradeLeftNewerError:
        """The same error, naming `command` as the one to run from the newer code."""
        return DowngradeLeftNewerError(
            str(self.model),
            self.newer,
            self.versions,
            self.code_version,
            self.target,
            dry_run=self.dry_run,
            command=command,
        )


class ConflictError(MigrateError):
    """A document kept changing under a conditional write; nothing was written."""

    attempts: int
    #: The fields found changed by another writer since they were read, where
    #: that is known (a save through the steps; ``["_id"]``: the document was
    #: deleted); empty otherwise.
    fields: list[str]

    def __init__(
        self, model: str, doc_id: Any, attempts: int, *, fields: list[str] | None = None
    ) -> None:
        if fields == ["_id"]:
            message = "the document was deleted since it was read; nothing was written"
        elif fields:
            message = (
                f"{', '.join(repr(f) for f in fields)} changed since it was read; "
                "nothing was written"
            )
        else:
            message = (
                f"the stored document kept changing during {attempts} conditional "
                "writes; nothing was written"
            )
        super().__init__(
            message, model=model, doc_id=doc_id, attempts=attempts, fields=list(fields or [])
        )


class RestoreFailedError(MigrateError, RestoreError):
    """A stored document does not restore into its model: a member refused a value.

    atom-db raises its `RestoreError` for that when the model's
    ``__on_error__`` is ``"raise"``, naming the field only; this is that
    error with the model and the document's ``_id``, and it is still a
    `RestoreError`. The original exception is the ``__cause__``.

    Attributes
    ----------
    field: str
        The member that refused its value.
    exc: Exception
        Why (atom-db's own ``exc``: the member's validation error, or the
        error of a referenced or embedded object that did not restore).

    """

    field: str
    exc: Exception

    def __init__(self, model: str, doc_id: Any, error: RestoreError) -> None:
        # Not through MigrateError.__init__: its super() is RestoreError's,
        # which takes other arguments (and sets field, cls and exc).
        RestoreError.__init__(self, error.field, error.cls, error.exc)
        self.model = model
        self.doc_id = doc_id
        message = f"field {error.field!r} does not restore: {error.exc}"
        Exception.__init__(self, f"{_describe(model, doc_id)}: {message}")

    def __str__(self) -> str:
        return Exception.__str__(self)  # not RestoreError's, which names the field only


class UniqueIndexError(MigrateError):
    """A unique index cannot be built: stored documents share a key.

    A problem of the data, not of the server: the documents have to change
    (or the index not be unique) before a run can build it. The index it
    replaces, if any, is left as it was (or created again as it was).

    Attributes
    ----------
    collection: str
        The collection.
    index: str
        The index asked for, described (``index email_1 {email: 1} (unique=True)``).
    key: dict
        The key two documents share, by field (``{"email": "ada@example.org"}``).
    ids: list
        The ``_id`` of two documents that share it (fewer if they changed meanwhile).
    kept: str
        What became of the index it replaces ("" when it replaces none).

    """

    collection: str
    index: str
    key: dict[str, Any]
    ids: list[Any]
    kept: str
    #: Which documents share which key, in words.
    shared: str

    def __init__(
        self,
        model: str,
        collection: str,
        index: str,
        key: dict[str, Any],
        ids: list[Any],
        *,
        kept: str = "",
    ) -> None:
        shared = shared_key(key, ids)
        super().__init__(
            f"collection {collection}: {index} cannot be built: {shared}. Make the values "
            "unique (or the index not unique), then run upgrade again"
            + (f"; {kept}" if kept else ""),
            model=model,
            collection=collection,
            index=index,
            key=key,
            ids=ids,
            kept=kept,
            shared=shared,
        )


def shared_key(key: dict[str, Any], ids: list[Any]) -> str:
    """Which documents share which key, as `UniqueIndexError` says it."""
    values = (
        ", ".join(
            f"{k}={short_repr(v, 120)}" + (" (missing or null)" if v is None else "")
            for k, v in key.items()
        )
        or "a key"
    )
    if len(ids) >= 2:
        first, second = short_repr(ids[0], 80), short_repr(ids[1], 80)
        return f"documents _id={first} and _id={second} share {values}"
    return f"two documents share {values}"
