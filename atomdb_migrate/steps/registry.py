"""The registry of versioned models and of their steps.

One registry serves the whole process (``MigrationRegistry.instance()``), in
the way atom-db keeps one model manager: steps registered with the `step`
decorator, with `register_step`, or loaded from step modules all land here,
and both the lazy path (restoring a document) and the eager one (the
``atomdb-migrate upgrade`` command) plan their chains from it.

"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.version import Version

from ..core.caches import resettable
from ..exceptions import ChainError, UnknownModelError
from .definition import check_changes as check_changes  # defined here before
from .definition import define_step
from .versions import (
    BASE_VERSION,
    Step,
    StepFunction,
    StepGraph,
    VersionLike,
    base_version,
    parse_version,
)

if TYPE_CHECKING:
    from ..operations.base import Operation
    from ..operations.paths import Embedded

BASE = parse_version(BASE_VERSION)

#: A model given by its class or by its ``__model__`` name.
#: (The registry knows models only by their ``__model__``, ``__version__``
#: and ``__parsed_version__``: it imports nothing of `atomdb_migrate.model`,
#: which imports it.)
ModelRef = str | type


def model_name(model: ModelRef) -> str:
    """Return the ``__model__`` name of a model class, or the name itself."""
    if isinstance(model, str):
        return model
    name = getattr(model, "__model__", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a model class or a __model__ name, got {model!r}")
    return name


def with_class_name(names: Iterable[str], class_name: str) -> list[str]:
    """The ``__model__`` names among `names` whose class is called `class_name`:
    whose last dotted part it is (``app.models.User`` is ``User``'s)."""
    return [name for name in names if name.rpartition(".")[2] == class_name]


#: Told when a former name starts restoring as a model class (the class), or
#: stops (None). `atomdb_migrate.model` listens, to keep atom-db's serializer
#: registries in step; the registry itself knows nothing of atom-db.
AliasListener = Callable[[str, Any], None]

_ALIAS_LISTENERS: list[AliasListener] = []

#: The listeners `atomdb_migrate.core.caches.reset` keeps (the package's own).
_LASTING_LISTENERS: list[AliasListener] = []


def listen_to_aliases(listener: AliasListener, *, lasting: bool = False) -> None:
    """Call `listener(name, cls)` whenever a former name comes to restore as `cls`,
    and `listener(name, None)` when it no longer does.

    A `lasting` listener (the package's own) is kept by
    `atomdb_migrate.core.caches.reset`; the others are dropped by it.

    """
    _ALIAS_LISTENERS.append(listener)
    if lasting:
        _LASTING_LISTENERS.append(listener)


def _drop_passing_listeners() -> None:
    _ALIAS_LISTENERS[:] = [f for f in _ALIAS_LISTENERS if f in _LASTING_LISTENERS]


resettable(f"{__name__}._ALIAS_LISTENERS", _drop_passing_listeners)


#: Describes a model class's stored fields as a step's ``schema`` records
#: them. `atomdb_migrate.schema` gives its `snapshot` when it is imported
#: (the package imports it): the registry knows nothing of atom-db members.
FieldsOf = Callable[[type], dict[str, Any]]

_FIELDS_OF: list[FieldsOf] = []


def describe_fields_with(describe: FieldsOf) -> None:
    """Use `describe` to read a model class's stored fields (see `MigrationRegistry.fields_at`)."""
    _FIELDS_OF.append(describe)


class MigrationRegistry:
    """Versioned model classes and the step graph of each model.

    A model moved to another module or renamed (``ops.rename_model``) keeps
    the steps written under each of its former names: every name resolves,
    through the renames, to the model it is now, whatever the order the
    steps were registered in, and the model's graph holds the steps of all
    its names.

    """

    _instance: ClassVar[MigrationRegistry | None] = None

    def __init__(self) -> None:
        #: Versioned model classes by ``__model__`` name.
        self.models: dict[str, type[Any]] = {}

        #: The steps registered under each ``__model__`` name, as each step
        #: names its model (a former name included).
        self.graphs: dict[str, StepGraph] = {}

        #: Former ``__model__`` names (from ``ops.rename_model``), by old name:
        #: the name it was renamed to. References stored under an old name
        #: restore as the model it resolves to.
        self.aliases: dict[str, str] = {}

        #: The version each former name was renamed away at.
        self._renamed_at: dict[str, Version] = {}

        #: Counts the changes to the steps, the renames and the models: each
        #: model's graph (and the plans it caches) is built again after one.
        self.generation = 0
        self._merged: dict[str, StepGraph] = {}
        self._merged_generation = -1
        self._announced: dict[str, Any] = {}
        self._embedded: dict[tuple[str, Version], Embedded] = {}
        self._embedded_generation = -1

    @classmethod
    def instance(cls) -> MigrationRegistry:
        """Return the registry of this process."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    # ------------------------------------------------------------------
    # Models and their names
    # ------------------------------------------------------------------
    def register_model(self, cls: type[Any]) -> None:
        """Register a versioned model class (done by its metaclass)."""
        self.models[cls.__model__] = cls
        self.generation += 1
        self._announce()

    def resolve(self, name: ModelRef) -> str:
        """The name a model has now: `name` followed through its renames.

        A registered model's name is its own, even if a rename names it as a
        former name too (old and new code in one process).

        """
        key = model_name(name)
        seen = {key}
        while key not in self.models and key in self.aliases:
            key = self.aliases[key]
            if key in seen:
                break
            seen.add(key)
        return key

    def former_names(self, model: ModelRef) -> list[str]:
        """The names a model was stored under before its ``rename_model`` steps,
        the most recent first (so that, of two copies, the newer wins)."""
        key = self.resolve(model)
        found = [n for n in self.aliases if n != key and self.resolve(n) == key]
        return sorted(found, key=lambda n: self._renamed_at.get(n, BASE), reverse=True)

    def name_at(self, model: ModelRef, version: Version) -> str:
        """The name a model's documents are stored under at `version`: the former
        name renamed away at the lowest version above it, or the name it has now."""
        later = [n for n in self.former_names(model) if self._renamed_at.get(n, BASE) > version]
        if not later:
            return self.resolve(model)
        return min(later, key=lambda n: self._renamed_at.get(n, BASE))

    def renamed_at(self, name: str) -> Version | None:
        """The version a former name was renamed away at (None for a name never renamed)."""
        return self._renamed_at.get(name)

    def model(self, name: ModelRef) -> type[Any]:
        """Return the versioned model class registered under a name or a former name.

        Raises
        ------
        UnknownModelError
            If no versioned model has that name; the error lists the known ones.

        """
        key = model_name(name)
        try:
            return self.models[self.resolve(key)]
        except KeyError:
            raise UnknownModelError(key, list(self.models)) from None

    def moved_from(self, model: ModelRef) -> str | None:
        """The name a model's steps were written under, if it seems to have moved.

        That is a name no model has, holding steps, and the only one with the
        model's class name, while the model itself has no step: its module
        changed, and no ``rename_model`` step says so yet.

        """
        key = self.resolve(model)
        if len(self.graph(key)):
            return None
        orphans = [
            name
            for name, graph in self.graphs.items()
            if len(graph) and self.resolve(name) not in self.models
        ]
        found = with_class_name(orphans, key.rpartition(".")[2])
        return found[0] if len(found) == 1 else None

    def _unknown(self, name: str) -> UnknownModelError:
        """The error for steps of a name no model has, with the move it may be."""
        error = UnknownModelError(name, list(self.models))
        alike = with_class_name(self.models, name.rpartition(".")[2])
        moved = [m for m in alike if self.moved_from(m)]
        if len(moved) == 1:
            error = UnknownModelError(name, list(self.models))
            error.args = (
                f"{error.args[0]}. If it moved to {moved[0]!r}, give that model a step with "
                f"ops.rename_model({name!r}, {moved[0]!r}) (revision --autogenerate writes it)",
            )
        return error

    def _alias_classes(self) -> dict[str, Any]:
        """The former names that restore as a registered model, and its class."""
        found: dict[str, Any] = {}
        for old in self.aliases:
            cls = self.models.get(self.resolve(old))
            if cls is not None and old not in self.models:
                found[old] = cls
        return found

    def _announce(self) -> None:
        """Tell the listeners which former names now restore as which class."""
        now = self._alias_classes()
        for name, cls in self._announced.items():
            if now.get(name) is not cls:
                for listener in _ALIAS_LISTENERS:
                    listener(name, None)
        for name, cls in now.items():
            if self._announced.get(name) is not cls:
                for listener in _ALIAS_LISTENERS:
                    listener(name, cls)
        self._announced = now

    # ------------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------------
    def graph(self, model: ModelRef) -> StepGraph:
        """Return the step graph of a model: the steps of its name and of its former names.

        Empty if it has no steps.

        """
        key = self.resolve(model)
        if self._merged_generation != self.generation:
            self._merged = {}
            self._merged_generation = self.generation
        graph = self._merged.get(key)
        if graph is None:
            graph = StepGraph(key)
            if key in self.models:
                graph.base = base_version(self.models[key])
            for name, steps in self.graphs.items():
                if self.resolve(name) == key:
                    for s in steps.steps:
                        graph.add(s)
            self._merged[key] = graph
        return graph

    def fields_at(self, model: ModelRef, version: Version) -> dict[str, Any] | None:
        """A model's stored fields at `version`, as a step's ``schema`` records them.

        The ``schema`` of the step arriving at `version`; failing that, for
        the model's own version, its class's fields. None when neither is
        known (a step below the last one, recording no schema).

        """
        arriving = next((s for s in self.graph(model).steps if s.to_key == version), None)
        if arriving is not None and arriving.schema is not None:
            return arriving.schema
        cls = self.models.get(self.resolve(model))
        if cls is None or cls.__parsed_version__ != version or not _FIELDS_OF:
            return None
        return _FIELDS_OF[-1](cls)

    def embedded_at(self, model: ModelRef, version: Version) -> Embedded:
        """The embedded models on a model's paths at `version` (see `fields_at`):
        what a step's operations create as atom-db stores them. Empty when not known."""
        from ..operations.paths import NO_EMBEDDED, embedded_models

        if self._embedded_generation != self.generation:
            self._embedded = {}
            self._embedded_generation = self.generation
        key = (self.resolve(model), version)
        found = self._embedded.get(key)
        if found is None:
            fields = self.fields_at(model, version)
            found = self._embedded[key] = (
                embedded_models(fields) if fields is not None else NO_EMBEDDED
            )
        return found

    def add_step(self, step: Step) -> Step:
        """Register a step; see `StepGraph.add` for the errors it raises.

        A step renaming a model (``ops.rename_model``) must belong to the
        model's new name; its old name becomes a former name of the new one.
        Two steps of one model leaving the same version are refused, under
        whichever of its names each was written.

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
        raw = self.graphs.get(step.model)
        if raw is None:
            raw = self.graphs[step.model] = StepGraph(step.model)
        raw.add(step)
        before = (dict(self.aliases), dict(self._renamed_at))
        for op in renames:
            self.aliases[op.old_name] = op.new_name
            self._renamed_at[op.old_name] = step.to_key
        self.generation += 1
        try:
            self.graph(step.model)  # the merged graph refuses a duplicate across names
        except ChainError:
            raw.remove(step)
            self.aliases, self._renamed_at = before
            self.generation += 1
            raise
        self._announce()
        return step

    def remove_step(self, step: Step) -> None:
        """Unregister a step."""
        graph = self.graphs.get(step.model)
        if graph is not None:
            graph.remove(step)
        for op in step.operations.renames() if step.operations is not None else []:
            if self.aliases.get(op.old_name) == step.model:
                del self.aliases[op.old_name]
                self._renamed_at.pop(op.old_name, None)
        self.generation += 1
        self._announce()

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

    def problems(self, *, allow_newer: bool = False) -> list[Exception]:
        """Check every chain; return the problems found (empty when all is well).

        Each model's steps must lead, one after the other, to the model's
        current version, and every model named by a step must be registered.
        The steps above a model's version are accepted when the model reads
        newer documents through their downgrades (``__on_newer__ =
        "downgrade"``: the old code of a rollback build, with the newer
        release's step modules), or for every model with `allow_newer`; they
        must then lead from the model's version to the newest one and back
        through downgrade functions (see `StepGraph.newer_problems`).

        """
        found: list[Exception] = []
        for name, cls in sorted(self.models.items()):
            if not len(self.graph(name)) and cls.__parsed_version__ != base_version(cls):
                found.append(no_step_problem(cls))
        named = sorted({self.resolve(n) for n, g in self.graphs.items() if len(g)})
        for name in named:
            if name not in self.models:
                found.append(self._unknown(name))
                continue
            graph = self.graph(name)
            cls = self.models[name]
            newer = allow_newer or reads_newer(cls)
            found.extend(graph.problems(cls.__version__, newer=newer))
            found.extend(
                ChainError(f"step {s.source} ({s.from_version} -> {s.to_version}): {what}")
                for s in graph.steps
                for what in s.unfinished
            )
        return found

    @contextmanager
    def isolated(self) -> Iterator[MigrationRegistry]:
        """Restore the registered steps and renames as they were on exit.

        Useful in tests that register steps of their own. Models registered
        meanwhile stay registered, as their modules stay imported; former
        names added meanwhile stop restoring as their model.

        """
        steps = [s for g in self.graphs.values() for s in g.steps]
        try:
            yield self
        finally:
            self.graphs = {}
            self.aliases = {}
            self._renamed_at = {}
            self.generation += 1
            for s in steps:
                self.add_step(s)
            self._announce()


def register_step(
    model: ModelRef,
    from_version: VersionLike,
    to_version: VersionLike,
    upgrade: StepFunction | None = None,
    downgrade: StepFunction | None = None,
    *,
    operations: Iterable[Operation] | None = None,
    schema: dict[str, str] | None = None,
    changes: Iterable[str] | None = None,
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
    changes: list of str, optional
        The fields (dotted paths) the upgrade function may change. A
        version-aware filter (`atomdb_migrate.version_filter`) lets
        conditions on every other field through the step; without it, it
        refuses them all.
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

    Raises
    ------
    StepDefinitionError
        For an argument refused (`atomdb_migrate.steps.definition` checks them).
    ChainError
        If the step does not fit the model's chain (see `MigrationRegistry.add_step`).

    """
    owner = registry or MigrationRegistry.instance()
    made = define_step(
        model_name(model),
        from_version,
        to_version,
        upgrade,
        downgrade,
        operations=operations,
        schema=schema,
        changes=changes,
        message=message,
        source=source,
        embedded_at=owner.embedded_at,
    )
    return owner.add_step(made)


def step(
    model: ModelRef,
    from_version: VersionLike,
    to_version: VersionLike,
    *,
    downgrade: StepFunction | None = None,
    message: str = "",
    changes: Iterable[str] | None = None,
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

    ``changes=["first", "last", "name"]`` says which fields the function
    may change, so that a version-aware filter on any other field can be
    asked of documents stored before the step (`version_filter`).

    """

    def decorator(fn: StepFunction) -> Step:
        return register_step(
            model, from_version, to_version, fn, downgrade, message=message, changes=changes
        )

    return decorator


def no_step_problem(cls: type[Any]) -> ChainError:
    """The problem of a model above its base (version 0, or its
    ``__base_version__``) with no step at all, and the command that writes one."""
    base, name = base_version(cls), cls.__model__
    saved = "saved before it was versioned " if base == BASE else "stored at its base "
    return ChainError(
        f"is at version {cls.__version__} but has no step, so documents {saved}"
        f"(version {base}) cannot be read; add a step from {base} to {cls.__version__} "
        "(with operations = [] when their shape is already right): "
        f"`atomdb-migrate revision --model {name} -m ...` writes it",
        model=name,
        from_version=str(base),
        to_version=cls.__version__,
    )


def reads_newer(cls: type[Any]) -> bool:
    """Whether a model reads documents newer than its code through the downgrades of
    the steps above its version (``__on_newer__ = "downgrade"``)."""
    return getattr(cls, "__on_newer__", None) == "downgrade"
