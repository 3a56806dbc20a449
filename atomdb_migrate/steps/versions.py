"""Steps, and the graph that orders a model's steps into chains.

Nothing here touches MongoDB: the graph is tested with in-memory steps only.

A model's steps form a chain ``0 -> 1 -> 2 -> ...``: each step leaves one
version for a greater one. To upgrade a document the graph walks from the
document's version, one step at a time, to the model's current version (the
*head*); to downgrade it walks back along the steps' downgrade functions.

"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any, Literal, NoReturn

from packaging.version import Version

from ..core.documents import Document
from ..core.versions import BASE_VERSION as BASE_VERSION  # the version values, re-exported
from ..core.versions import MAX_VERSION_LENGTH as MAX_VERSION_LENGTH
from ..core.versions import VersionLike as VersionLike
from ..core.versions import base_version as base_version
from ..core.versions import canonical as canonical
from ..core.versions import known_forms
from ..core.versions import parse_version as parse_version
from ..core.versions import stored_version as stored_version
from ..core.versions import version_forms as version_forms
from ..core.versions import version_key as version_key
from ..exceptions import (
    BelowBaseError,
    ChainError,
    CycleError,
    DuplicateStepError,
    GapError,
    InvalidVersionError,
    MigrateError,
    MissingDowngradeError,
    StepBeyondHeadError,
)
from .chain import StepFunction as StepFunction
from .chain import apply_chain as apply_chain  # re-exported: chains ran here before
from .chain import run_chain as run_chain


def describe_function(fn: Callable[..., Any]) -> str:
    """Name a function by module and qualified name, for messages."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}"


#: The fields of a `Step` that may be set once it is made: its functions (the
#: `Step.downgrade` decorator attaches one; a test may stand in for one).
REPLACEABLE = frozenset({"upgrade_fn", "downgrade_fn"})


@dataclass(eq=False)
class Step:
    """One step of one model: from a version to the next.

    A `Step` is callable: calling it calls its upgrade function, so a
    decorated function can still be called directly in tests.

    A step is made whole, checked, by `atomdb_migrate.steps.definition`
    (`register_step`, the `step` decorator and the loader all go through it)
    and is frozen after: setting any field but its functions (`REPLACEABLE`)
    raises `dataclasses.FrozenInstanceError`. Steps compare and hash by
    identity.

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

    #: The step's declarative operations (`atomdb_migrate.ops.StepOperations`),
    #: run before the upgrade function given with them, if any.
    operations: Any = None

    #: Whether the step is only operations, so ``upgrade`` may run it on the server.
    server_side: bool = False

    #: Why the step has no downgrade, when its operations have no exact inverse.
    downgrade_reason: str = ""

    #: The model's stored fields after the step, by name: their member types
    #: (a step module's ``schema``; see `atomdb_migrate.schema`).
    schema: dict[str, str] | None = None

    #: The fields a Python step may change (a step module's ``changes``), or
    #: None when it does not say: then a version-aware filter refuses every
    #: field through it (see `atomdb_migrate.queries`).
    changes: tuple[str, ...] | None = None

    #: The fields a Python step declares it carries from one path to another
    #: (``changes`` given as a mapping): code one version behind saves a
    #: change to them through the step (see `atomdb_migrate.model.rolling`).
    maps: tuple[tuple[str, str], ...] = ()

    #: What is left to write in a step module made by ``atomdb-migrate
    #: revision`` (a function still raising the template's error).
    unfinished: tuple[str, ...] = ()

    #: The parsed versions, for ordering.
    from_key: Version = field(init=False, repr=False)
    to_key: Version = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The versions in canonical form, parsed for ordering, and the source.
        start = parse_version(self.from_version, model=self.model, what="step version")
        end = parse_version(self.to_version, model=self.model, what="step version")
        self.from_version, self.to_version = str(start), str(end)
        if not self.source:
            self.source = describe_function(self.upgrade_fn)
        self.from_key = start
        self.to_key = end  # the last field set: the step is made

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in REPLACEABLE and "to_key" in self.__dict__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

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


#: What to do with a document stored at some version (see `StepGraph.plan`).
PlanKind = Literal["current", "migrate", "newer", "beyond", "invalid", "missing"]


@dataclass(frozen=True)
class Plan:
    """What to do with documents stored at one ``__version__`` value.

    - ``current``: at the target already;
    - ``migrate``: take them through `steps` (upgrade or downgrade functions);
    - ``newer``: newer than the code's version;
    - ``beyond``: past the target the other way (above ``--to`` on an
      upgrade, below it on a downgrade), to be left alone;
    - ``invalid``: the stored value is no version (`error` says why);
    - ``missing``: no chain of steps leads to the target (`error` says why).

    """

    kind: PlanKind
    #: The steps to run, in order (``migrate`` only).
    steps: tuple[Step, ...] = ()
    #: Why documents at this version cannot be migrated (``invalid`` and ``missing``).
    error: MigrateError | None = None
    #: The stored version (None when it is invalid).
    stored: Version | None = None
    #: Raises `error` again, naming a document.
    fail: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    def raise_for(self, doc_id: Any) -> NoReturn:
        """Raise the plan's error, naming the document."""
        if self.fail is not None:
            self.fail(doc_id)
        assert self.error is not None
        raise self.error


#: The kinds of documents behind the target: a chain takes them there
#: (``migrate``), or none does (``missing``).
PENDING: tuple[PlanKind, ...] = ("migrate", "missing")


@dataclass(frozen=True)
class CensusRow:
    """One stored ``__version__`` value, the documents holding it, and their plan."""

    #: The value as stored (None for no ``__version__``), in its BSON form.
    raw: Any
    #: The documents stored with it.
    count: int
    #: What to do with them (`StepGraph.plan`).
    plan: Plan

    @property
    def version(self) -> Version:
        """The stored version, parsed (every plan has one but ``invalid``)."""
        if self.plan.stored is None:
            raise self.plan.error or ValueError(f"no version: {self.raw!r}")
        return self.plan.stored


@dataclass(frozen=True)
class Census:
    """A model's stored versions bucketed by plan kind (`StepGraph.census`).

    The one answer to "how many documents are current, pending, newer,
    beyond the target, or no version at all", for ``upgrade``, ``status``,
    the query guard and version-aware queries alike.

    """

    #: Each stored value with its count and plan, in the order counted.
    rows: tuple[CensusRow, ...]

    def of(self, *kinds: PlanKind) -> list[CensusRow]:
        """The rows whose plan is of one of `kinds`, in order."""
        return [row for row in self.rows if row.plan.kind in kinds]

    def count(self, *kinds: PlanKind) -> int:
        """The documents whose plan is of one of `kinds`."""
        return sum(row.count for row in self.of(*kinds))

    @property
    def current(self) -> int:
        """Documents at the target already (in any of its BSON forms)."""
        return self.count("current")

    @property
    def pending(self) -> int:
        """Documents behind the target: a chain takes them there, or none does (`PENDING`)."""
        return self.count(*PENDING)

    @property
    def newer(self) -> int:
        """Documents newer than the code's version."""
        return self.count("newer")

    @property
    def beyond(self) -> int:
        """Documents past the target the other way, left alone."""
        return self.count("beyond")

    @property
    def invalid(self) -> int:
        """Documents whose stored value is no version."""
        return self.count("invalid")

    @property
    def off_target(self) -> int:
        """Documents not at the target, whatever their plan."""
        return sum(row.count for row in self.rows if row.plan.kind != "current")

    @property
    def chain(self) -> tuple[Step, ...]:
        """The longest chain a stored value takes (the first, of equals): on one
        model's line of versions, it holds every other one."""
        chain: tuple[Step, ...] = ()
        for row in self.rows:
            if len(row.plan.steps) > len(chain):
                chain = row.plan.steps
        return chain

    def through(self) -> dict[Step, int]:
        """The documents each step takes, in the order the rows first reach it."""
        found: dict[Step, int] = {}
        for row in self.rows:
            for s in row.plan.steps:
                found[s] = found.get(s, 0) + row.count
        return found


class StepGraph:
    """The steps of one model, keyed by the version each leaves.

    Parameters
    ----------
    model: str
        The ``__model__`` name the steps belong to.

    """

    def __init__(self, model: str) -> None:
        self.model = model
        #: The version the chain starts at: the model's ``__base_version__``
        #: (set by the registry), 0 when it declares none.
        self.base = parse_version(BASE_VERSION)
        self._by_from: dict[Version, Step] = {}
        self._plans: dict[tuple[Version, Version], tuple[Step, ...]] = {}
        self._decided: dict[tuple[Any, Version, Version, bool], Plan] = {}

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
        self._decided.clear()

    def remove(self, step: Step) -> None:
        """Remove a step, if it is registered."""
        if self._by_from.get(step.from_key) is step:
            del self._by_from[step.from_key]
            self._plans.clear()
            self._decided.clear()

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

    def steps_to(self, version: Version) -> list[Step]:
        """The steps up to `version`: those arriving at it or below, in order."""
        return [s for s in self.steps if s.to_key <= version]

    def steps_above(self, version: Version) -> list[Step]:
        """The steps from `version` up: those leaving it or a greater version, in
        order (the steps a downgrade to `version` undoes, run latest first)."""
        return [s for s in self.steps if s.from_key >= version]

    def known_versions(self, *more: Version) -> list[Version]:
        """The versions the chain knows, in order: version 0, every version a
        step leaves or arrives at, and `more` (a model's own version)."""
        found = {parse_version(BASE_VERSION), *more}
        for s in self._by_from.values():
            found.update((s.from_key, s.to_key))
        return sorted(found)

    # ------------------------------------------------------------------
    # Planning
    # ------------------------------------------------------------------
    def plan(self, raw: Any, target: Version, *, head: Version, downgrade: bool = False) -> Plan:
        """What to do with documents whose stored ``__version__`` value is `raw`.

        The one answer to that question, for reads, ``upgrade``,
        ``downgrade``, ``status`` and ``check``; decided once per stored
        value (in its BSON form), target and direction.

        Parameters
        ----------
        raw: Any
            The ``"__version__"`` value as read (None when there is none).
        target: Version
            The version documents are taken to.
        head: Version
            The model's version: documents above it are newer than the code.
        downgrade: bool
            Take documents down to `target` through the downgrade functions.

        """
        key = (version_key(raw), target, head, downgrade)
        found = self._decided.get(key)
        if found is None:
            found = self._decided[key] = self._decide(raw, target, head, downgrade)
        return found

    def _decide(self, raw: Any, target: Version, head: Version, downgrade: bool) -> Plan:
        try:
            stored = stored_version(raw, model=self.model)
        except InvalidVersionError as exc:
            return Plan(
                "invalid",
                error=exc,
                fail=lambda doc_id: stored_version(raw, model=self.model, doc_id=doc_id),
            )
        if stored == target:
            return Plan("current", stored=stored)
        if stored > head:
            return Plan("newer", stored=stored)
        if (stored < target) if downgrade else (stored > target):
            return Plan("beyond", stored=stored)
        chain = self.plan_downgrade if downgrade else self.plan_upgrade
        try:
            return Plan("migrate", chain(stored, target), stored=stored)
        except ChainError as exc:
            return Plan(
                "missing",
                error=exc,
                stored=stored,
                fail=lambda doc_id: chain(stored, target, doc_id=doc_id),
            )

    def census(
        self,
        rows: Iterable[tuple[Any, int]],
        target: Version,
        *,
        head: Version,
        downgrade: bool = False,
    ) -> Census:
        """The stored versions, bucketed by what to do with them (see `plan`).

        Parameters
        ----------
        rows: iterable of (Any, int)
            Each stored ``"__version__"`` value as read (None when there is
            none) and the documents holding it, as `count_versions` gives them.
        target, head, downgrade:
            As for `plan`.

        """
        return Census(
            tuple(
                CensusRow(raw, n, self.plan(raw, target, head=head, downgrade=downgrade))
                for raw, n in rows
            )
        )

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
                if begin < self.base:
                    raise BelowBaseError(
                        self.model,
                        str(begin),
                        str(end),
                        str(current),
                        str(self.base),
                        doc_id=doc_id,
                    )
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

    def problems(self, head: VersionLike, *, newer: bool = False) -> list[Exception]:
        """Check that every step leads, step by step, to `head`.

        Parameters
        ----------
        head: str or int
            The model's version.
        newer: bool
            Accept the steps from `head` up, as the old code of a rollback
            ships them with the new step modules; they are checked as a
            rollback needs them (see `newer_problems`).

        Returns
        -------
        problems: list of ChainError
            One error per step from which `head` cannot be reached, and one
            when no step leaves the chain's `base` (below `head`); empty when
            the chain is complete. The steps leaving a version below the
            base are not checked: no document there is stored any more.

        """
        end = parse_version(head, model=self.model)
        found: list[Exception] = []
        seen: set[str] = set()
        if newer:
            found = self.newer_problems(end)
            seen = {str(exc) for exc in found}
        start = self.start_problem(end)
        if start is not None:
            found.append(start)
        for step in self.steps:
            if (newer and step.from_key >= end) or step.from_key < self.base:
                continue
            try:
                if step.to_key > end:
                    raise StepBeyondHeadError(
                        self.model,
                        step.from_version,
                        step.to_version,
                        str(end),
                        step.source,
                        above=step.from_key >= end,
                    )
                self.plan_upgrade(step.from_key, end)
            except (GapError, StepBeyondHeadError) as exc:
                if str(exc) not in seen:
                    seen.add(str(exc))
                    found.append(exc)
        return found

    def start_problem(self, head: Version) -> ChainError | None:
        """The chain's gap at its start: no step leaves its `base` (version 0, or
        the model's ``__base_version__``), below `head`. None when there is none.

        Documents stored at the base (at 0: saved before the model was
        versioned) could then not be read. With no step at all, the registry
        says so in its own words (`MigrationRegistry.problems`).

        """
        if not len(self) or self.base >= head or self.base in self._by_from:
            return None
        end = min([k for k in self._by_from if k > self.base] + [head])
        return ChainError(
            f"documents at version {self.base} cannot be upgraded to {head}: no step "
            f"leaves version {self.base}; add a step from {self.base} to {end} "
            f'(from_version = "{self.base}", to_version = "{end}", with operations = [] '
            f"when their shape is already right), or, if no document below version {end} "
            f"is stored any more (its steps were squashed), declare "
            f'__base_version__ = "{end}" on the model',
            model=self.model,
            from_version=str(self.base),
            to_version=str(end),
        )

    def newer_problems(self, head: VersionLike) -> list[Exception]:
        """Check the steps from `head` up as a rollback needs them.

        The old code, at `head`, ships with the newer release's steps so that
        it reads newer documents through their downgrades, and so that a
        downgrade takes them back. So from `head` and from every version
        those steps leave or reach, the chain must reach the newest version
        (the newer code's: no gap), and come back down to `head` through
        downgrade functions (every step above has one).

        Returns
        -------
        problems: list of ChainError
            `GapError` or `MissingDowngradeError`, one per problem found;
            empty when there is no step above `head` or all is well.

        """
        end = parse_version(head, model=self.model)
        above = [s for s in self.steps if s.from_key >= end]
        if not above:
            return []
        latest = max(s.to_key for s in above)
        versions = sorted({end} | {s.from_key for s in above} | {s.to_key for s in above})
        found: list[Exception] = []
        seen: set[str] = set()

        def add(exc: Exception) -> None:
            if str(exc) not in seen:
                seen.add(str(exc))
                found.append(exc)

        for step in above:
            if step.downgrade_fn is None:
                add(
                    MissingDowngradeError(
                        self.model,
                        step.from_version,
                        step.to_version,
                        step.source,
                        reason=step.downgrade_reason,
                    )
                )
        for version in versions:
            try:
                self.plan_upgrade(version, latest)
            except GapError as exc:
                add(exc)
            try:
                self.plan_downgrade(version, end)
            except (GapError, MissingDowngradeError) as exc:
                add(exc)
        return found


def graph_forms(graph: StepGraph, *versions: Version) -> list[Any]:
    """The known forms (`known_forms`) of `versions` and of every version a step of
    `graph` names: the values a survey counts one by one on the version index."""
    found = set(versions)
    for s in graph.steps:
        found.update((s.from_key, s.to_key))
    return known_forms(sorted(found))
