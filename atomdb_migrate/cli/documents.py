"""What a command given ``--json`` prints, as plain data: a model's run, a
check, a chain of steps, a recorded run. `output` prints them; docs/cli.md
names every field (a test reads its tables).

"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..commands.check import DatabaseCheck
from ..commands.history import Failures, Step
from ..commands.upgrade import VERSION_INDEX, ModelReport, RenameReport


def encode(value: Any) -> Any:
    """A value JSON does not know: a date in ISO 8601 with its offset, anything
    else (an ``ObjectId``, say) as its string.

    The server stores dates in UTC and the driver reads them back without a
    time zone: such a date is given its UTC offset."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def dumps(document: Any) -> str:
    """The document as JSON, indented."""
    return json.dumps(document, indent=2, default=encode)


def step_json(r: ModelReport, label: str, dry_run: bool) -> dict[str, Any]:
    """One step of a model's plan: its versions, the documents it took (would take)."""
    older, _, newer = label.partition(" -> ")
    on_server = label in r.server_steps
    documents = r.server_steps[label] if on_server and not dry_run else r.steps.get(label, 0)
    going_down = r.direction == "downgrade"
    return {
        "from": newer if going_down else older,
        "to": older if going_down else newer,
        "documents": documents,
        "on_server": on_server,
        "would_refuse": r.would_refuse.get(label, 0),
        "pass": next((name for name, steps in r.server_passes.items() if label in steps), None),
    }


def pass_lines(r: ModelReport, name: Callable[[str], str], *, dry_run: bool) -> list[str]:
    """A line per pass of several steps on the server (``ModelReport.server_passes``),
    each pass and step named by `name` (in the run's direction)."""
    verb = "would run" if dry_run else "ran"
    return [
        f"pass {name(p)} on the server: {verb} steps {', '.join(map(name, s))} "
        "in one pass (one update per stored version)"
        for p, s in r.server_passes.items()
    ]


def rename_json(rename: RenameReport) -> dict[str, Any]:
    """What renaming a model's former name did (dry run: would do)."""
    return {
        "from": rename.old,
        "to": rename.new,
        "collection": rename.collection,
        "moved": rename.moved,
        "replaced": rename.replaced,
        "discarded": rename.discarded,
        "references": rename.references,
    }


def model_run_json(database: str | None, r: ModelReport, dry_run: bool) -> dict[str, Any]:
    """What a run of upgrade or downgrade did (dry: would do) to one model."""
    labels = [*r.steps, *(s for s in r.server_steps if s not in r.steps)]
    return {
        "database": database,
        "model": r.model,
        "direction": r.direction,
        "target": r.target,
        "pending": r.pending,
        "by_version": dict(r.by_version),
        "migrated": r.migrated,
        "skipped": r.skipped,
        "failed": r.failed,
        "newer": r.newer,
        "newer_versions": dict(r.newer_versions),
        "left_newer": str(r.left_newer) if r.left_newer is not None else None,
        "beyond": r.beyond,
        "redone": r.redone,
        "unconfirmed": r.unconfirmed,
        "respelled": r.respelled,
        "steps": [step_json(r, label, dry_run) for label in labels],
        "server_passes": [
            {"pass": name, "steps": list(steps)} for name, steps in r.server_passes.items()
        ],
        "renames": [rename_json(x) for x in r.renames],
        "collection": list(r.indexes),
        "version_index": r.version_index or None,
        "failures": [
            {"_id": f.get("_id"), "step": f.get("step"), "error": f.get("error")}
            for f in r.failures
        ],
        "samples": [
            {
                "_id": s.get("_id"),
                "from": s.get("from"),
                "ok": bool(s.get("ok")),
                "error": s.get("error"),
            }
            for s in r.samples
        ],
    }


def check_json(found: DatabaseCheck) -> dict[str, Any]:
    """What a check found, in a database or in the code alone."""
    return {
        "database": found.database,
        "problems": list(found.problems),
        "changed": list(found.changed),
        "notes": list(found.notes),
    }


def chain_step_json(s: Step, *, above: bool = False) -> dict[str, Any]:
    """A step of a model's chain; `above` the code's version or not."""
    return {
        "from": str(s.from_version),
        "to": str(s.to_version),
        "message": s.message,
        "source": str(s.source),
        "downgrade": s.downgrade_fn is not None,
        "above_code": above,
    }


def run_json(run: dict[str, Any], detail: str) -> dict[str, Any]:
    """A recorded run, its fields as recorded (None where the record lacks one)."""
    failures = run.get("failures")
    return {
        "id": run.get("_id"),
        "command": run.get("command"),
        "outcome": run.get("outcome"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "duration_s": run.get("duration_s"),
        "host": run.get("host"),
        "pid": run.get("pid"),
        "arguments": run.get("arguments"),
        "models": run.get("models"),
        "failures": len(failures) if isinstance(failures, list) else 0,
        "error": run.get("error"),
        "detail": detail,
    }


def failures_json(found: Failures | None, detail: str) -> dict[str, Any]:
    """The documents the latest run with failures recorded (none: nulls, no documents)."""
    if found is None:
        return {"run": None, "documents": [], "retried_by": None}
    return {
        "run": run_json(found.run, detail),
        "documents": [
            {
                "model": f.get("model"),
                "_id": f.get("_id"),
                "step": f.get("step"),
                "error": f.get("error"),
            }
            for f in found.failures
        ],
        "retried_by": (run_json(found.retried_by, "") if found.retried_by is not None else None),
    }


#: What a run did to the toolkit's version index (`ModelReport.version_index`), said.
_INDEX_DONE = {
    "created": "created the index {index}",
    "missing": "would create the index {index}",
    "rebuilt": "dropped the index {index} before the writes and built it again after them "
    "(most of the collection was pending: keeping it costs more than building it once)",
    "created after": "created the index {index} after the writes (most of the collection "
    "was pending)",
    "would rebuild": "would drop the index {index} before the writes and build it again "
    "after them (most of the collection is pending)",
    "would create after": "would create the index {index} after the writes (most of the "
    "collection is pending)",
}


def version_index_line(state: str) -> str:
    """The line saying what a run did (or would do) to the version index."""
    said = _INDEX_DONE.get(state, state).format(
        index=f"{VERSION_INDEX} on {{__version__: 1, _id: 1}}"
    )
    if state in ("created", "missing"):
        return (
            f"{said}, which status, check and upgrade read through (version-index = false "
            "in [tool.atomdb-migrate] to go without)"
        )
    return f"{said}; meanwhile status and check --pending count by a scan"
