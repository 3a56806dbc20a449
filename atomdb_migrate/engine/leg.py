"""A leg of a run: one model's documents on their way to one version.

`Runner.run` takes a model's documents to the target in one `Leg`; the
documents on the way to the version a server step starts from, and the
sweep after the server was replaced, go in legs of their own
(`Leg.toward`), each counted in a report of its own. The stream
(`atomdb_migrate.engine.stream`), the server steps
(`atomdb_migrate.engine.server_steps`) and the survey take a leg.

"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from packaging.version import Version

from ..exceptions import ChainError, InvalidVersionError, MigrateError, short_repr
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry
from ..steps.versions import Census, Plan, Step, StepGraph, parse_version, stored_version
from .options import Direction
from .report import ModelReport


@dataclass
class Leg:
    """One model's documents on their way to `target`, and the report that counts them."""

    #: The versioned model.
    cls: type[VersionedModel]
    #: Its collection, as the run reads it.
    collection: Any
    #: The version this leg takes the documents to.
    target: Version
    #: Which way, and with which functions of the steps.
    direction: Direction
    #: The model's steps.
    graph: StepGraph
    #: What this leg did.
    report: ModelReport
    #: Only these documents (their ``_id``, to retry the ones a run recorded
    #: as failed); None: all.
    ids: list[Any] | None = None
    #: Only the documents whose ``_id`` meets this condition (a range a worker
    #: claimed, `atomdb_migrate.engine.ranges.Range.condition`); None: all.
    bounds: dict[str, Any] | None = None
    #: The documents counted as skipped, by `atomdb_migrate.engine.stream.id_key`
    #: of their ``_id``: the final sweep, when there is one, counts those it
    #: writes as upgraded.
    skipped: dict[bytes, Any] = field(default_factory=dict)

    def plan_for(self, raw: Any) -> Plan:
        """The plan of a document stored at `raw` (its ``__version__``, as stored)."""
        return self.graph.plan(
            raw, self.target, head=self.cls.__parsed_version__, downgrade=self.direction.down
        )

    def census(self, rows: Iterable[tuple[Any, int]]) -> Census:
        """The stored versions `rows` (value and count) bucketed by their plans
        (`StepGraph.census`, as `plan_for` plans each)."""
        return self.graph.census(
            rows, self.target, head=self.cls.__parsed_version__, downgrade=self.direction.down
        )

    def scope(self) -> dict[str, Any]:
        """The condition on the documents the leg takes: none, the `ids`, the `bounds`,
        or both (a new dict)."""
        ids = None if self.ids is None else {"_id": {"$in": list(self.ids)}}
        if self.bounds is None:
            return ids or {}
        bounds = {"_id": dict(self.bounds)}
        return bounds if ids is None else {"$and": [ids, bounds]}

    def toward(self, target: Version, report: ModelReport) -> Leg:
        """A leg of the same documents to `target`, counted in `report`."""
        return replace(self, target=target, report=report, skipped={})


def target_version(
    cls: type[VersionedModel], to: Any, direction: Direction, registry: MigrationRegistry
) -> Version:
    """The version a run takes a model's documents to, checked.

    Raises
    ------
    ChainError
        If `to` is past the model's version, or (downgrading) a step on
        the way back has no downgrade function: before anything is read.

    """
    head = cls.__parsed_version__
    if to is None and not direction.down:
        return head
    target = parse_version(to, model=cls.__model__, what="--to")
    if target > head:
        raise ChainError(
            f"cannot {direction.name} to {to}: it is past the model's version "
            f"{cls.__version__}"
            + (
                "; run downgrade with the code of a version at least as new"
                if direction.down
                else ""
            ),
            model=cls.__model__,
        )
    if direction.down:
        registry.graph(cls).plan_downgrade(head, target)
    return target


def label(step: Step) -> str:
    """A step as the report names it: ``"1 -> 2"``."""
    return f"{step.from_version} -> {step.to_version}"


def version_name(raw: Any) -> str:
    """A stored version value as shown: its canonical form, or its repr if it is none."""
    try:
        return str(stored_version(raw))
    except MigrateError:
        return short_repr(raw, 40)


def stored_or_none(raw: Any) -> Version | None:
    """A stored ``__version__`` value parsed (None, if it is not a version)."""
    try:
        return stored_version(raw)
    except InvalidVersionError:
        return None
