"""Versions, steps, and the graph that orders a model's steps into chains.

Nothing here touches MongoDB: the graph is tested with in-memory steps only.

A model's steps form a chain ``0 -> 1 -> 2 -> ...``: each step leaves one
version for a greater one. To upgrade a document the graph walks from the
document's version, one step at a time, to the model's current version (the
*head*); to downgrade it walks back along the steps' downgrade functions.

"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from packaging.version import InvalidVersion, Version

from .exceptions import (
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    MissingDowngradeError,
    StepBeyondHeadError,
    StepFailedError,
    StepResultError,
)

#: A document as atom-db stores it.
Document = dict[str, Any]

#: A step function: takes the document, changes it in place and returns None,
#: or returns the new document; it may be a coroutine function.
StepFunction = Callable[[Document], Document | Awaitable[Document | None] | None]

#: Anything accepted where a version is expected.
VersionLike = str | int | Version

#: The key holding a document's version.
VERSION_KEY = "__version__"

#: The version of a stored document that has no ``__version__`` key.
BASE_VERSION = "0"


@lru_cache(maxsize=4096)
def _parse(text: str) -> Version:
    return Version(text)


def parse_version(
    value: Any, *, model: str | None = None, doc_id: Any = None, what: str = "version"
) -> Version:
    """Parse a version given as a string, an int, or a `Version`.

    Parameters
    ----------
    value: str, int or Version
        The version. An int is treated as its string; a bool is refused.
    model: str, optional
        The model concerned, named in the error.
    doc_id: Any, optional
        The document concerned, named in the error.
    what: str
        What the value is, named in the error.

    Returns
    -------
    version: Version
        The parsed version.

    Raises
    ------
    InvalidVersionError
        If the value is not a PEP 440 version.

    """
    if isinstance(value, Version):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidVersionError(value, model=model, doc_id=doc_id, what=what)
    try:
        return _parse(str(value))
    except InvalidVersion:
        raise InvalidVersionError(value, model=model, doc_id=doc_id, what=what) from None


def canonical(value: VersionLike) -> str:
    """Return the canonical string of a version, as stored in documents.

    ``3`` and ``"3"`` give ``"3"``; ``"1.2"`` gives ``"1.2"``; ``"v01"``
    gives ``"1"``.

    """
    return str(parse_version(value))


def describe_function(fn: Callable[..., Any]) -> str:
    """Name a function by module and qualified name, for messages."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}"


@dataclass(eq=False)
class Step:
    """One step of one model: from a version to the next.

    A `Step` is callable: calling it calls its upgrade function, so a
    decorated function can still be called directly in tests.

    """

    #: The ``__model__`` name of the model the step belongs to.
    model: str

    #: The version the step leaves (canonical string).
    from_version: str

    #: The version the step arrives at (canonical string).
    to_version: str

    #: The upgrade function.
    upgrade_fn: StepFunction

    #: The downgrade function, if any.
    downgrade_fn: StepFunction | None = None

    #: A one-line description (a step module's docstring).
    message: str = ""

    #: Where the step comes from: a file path, or ``module.qualname``.
    source: str = ""

    #: The step's declarative operations (`atomdb_migrate.ops.Operations`),
    #: run before the upgrade function given with them, if any.
    operations: Any = None

    #: Whether the step is only operations, so ``upgrade`` may run it on the server.
    server_side: bool = False

    #: Why the step has no downgrade, when its operations have no exact inverse.
    downgrade_reason: str = ""

    #: The model's stored fields after the step, by name: their member types
    #: (a step module's ``schema``; see `atomdb_migrate.schema`).
    schema: dict[str, str] | None = None

    #: The parsed versions, for ordering.
    from_key: Version = field(init=False, repr=False)
    to_key: Version = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.from_key = parse_version(self.from_version, model=self.model, what="step version")
        self.to_key = parse_version(self.to_version, model=self.model, what="step version")
        self.from_version = str(self.from_key)
        self.to_version = str(self.to_key)
        if not self.source:
            self.source = describe_function(self.upgrade_fn)

    def __call__(self, doc: Document) -> Any:
        return self.upgrade_fn(doc)

    def downgrade(self, fn: StepFunction) -> StepFunction:
        """Attach the downgrade function; usable as a decorator.

        Examples
        --------
        >>> @step(User, "1", "2")
        ... def split_name(doc): ...
        >>> @split_name.downgrade
        ... def join_name(doc): ...

        """
        self.downgrade_fn = fn
        return fn

    def same_as(self, other: Step) -> bool:
        """Whether two registrations are the same step, loaded again."""
        return (
            self.source == other.source
            and self.from_key == other.from_key
            and self.to_key == other.to_key
        )

    def __str__(self) -> str:
        return f"{self.model} {self.from_version} -> {self.to_version} ({self.source})"


class StepGraph:
    """The steps of one model, keyed by the version each leaves.

    Parameters
    ----------
    model: str
        The ``__model__`` name the steps belong to.

    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._by_from: dict[Version, Step] = {}
        self._plans: dict[tuple[Version, Version], tuple[Step, ...]] = {}

    # ------------------------------------------------------------------
    # Building
    # ------------------------------------------------------------------
    def add(self, step: Step) -> None:
        """Add a step.

        Registering the same step again (the same source and versions, as
        when a module is loaded twice) replaces it.

        Raises
        ------
        CycleError
            If the step does not go to a greater version.
        DuplicateStepError
            If another step already leaves the same version.

        """
        if step.to_key <= step.from_key:
            raise CycleError(self.model, step.from_version, step.to_version, step.source)
        existing = self._by_from.get(step.from_key)
        if existing is not None and not existing.same_as(step):
            raise DuplicateStepError(self.model, step.from_version, existing.source, step.source)
        self._by_from[step.from_key] = step
        self._plans.clear()

    def remove(self, step: Step) -> None:
        """Remove a step, if it is registered."""
        if self._by_from.get(step.from_key) is step:
            del self._by_from[step.from_key]
            self._plans.clear()

    @property
    def steps(self) -> list[Step]:
        """The steps in order of the version they leave."""
        return [self._by_from[k] for k in sorted(self._by_from)]

    def __len__(self) -> int:
        return len(self._by_from)

    @property
    def latest(self) -> Version | None:
        """The greatest version any step arrives at, or None without steps."""
        return max((s.to_key for s in self._by_from.values()), default=None)

    # ------------------------------------------------------------------
    # Planning
    # ------------------------------------------------------------------
    def plan_upgrade(
        self, start: VersionLike, head: VersionLike, *, doc_id: Any = None
    ) -> tuple[Step, ...]:
        """Return the steps that take a document from `start` to `head`.

        Raises
        ------
        GapError
            If no step leaves a version on the way.
        StepBeyondHeadError
            If a step on the way goes past `head`.

        """
        begin = parse_version(start, model=self.model, doc_id=doc_id)
        end = parse_version(head, model=self.model)
        key = (begin, end)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        chain: list[Step] = []
        current = begin
        while current < end:
            step = self._by_from.get(current)
            if step is None:
                raise GapError(self.model, str(begin), str(end), str(current), doc_id=doc_id)
            if step.to_key > end:
                raise StepBeyondHeadError(
                    self.model, step.from_version, step.to_version, str(end), step.source
                )
            chain.append(step)
            current = step.to_key
        plan = self._plans[key] = tuple(chain)
        return plan

    def plan_downgrade(
        self, start: VersionLike, target: VersionLike, *, doc_id: Any = None
    ) -> tuple[Step, ...]:
        """Return the steps, latest first, whose downgrades take `start` back to `target`.

        Raises
        ------
        GapError
            If no step arrives at a version on the way back.
        MissingDowngradeError
            If a step on the way has no downgrade function.

        """
        begin = parse_version(start, model=self.model, doc_id=doc_id)
        end = parse_version(target, model=self.model)
        chain: list[Step] = []
        current = begin
        while current > end:
            # The step arriving at `current` that starts nearest to it without
            # going below the target.
            arriving = [
                s for s in self._by_from.values() if s.to_key == current and s.from_key >= end
            ]
            if not arriving:
                raise GapError(
                    self.model,
                    str(begin),
                    str(end),
                    str(current),
                    doc_id=doc_id,
                    direction="downgrade",
                )
            step = max(arriving, key=lambda s: s.from_key)
            if step.downgrade_fn is None:
                raise MissingDowngradeError(
                    self.model,
                    step.from_version,
                    step.to_version,
                    step.source,
                    reason=step.downgrade_reason,
                )
            chain.append(step)
            current = step.from_key
        return tuple(chain)

    def problems(self, head: VersionLike) -> list[Exception]:
        """Check that every step leads, step by step, to `head`.

        Returns
        -------
        problems: list of ChainError
            One error per step from which `head` cannot be reached; empty
            when the chain is complete.

        """
        end = parse_version(head, model=self.model)
        found: list[Exception] = []
        seen: set[str] = set()
        for step in self.steps:
            try:
                if step.to_key > end:
                    raise StepBeyondHeadError(
                        self.model, step.from_version, step.to_version, str(end), step.source
                    )
                self.plan_upgrade(step.from_key, end)
            except (GapError, StepBeyondHeadError) as exc:
                if str(exc) not in seen:
                    seen.add(str(exc))
                    found.append(exc)
        return found


async def run_chain(
    steps: tuple[Step, ...] | list[Step],
    doc: Document,
    *,
    downgrade: bool = False,
) -> Document:
    """Apply a chain of steps to a document, setting its version after each.

    The caller passes a document it owns (a copy, where the original must
    stay untouched): steps may change it in place.

    Parameters
    ----------
    steps: sequence of Step
        The chain, as planned by `StepGraph.plan_upgrade` or
        `StepGraph.plan_downgrade`.
    doc: dict
        The document.
    downgrade: bool
        Run the steps' downgrade functions, setting each step's
        ``from_version``.

    Returns
    -------
    doc: dict
        The document at the end of the chain.

    Raises
    ------
    StepFailedError
        If a step function raised.
    StepResultError
        If a step returned something other than a dict or None, or changed
        the document's ``_id``.

    """
    has_id = "_id" in doc
    doc_id = doc.get("_id")
    for step in steps:
        fn = step.downgrade_fn if downgrade else step.upgrade_fn
        assert fn is not None
        end = step.from_version if downgrade else step.to_version
        try:
            result = fn(doc)
            if result is not None and type(result) is not dict and inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise StepFailedError(
                f"raised {type(exc).__name__}: {exc}", **_where(step, doc_id, downgrade)
            ) from exc
        if result is not None:
            if not isinstance(result, dict):
                raise StepResultError(
                    f"returned {type(result).__name__}, expected a dict or None",
                    **_where(step, doc_id, downgrade),
                )
            doc = result
        # Identity first: ObjectId's != is a Python method, and the step
        # almost always leaves the very same object.
        if has_id and (new_id := doc.get("_id")) is not doc_id and new_id != doc_id:
            raise StepResultError(
                f"changed or removed the document's _id (now {new_id!r})",
                **_where(step, doc_id, downgrade),
            )
        doc[VERSION_KEY] = end
    return doc


def _where(step: Step, doc_id: Any, downgrade: bool) -> dict[str, Any]:
    """The facts a step error names."""
    start, end = (
        (step.to_version, step.from_version) if downgrade else (step.from_version, step.to_version)
    )
    return dict(
        model=step.model, doc_id=doc_id, from_version=start, to_version=end, source=step.source
    )


def copy_document(doc: Document) -> Document:
    """Copy a document's dicts and lists, sharing its (immutable) scalars.

    Documents read from MongoDB hold dicts, lists and immutable values
    (strings, numbers, ObjectId, datetime, bytes), so this is a deep copy,
    several times faster than `copy.deepcopy`.

    """
    out = doc.copy()
    for key, value in doc.items():
        kind = type(value)
        if kind is dict or kind is list:
            out[key] = _copy_value(value)
    return out


def _copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy_value(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    return [_copy_value(v) if type(v) in _CONTAINERS else v for v in value]


_CONTAINERS = (dict, list)
