"""Reads of legacy documents: each model's chains compiled once per stored version.

Restoring a document behind the model's version runs the chain of steps
from its stored version. Finding that chain through the registry and the
graph, and copying the whole document for it, cost more than the steps
themselves for small ones; here the chain is found and compiled
(`atomdb_migrate.steps.chain.compile_read`) once per model and stored
``__version__`` value, and kept until the registry changes.

Only reads that write nothing back come here: a write-back needs to know
which fields the steps looked at (`atomdb_migrate.steps.chain.apply_chain`).

"""

from __future__ import annotations

from typing import Any

from atomdb.base import is_primitive_member

from ..core.caches import resettable
from ..core.storage import REF_KEY
from ..steps.chain import ReadChain, compile_read
from ..steps.registry import MigrationRegistry


class _Compiled:
    """The chains compiled so far, for one registry at one generation."""

    def __init__(self) -> None:
        #: The registry the chains were compiled for, and its generation then.
        self.registry: MigrationRegistry | None = None
        self.generation = -1
        #: The compiled chain by (model class, type and value of the stored
        #: version); None where the plan is not a chain to run.
        self.chains: dict[tuple[type, type, Any], ReadChain | None] = {}

    def clear(self) -> None:
        self.registry = None
        self.chains.clear()

    def renew(self, registry: MigrationRegistry) -> None:
        """Forget the chains compiled for another registry or generation."""
        self.chains.clear()
        self.registry, self.generation = registry, registry.generation


#: Marks a key not compiled yet.
_UNKNOWN: Any = object()

_COMPILED = _Compiled()
resettable(f"{__name__}._COMPILED", _COMPILED.clear)


__all__ = ["ReadChain", "read_chain"]


def read_chain(cls: Any, raw: Any) -> ReadChain | None:
    """The compiled chain taking a `cls` document stored at `raw` to the model's version.

    None when there is none to run (a document at the current version,
    newer, invalid, with no chain to the model's version, or a stored value
    that cannot be a key): the caller then takes the general path, which
    also raises the errors.

    """
    registry = MigrationRegistry._instance or MigrationRegistry.instance()
    compiled = _COMPILED
    if compiled.registry is not registry or compiled.generation != registry.generation:
        compiled.renew(registry)
    key = (cls, type(raw), raw)
    try:
        found: ReadChain | None = compiled.chains.get(key, _UNKNOWN)
    except TypeError:  # a stored value that cannot be a key: a document, a list
        return None
    if found is _UNKNOWN:
        found = compiled.chains[key] = _compile(cls, registry, raw)
    return found


def _compile(cls: Any, registry: MigrationRegistry, raw: Any) -> ReadChain | None:
    head = cls.__parsed_version__
    plan = registry.graph(cls).plan(raw, head, head=head)
    if plan.kind != "migrate":
        return None
    return compile_read(plan.steps, restored_fields(cls))


#: The members atom-db's restore never sets.
_NOT_RESTORED = (REF_KEY, "__restored__")


def restored_fields(cls: Any) -> frozenset[str]:
    """The fields whose stored value `cls`'s restore may change in place.

    atom-db's generated ``__restorestate__`` assigns the stored value of a
    primitive member as it is (``is_primitive_member``: a ``Str``, an
    ``Int``, a ``List(str)``..., decided from the member alone, unresolved
    types included, as when the function was generated); every other
    member's value goes through ``unflatten``, a related model's restore or
    the member's own ``unflatten`` function, which may change it. A field
    of no member is never read.

    """
    found = set()
    for name, member in cls.members().items():
        if name in _NOT_RESTORED:
            continue
        if "unflatten" in (member.metadata or {}) or not is_primitive_member(member):
            found.add(name)
    return frozenset(found)
