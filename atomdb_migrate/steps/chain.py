"""Running a chain of steps on a document: the one contract of a step function.

A step function takes the document (a dict), changes it in place and returns
None, or returns the new dict; it may be a coroutine function. `run_chain`
is the one place that calls step functions and checks what they give back,
whether a step is a plain function, its operations, or its operations
followed by its function: whatever else it returns is a `StepResultError`,
whatever it raises a `StepFailedError`.

`compile_read` compiles a chain once for the reads that write nothing back
(see `atomdb_migrate.model.reads`).

Nothing here touches MongoDB. The steps are anything with a `Step`'s names
(`ChainStep`): this module sits below `atomdb_migrate.steps.versions`, which
re-exports its names.

"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any, Protocol

from ..core.documents import (
    Document,
    LazyCopy,
    StepDocument,
    copy_document,
    copy_value,
    is_container,
    own_flattened,
)
from ..core.storage import VERSION_KEY
from ..exceptions import StepFailedError, StepResultError

#: A step function: takes the document, changes it in place and returns None,
#: or returns the new document; it may be a coroutine function.
StepFunction = Callable[[Document], Document | Awaitable[Document | None] | None]


class ChainStep(Protocol):
    """What running a step reads of it (a `atomdb_migrate.steps.versions.Step`)."""

    @property
    def model(self) -> str: ...

    @property
    def from_version(self) -> str: ...

    @property
    def to_version(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def upgrade_fn(self) -> StepFunction: ...

    @property
    def downgrade_fn(self) -> StepFunction | None: ...


async def run_chain(
    steps: Sequence[ChainStep],
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
    __tracebackhide__ = True  # pytest shows the step's frame, not this one
    watched = doc if isinstance(doc, StepDocument) else None
    if watched is not None:
        watched.touched.add("_id")  # the check below depends on it
    # The document's own dict methods: the check is no step's look.
    has_id = dict.__contains__(doc, "_id")
    doc_id = dict.get(doc, "_id")
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
            if result is not doc and watched is not None:
                # A new dict: what it leaves out depends on every field.
                watched.look_at_everything()
            doc = result
        # Identity first: ObjectId's != is a Python method, and the step
        # almost always leaves the very same object.
        if has_id and (new_id := dict.get(doc, "_id")) is not doc_id and new_id != doc_id:
            raise StepResultError(
                f"changed or removed the document's _id (now {new_id!r})",
                **_where(step, doc_id, downgrade),
            )
        doc[VERSION_KEY] = end
    return doc


async def apply_chain(
    steps: Sequence[ChainStep],
    state: Document,
    *,
    downgrade: bool = False,
    track: bool = True,
) -> tuple[Document, Iterable[str] | None]:
    """Run a chain on a stored document without changing it.

    With `track` False (nothing will be written, so nobody needs to know
    what the steps looked at), the steps run on a deep copy: recording
    each access costs more than the copy for small steps.

    Returns
    -------
    doc: dict
        The document at the end of the chain (tracked: values no step
        reached are shared with `state`; untracked: nothing is).
    fields: set of str or None
        The top-level fields the steps looked at; None when they looked at
        the whole document (see `StepDocument`), or when not tracked.

    """
    __tracebackhide__ = True
    if not track:
        return await run_chain(steps, copy_document(state), downgrade=downgrade), None
    watched = StepDocument(state)
    doc = await run_chain(steps, watched, downgrade=downgrade)
    if doc is watched:
        doc = watched.result()
    return doc, watched.fields()


#: A chain compiled for reads (`compile_read`): takes a stored document,
#: leaves it unchanged, returns it at the chain's end.
ReadChain = Callable[[Document], Awaitable[Document]]


def compile_read(steps: Sequence[ChainStep], restored: Collection[str] | None = None) -> ReadChain:
    """A chain compiled once for reads that write nothing back.

    A chain of declarative operations only, each of which reaches nothing
    but the top-level fields it names (`StepOperations.confined_fields`),
    copies those fields alone and shares the rest with the stored document.
    Any other chain runs on a `LazyCopy`: a shallow copy whose nested
    dicts and lists are copied the first time a step reaches them, cheaper
    than a deep copy as measured (benchmarks/notes.md). Either way the
    stored document is never changed; the result may share values no step
    reached with it.

    A step function replaced after compiling (as a test may do) makes the
    chain run on a `LazyCopy`, which serves any step.

    `restored` names the top-level fields whose values the model's restore
    hands to anything but a plain assignment: only a shared value under one
    of them is checked for what the restore changes in place
    (`own_flattened`). None: every field.

    """
    chain = tuple(steps)
    keys = None if restored is None else tuple(sorted(restored))
    fields: set[str] = set()
    for step in chain:
        found = _confined_fields(step)
        if found is None:
            return partial(_read_lazily, chain, keys)
        fields |= found
    functions = tuple(step.upgrade_fn for step in chain)
    return partial(_read_confined, chain, functions, tuple(sorted(fields)), keys)


def _confined_fields(step: ChainStep) -> set[str] | None:
    """The top-level fields a step made only of confined operations reaches (None:
    it has a function, or an operation that may reach anything)."""
    ops: Any = getattr(step, "operations", None)
    fn: Any = step.upgrade_fn
    if ops is None or fn is not ops:
        return None
    found: set[str] | None = ops.confined_fields()
    return found


async def _read_lazily(
    chain: tuple[ChainStep, ...], restored: tuple[str, ...] | None, state: Document
) -> Document:
    """Run a chain on a copy made as the steps reach the document."""
    __tracebackhide__ = True
    lazy = LazyCopy.of(state)
    doc = await run_chain(chain, lazy)
    doc = lazy.result() if doc is lazy else doc
    own_flattened(doc, state, restored)
    return doc


async def _read_confined(
    chain: tuple[ChainStep, ...],
    functions: tuple[StepFunction, ...],
    fields: tuple[str, ...],
    restored: tuple[str, ...] | None,
    state: Document,
) -> Document:
    """Run a chain of confined operations on a copy of the fields they reach."""
    __tracebackhide__ = True
    for step, fn in zip(chain, functions, strict=True):
        if step.upgrade_fn is not fn:
            return await _read_lazily(chain, restored, state)
    doc = state.copy() if type(state) is dict else dict(state.items())
    for key in fields:
        value = doc.get(key)
        if value is not None and is_container(value):
            doc[key] = copy_value(value)
    doc = await run_chain(chain, doc)
    own_flattened(doc, state, restored)
    return doc


def _where(step: ChainStep, doc_id: Any, downgrade: bool) -> dict[str, Any]:
    """The facts a step error names."""
    start, end = (
        (step.to_version, step.from_version) if downgrade else (step.from_version, step.to_version)
    )
    return dict(
        model=step.model, doc_id=doc_id, from_version=start, to_version=end, source=step.source
    )
