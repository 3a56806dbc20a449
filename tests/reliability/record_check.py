"""The invariant of a run's record: the history's counts equal what the server holds.

`check_record` is called after each fault scenario of the suite (with and
without app writers changing the documents meanwhile). For one model whose
documents all started behind the target, the record of the run (or of the
runs, a stopped one and its rerun) must say:

- ``upgraded``: the documents at the target now that were not before;
  fewer by its ``unconfirmed`` at most (writes whose answer never came when
  the run stopped, which the server may apply later);
- ``skipped`` and ``failed``, for a run that ran to its end: the documents
  still behind;
- ``redone``: none, unless the server was replaced (restarted, another
  member elected) during the run; never more than were upgraded;
- a step run on the server: the documents it took to the target;
- a run that was killed, marked abandoned by the next one: the counts its
  last renewal or write carried, no more than it wrote.

"""

from __future__ import annotations

from typing import Any

HISTORY = "atomdb_migrate_history"


def runs(db: Any) -> list[dict[str, Any]]:
    """Every recorded run of the database, oldest first."""
    return list(db[HISTORY].find({}, sort=[("started_at", 1)]))


def check_record(
    db: Any,
    model: str,
    target: str,
    *,
    entries: list[dict[str, Any]] | None = None,
    at_target_before: int = 0,
    replaced: bool = False,
    server_step: str | None = None,
) -> dict[str, int]:
    """Assert that the recorded runs' counts of `model` equal what `db` holds.

    Parameters
    ----------
    entries:
        The history records to add up (default: every run recorded). The
        last one is the run that ended; those before it stopped or died.
    at_target_before:
        Documents at `target` before the first run.
    replaced:
        Whether the server was replaced during a run (only then may a run
        have ``redone`` documents).
    server_step:
        The label ("1 -> 2") of a step that ran on the server to the target.

    Returns the figures compared, for the test's own record.

    """
    entries = runs(db) if entries is None else entries
    assert entries, "no run was recorded"
    collection = db[model]
    at_target = collection.count_documents({"__version__": target}) - at_target_before
    behind = collection.count_documents({"__version__": {"$ne": target}})
    upgraded = skipped = failed = redone = unconfirmed = 0
    for entry in entries:
        counts = (entry.get("models") or {}).get(model)
        if counts is None:
            assert entry["outcome"] == "abandoned", f"a run without counts: {entry}"
            continue
        upgraded += counts["upgraded"]
        redone += counts.get("redone", 0)
        assert counts.get("redone", 0) <= counts["upgraded"], counts
        if entry is entries[-1]:
            skipped, failed = counts["skipped"], counts["failed"]
        unconfirmed += counts.get("unconfirmed", 0)
        if server_step is not None and server_step in counts.get("server_steps", {}):
            ran = counts["server_steps"][server_step]
            assert ran <= counts["upgraded"], f"{server_step}: {ran} > {counts['upgraded']}"
    last = entries[-1]
    figures = {
        "at_target": at_target,
        "behind": behind,
        "upgraded": upgraded,
        "skipped": skipped,
        "failed": failed,
        "redone": redone,
        "unconfirmed": unconfirmed,
    }
    ended = all(e["outcome"] in ("succeeded", "failed") for e in entries)
    if ended:
        # Each run recorded its end: what it counted is what it wrote, less
        # only the writes whose answer never came (its `unconfirmed`).
        assert upgraded <= at_target <= upgraded + unconfirmed, f"not what was written: {figures}"
        if last.get("error") is None:  # ran to its end: what it left behind is counted
            assert skipped + failed == behind, f"skipped + failed != behind: {figures}"
    else:
        # A run that died: the next run recorded the counts its last renewal
        # or write carried, no more than it wrote.
        assert upgraded <= at_target, f"counted more than was written: {figures}"
    if not replaced:
        assert redone == 0, f"redone without a server replaced: {figures}"
    return figures
