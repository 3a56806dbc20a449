"""The toolkit's version index around a run's writes: kept, or dropped and built after.

Every rewritten document moves its entry in ``{__version__: 1, _id: 1}``,
which costs a full rewrite about as much as the writes themselves. The
index pays only where a run reads few documents through it. So when more
than ``version_index_rebuild_at`` of the collection is pending (the
fraction measured where keeping it begins to pay, `DEFAULT_REBUILD_AT`),
an upgrade drops its index before the writes (`before_writes`) and builds
it once after them (`after_writes`); a collection without it gets it after
the writes only. Otherwise the index is made before the writes, as always.

Meanwhile `status`, `check --pending` and the survey of another run find no
index and count by a scan (`driver.index_counts`): correct, slower. A run
that stops on an error builds the index before it stops; a run killed
between the two leaves the collection without it, `check --pending` says so,
and the next upgrade builds it (before its writes, or after them if most of
the collection is still pending): a finished upgrade always leaves it.

"""

from __future__ import annotations

from functools import partial

from ..driver.index_counts import drop_version_index, has_own_version_index
from ..driver.mongo import ensure_version_index, has_version_index
from ..driver.retry import Retry
from .leg import Leg
from .options import DEFAULT_VERSION_INDEX_REBUILD_AT
from .report import Survey
from .survey import version_index

#: The default ``version_index_rebuild_at`` (`options.DEFAULT_VERSION_INDEX_REBUILD_AT`).
DEFAULT_REBUILD_AT = DEFAULT_VERSION_INDEX_REBUILD_AT


def rebuild_pays(pending: int, total: int, rebuild_at: float) -> bool:
    """Whether `pending` of `total` documents is more than the share `rebuild_at`."""
    return total > 0 and pending > rebuild_at * total


async def before_writes(
    leg: Leg, retry: Retry, surveyed: Survey, *, wanted: bool, rebuild_at: float, dry_run: bool
) -> bool:
    """Upgrading, make the index before the writes, or (most of the collection
    pending) drop it: return whether `after_writes` is to build it.

    `leg.report.version_index` says which: "created" (before), "dropped"
    (built again by `after_writes`: "rebuilt"), "deferred" (missing, built by
    `after_writes`: "created after"); a dry run says "missing",
    "would rebuild" or "would create after".

    """
    report = leg.report
    total = sum(n for _, n in surveyed.rows)
    if not wanted or leg.direction.down or leg.ids is not None:
        await version_index(leg, retry, wanted=wanted, dry_run=dry_run)
        return False
    if not rebuild_pays(report.pending, total, rebuild_at):
        await version_index(leg, retry, wanted=wanted, dry_run=dry_run)
        return False
    present = await has_version_index(leg.collection)
    if dry_run:
        if present and not await has_own_version_index(leg.collection):
            return False  # the user's index on the same keys: the run keeps it
        report.version_index = "would rebuild" if present else "would create after"
        return False
    if not present:
        report.version_index = "deferred"
        return True
    name = leg.collection.name
    dropped = await retry.call(
        f"dropping the version index of {name}", partial(drop_version_index, leg.collection)
    )
    # Not dropped by this call, and no index on the keys left: an earlier
    # attempt dropped it and its answer was lost; build it after all the same.
    if dropped or not await has_version_index(leg.collection):
        report.version_index = "dropped"
        return True
    return False  # the user's index on the same keys: it stays


async def after_writes(leg: Leg, retry: Retry) -> None:
    """Build the index `before_writes` dropped or deferred (once the writes are done)."""
    await retry.call(
        f"building the version index of {leg.collection.name}",
        partial(ensure_version_index, leg.collection),
    )
    dropped = leg.report.version_index == "dropped"
    leg.report.version_index = "rebuilt" if dropped else "created after"
