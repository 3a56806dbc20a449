"""The registry of versioned models and of their steps.

One registry serves the whole process (``MigrationRegistry.instance()``), in
the way atom-db keeps one model manager: steps registered with the `step`
decorator, with `register_step`, or loaded from step modules all land here,
and both the lazy path (restoring a document) and the eager one (the
``atomdb-migrate upgrade`` command) plan their chains from it.

"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Union

from .documents import Document
from .exceptions import ChainError, IrreversibleOperationError, MigrateError, UnknownModelError
from .versions import BASE_VERSION, Step, StepFunction, StepGraph, VersionLike, parse_version

if TYPE_CHECKING:
    from .model import VersionedModel
    from .ops import Operation, Operations

BASE = parse_version(BASE_VERSION)

#: A model given by its class or by its ``__model__`` name.
ModelRef = Union[str, "type[VersionedModel]"]


def model_name(model: ModelRef) -> str:
    """Return the ``__model__`` name of a model class, or the name itself."""
    if isinstance(model, str):
        return model
    name = getattr(model, "__model__", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a model class or a __model__ name, got {model!r}")
    return name


class MigrationRegistry:
    """Versioned model classes and the step graph of each model."""

    _instance: ClassVar[MigrationRegistry | None] = None

    def __init__(self) -> None:
        #: Versioned model classes by ``__model__`` name.
        self.models: dict[str, type[VersionedModel]] = {}

        #: Step graphs by ``__model__`` name.
        self.graphs: dict[str, StepGraph] = {}

        #: Former ``__model__`` names (from ``ops.rename_model``), by old name:
        #: the new name. References stored under an old name restore as the
        #: new model.
        self.aliases: dict[str, str] = {}

        #: Counts the changes to the steps, so plans cached elsewhere (see
        #: `plan_cache`) are dropped when a step is added or removed.
        self.generation = 0
        self._plans: dict[tuple[str, str], dict[Any, tuple[Step, ...]]] = {}
        self._plans_generation = -1

    def plan_cache(self, model: str, head: str) -> dict[Any, tuple[Step, ...]]:
        """A model's upgrade plans to `head`, by stored ``__version__`` value as read.

        The lazy path looks a document's plan up here first: one dict lookup
        instead of parsing its version and walking the graph. Emptied
        whenever the steps change.

        """
        if self._plans_generation != self.generation:
            self._plans = {}
            self._plans_generation = self.generation
        plans = self._plans.get((model, head))
        if plans is None:
            plans = self._plans[model, head] = {}
        return plans

    @classmethod
    def instance(cls) -> MigrationRegistry:
        """Return the registry of this process."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    # ------------------------------------------------------------------
    # Models
    # ------------------------------------------------------------------
    def register_model(self, cls: type[VersionedModel]) -> None:
        """Register a versioned model class (done by its metaclass)."""
        self.models[cls.__model__] = cls
        for old, new in self.aliases.items():
            if new == cls.__model__:
                _add_alias_to_serializers(old, cls)

    def former_names(self, model: ModelRef) -> list[str]:
        """The names a model was stored under before a ``rename_model`` step."""
        key = model_name(model)
        return [old for old, new in self.aliases.items() if new == key]

    def model(self, name: ModelRef) -> type[VersionedModel]:
        """Return the versioned model class registered under a name.

        Raises
        ------
        UnknownModelError
            If no versioned model has that name; the error lists the known ones.

        """
        key = model_name(name)
        try:
            return self.models[key]
        except KeyError:
            raise UnknownModelError(key, list(self.models)) from None

    # ------------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------------
    def graph(self, model: ModelRef) -> StepGraph:
        """Return the step graph of a model, empty if it has no steps."""
        key = model_name(model)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = StepGraph(key)
        return graph

    def add_step(self, step: Step) -> Step:
        """Register a step; see `StepGraph.add` for the errors it raises.

        A step renaming a model (``ops.rename_model``) must belong to the
        model's new name; its old name becomes an alias of the new one.

        """
        renames = step.operations.renames() if step.operations is not None else []
        for op in renames:
            if op.new_name != step.model:
                raise ChainError(
                    f"rename_model({op.old_name!r}, {op.new_name!r}) must be a step of "
                    f"{op.new_name!r}, not of {step.model!r}",
                    model=step.model,
                    source=step.source,
                )
        self.graph(step.model).add(step)
        self.generation += 1
        for op in renames:
            self.aliases[op.old_name] = op.new_name
            cls = self.models.get(op.new_name)
            if cls is not None:
                _add_alias_to_serializers(op.old_name, cls)
        return step

    def remove_step(self, step: Step) -> None:
        """Unregister a step."""
        graph = self.graphs.get(step.model)
        if graph is not None:
            graph.remove(step)
            self.generation += 1
        for op in step.operations.renames() if step.operations is not None else []:
            if self.aliases.get(op.old_name) == step.model:
                del self.aliases[op.old_name]

    def plan_upgrade(
        self,
        model: ModelRef,
        start: VersionLike,
        to: VersionLike | None = None,
        *,
        doc_id: Any = None,
    ) -> tuple[Step, ...]:
        """Plan the steps from `start` to `to` (default: the model's version)."""
        target = self.model(model).__version__ if to is None else to
        return self.graph(model).plan_upgrade(start, target, doc_id=doc_id)

    def plan_downgrade(
        self, model: ModelRef, start: VersionLike, to: VersionLike, *, doc_id: Any = None
    ) -> tuple[Step, ...]:
        """Plan the steps, latest first, that take `start` back to `to`."""
        return self.graph(model).plan_downgrade(start, to, doc_id=doc_id)

    def problems(self) -> list[Exception]:
        """Check every chain; return the problems found (empty when all is well).

        Each model's steps must lead, one after the other, to the model's
        current version, and every model named by a step must be registered.

        """
        found: list[Exception] = []
        for name, cls in sorted(self.models.items()):
            if not len(self.graph(name)) and cls.__parsed_version__ != BASE:
                found.append(
                    ChainError(
                        f"is at version {cls.__version__} but has no step, so documents "
                        f"saved before it was versioned (version {BASE}) cannot be read; "
                        f"add a step from {BASE} to {cls.__version__} (with operations = [] "
                        "when their shape is already right)",
                        model=name,
                    )
                )
        for name, graph in sorted(self.graphs.items()):
            if not len(graph):
                continue
            try:
                head = self.model(name).__version__
            except MigrateError as exc:
                found.append(exc)
                continue
            found.extend(graph.problems(head))
            found.extend(
                ChainError(f"step {s.source} ({s.from_version} -> {s.to_version}): {what}")
                for s in graph.steps
                for what in s.unfinished
            )
        return found

    @contextmanager
    def isolated(self) -> Iterator[MigrationRegistry]:
        """Restore the registered steps as they were on exit.

        Useful in tests that register steps of their own. Models registered
        meanwhile stay registered, as their modules stay imported.

        """
        steps = [s for g in self.graphs.values() for s in g.steps]
        aliases = dict(self.aliases)
        try:
            yield self
        finally:
            self.graphs = {}
            self.generation += 1
            self.aliases = aliases
            for s in steps:
                self.add_step(s)


def _add_alias_to_serializers(old: str, cls: type[VersionedModel]) -> None:
    from .model import add_to_serializer_registries

    add_to_serializer_registries(cls, old)


def register_step(
    model: ModelRef,
    from_version: VersionLike,
    to_version: VersionLike,
    upgrade: StepFunction | None = None,
    downgrade: StepFunction | None = None,
    *,
    operations: Iterable[Operation] | None = None,
    schema: dict[str, str] | None = None,
    message: str = "",
    source: str = "",
    registry: MigrationRegistry | None = None,
) -> Step:
    """Register a step without a decorator.

    Parameters
    ----------
    model: type or str
        The versioned model class, or its ``__model__`` name.
    from_version, to_version: str or int
        The versions the step leaves and arrives at.
    upgrade: callable, optional
        Takes the document (a dict); changes it in place and returns None,
        or returns the new dict. May be a coroutine function. Required
        unless `operations` are given.
    downgrade: callable, optional
        The reverse of `upgrade`, with the same contract. A step of
        operations only derives its downgrade from them where they have an
        exact inverse.
    operations: list of Operation, optional
        Declarative operations (`atomdb_migrate.ops`), run before `upgrade`.
        A step made only of operations runs on the server in ``upgrade``.
    schema: dict, optional
        The model's stored fields after the step (see `atomdb_migrate.schema`).
    message: str
        A one-line description; defaults to the first line of `upgrade`'s
        docstring.
    source: str
        Where the step is defined, for messages; defaults to the function's
        module and qualified name.
    registry: MigrationRegistry, optional
        Defaults to the process's registry.

    Returns
    -------
    step: Step
        The registered step.

    """
    name = model_name(model)
    if not message and upgrade is not None:
        doc = (getattr(upgrade, "__doc__", None) or "").strip()
        message = doc.splitlines()[0] if doc else ""
    if operations is None:
        if upgrade is None:
            raise TypeError("a step needs an upgrade function or operations")
        step_ = Step(
            model=name,
            from_version=str(from_version),
            to_version=str(to_version),
            upgrade_fn=upgrade,
            downgrade_fn=downgrade,
            message=message,
            source=source,
            schema=schema,
        )
    else:
        from .ops import Operations

        ops = Operations(operations)
        up, down, reason = _operation_functions(ops, upgrade, downgrade)
        step_ = Step(
            model=name,
            from_version=str(from_version),
            to_version=str(to_version),
            upgrade_fn=up,
            downgrade_fn=down,
            message=message,
            source=source or f"{name} {from_version} -> {to_version} {ops!r}",
            operations=ops,
            server_side=upgrade is None,
            downgrade_reason=reason,
            schema=schema,
        )
    return (registry or MigrationRegistry.instance()).add_step(step_)


def _operation_functions(
    ops: Operations, upgrade: StepFunction | None, downgrade: StepFunction | None
) -> tuple[StepFunction, StepFunction | None, str]:
    """A step's upgrade and downgrade functions from its operations and functions.

    Returns the upgrade function, the downgrade function (None when there is
    none) and, then, why.

    """
    try:
        undo: Operations | None = ops.inverse()
        reason = ""
    except IrreversibleOperationError as exc:
        undo, reason = None, f"cannot be downgraded: {exc}"
    if upgrade is None:
        return ops, undo, reason
    after = upgrade

    async def run_both(doc: Document) -> Document:
        ops(doc)
        return await _call(after, doc)

    down: StepFunction | None = None
    if downgrade is None:
        reason = "has no downgrade function"
    elif undo is not None:
        before, inverse = downgrade, undo

        async def undo_both(doc: Document) -> Document:
            doc = await _call(before, doc)
            inverse(doc)
            return doc

        down = undo_both
    return run_both, down, reason


async def _call(fn: StepFunction, doc: Document) -> Document:
    """Run one step function (sync or async, in place or returning a dict)."""
    result = fn(doc)
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return doc
    if not isinstance(result, dict):
        raise TypeError(f"returned {type(result).__name__}, expected a dict or None")
    return result


def step(
    model: ModelRef,
    from_version: VersionLike,
    to_version: VersionLike,
    *,
    downgrade: StepFunction | None = None,
    message: str = "",
) -> Callable[[StepFunction], Step]:
    """Register the decorated function as the upgrade from one version to the next.

    The decorated name becomes a `Step`, which is still callable; attach the
    reverse with its ``downgrade`` decorator.

    Examples
    --------
    >>> @step(User, "1", "2")
    ... def split_name(doc):
    ...     doc["first"], _, doc["last"] = doc.pop("name").partition(" ")
    >>> @split_name.downgrade
    ... def join_name(doc):
    ...     doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()

    """

    def decorator(fn: StepFunction) -> Step:
        return register_step(model, from_version, to_version, fn, downgrade, message=message)

    return decorator
