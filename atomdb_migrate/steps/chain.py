"""Running a chain of steps on a document: the one contract of a step function.

A step function takes the document (a dict), changes it in place and returns
None, or returns the new dict; it may be a coroutine function. `run_chain`
is the one place that calls step functions and checks what they give back,
whether a step is a plain function, its operations, or its operations
followed by its function: whatever else it returns is a `StepResultError`,
whatever it raises a `StepFailedError`.

Nothing here touches MongoDB. The steps are anything with a `Step`'s names
(`ChainStep`): this module sits below `atomdb_migrate.steps.versions`, which
re-exports its names.

"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from ..core.documents import Document, StepDocument, copy_document
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
            if result is not doc and watched is not None:
                # A new dict: what it leaves out depends on every field.
                watched.look_at_everything()
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


def _where(step: ChainStep, doc_id: Any, downgrade: bool) -> dict[str, Any]:
    """The facts a step error names."""
    start, end = (
        (step.to_version, step.from_version) if downgrade else (step.from_version, step.to_version)
    )
    return dict(
        model=step.model, doc_id=doc_id, from_version=start, to_version=end, source=step.source
    )
