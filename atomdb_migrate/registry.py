"""The registry of versioned models and of their steps.

One registry serves the whole process (``MigrationRegistry.instance()``), in
the way atom-db keeps one model manager: steps registered with the `step`
decorator, with `register_step`, or loaded from step modules all land here,
and both the lazy path (restoring a document) and the eager one (the
``atomdb-migrate upgrade`` command) plan their chains from it.

"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Union

from .exceptions import MigrateError, UnknownModelError
from .versions import Step, StepFunction, StepGraph, VersionLike

if TYPE_CHECKING:
    from .model import VersionedModel

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
        """Register a step; see `StepGraph.add` for the errors it raises."""
        self.graph(step.model).add(step)
        return step

    def remove_step(self, step: Step) -> None:
        """Unregister a step."""
        graph = self.graphs.get(step.model)
        if graph is not None:
            graph.remove(step)

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
        for name, graph in sorted(self.graphs.items()):
            if not len(graph):
                continue
            try:
                head = self.model(name).__version__
            except MigrateError as exc:
                found.append(exc)
                continue
            found.extend(graph.problems(head))
        return found

    @contextmanager
    def isolated(self) -> Iterator[MigrationRegistry]:
        """Restore the registered steps as they were on exit.

        Useful in tests that register steps of their own. Models registered
        meanwhile stay registered, as their modules stay imported.

        """
        steps = [s for g in self.graphs.values() for s in g.steps]
        try:
            yield self
        finally:
            self.graphs = {}
            for s in steps:
                self.add_step(s)


def register_step(
    model: ModelRef,
    from_version: VersionLike,
    to_version: VersionLike,
    upgrade: StepFunction,
    downgrade: StepFunction | None = None,
    *,
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
    upgrade: callable
        Takes the document (a dict); changes it in place and returns None,
        or returns the new dict. May be a coroutine function.
    downgrade: callable, optional
        The reverse of `upgrade`, with the same contract.
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
    if not message:
        doc = (getattr(upgrade, "__doc__", None) or "").strip()
        message = doc.splitlines()[0] if doc else ""
    step_ = Step(
        model=model_name(model),
        from_version=str(from_version),
        to_version=str(to_version),
        upgrade_fn=upgrade,
        downgrade_fn=downgrade,
        message=message,
        source=source,
    )
    return (registry or MigrationRegistry.instance()).add_step(step_)


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
