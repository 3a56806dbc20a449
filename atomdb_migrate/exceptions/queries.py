"""Filters `version_filter` cannot take, and the query guard's error and warning.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from .base import MigrateError


class QueryError(MigrateError):
    """A filter that `atomdb_migrate.version_filter` cannot translate."""


class InvalidQueryError(QueryError, ValueError):
    """A filter outside the grammar `version_filter` knows, or a malformed one.

    Attributes
    ----------
    field: str or None
        The field whose condition is at fault (None for the filter's top level).

    """

    field: str | None

    def __init__(self, field: str | None, problem: str) -> None:
        where = f"the condition on {field!r}" if field is not None else "the filter"
        super().__init__(f"{where}: {problem}", field=field)


class UntranslatableQueryError(QueryError):
    """A filter that legacy documents cannot be matched by, as they are stored.

    A Python step computes the field, or may change it, so no filter on the
    stored document says what the step will make of it. Declare what a
    Python step changes (``changes = [...]``) to let filters on other fields
    through it.

    Attributes
    ----------
    field: str
        The field the condition is on.
    step: str
        The step that stands in the way (its module or function).
    version: str
        The version whose documents cannot be matched.
    stored: bool
        Whether documents are known to be stored at `version`: the caller
        gave the stored versions (``versions=``, ``stored=True``, the query
        guard's survey). Otherwise `version` is one the chain upgrades
        from, stored or not.

    """

    field: str
    step: str
    version: str
    stored: bool
    #: Why the step stands in the way.
    reason: str

    def __init__(
        self,
        model: str,
        field: str,
        step: str,
        reason: str,
        *,
        version: str = "",
        stored: bool = True,
    ) -> None:
        if not version:
            at = ""
        elif stored:
            at = f" (documents stored at version {version})"
        else:
            at = (
                f" (documents at version {version}, which the chain upgrades from, if any "
                "are stored: give the stored versions, versions= or stored=True, to ask "
                "those alone)"
            )
        super().__init__(
            f"a condition on {field!r} cannot be matched against legacy documents{at}: "
            f"{reason} in step {step}",
            model=model,
            field=field,
            step=step,
            version=version,
            stored=stored,
            reason=reason,
        )


class LegacyQueryError(QueryError):
    """A query through a model's manager answers otherwise than once documents are upgraded.

    Raised by the query guard set to "error" (`atomdb_migrate.guard_queries`);
    "warn" issues `LegacyQueryWarning` with the same message.

    Attributes
    ----------
    missed: int
        How many stored documents the query misses (or, where the filter
        cannot be translated, how many are stored at the versions concerned).
    extra: int
        How many it selects that it would not select once upgraded.
    versions: list of str
        The stored versions concerned.

    """

    missed: int
    extra: int
    versions: list[str]


class LegacyQueryWarning(UserWarning):
    """The query guard's warning: see `LegacyQueryError`."""
