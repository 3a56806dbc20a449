"""The history collection: one document per run of a writing command.

By default ``atomdb_migrate_history``. Each record holds:

- ``command``: "upgrade", "downgrade" or "stamp"; ``host`` and ``pid``;
  ``owner``, the lock token of the runner;
- ``started_at``, ``finished_at``, ``duration_s``;
- ``outcome``: "running", "succeeded", "failed", "interrupted", or
  "abandoned" (its runner died: the next runner to take the lock, or
  ``atomdb-migrate unlock``, marks it so, with the counts the runner's
  last lease renewal or write carried as its ``models``, and
  ``counted_until``, when that was);
- ``models``: per model, the target version, ``steps`` (each step of the
  plan with the documents found at its version when the run started: what
  the run set out to do, not what it did; a stopped or killed run did
  less), and the counts ``upgraded``, ``skipped``, ``failed``, ``newer``;
  ``collection``, what the run did to the collection besides its documents
  (a line each: an index created, dropped or created again, the validator
  removed or set), and ``version_index`` ("created" when the run created
  the toolkit's index), in a run that failed too;
- ``failures``: the first failures (model, ``_id``, step, error), when the
  run went on past them; ``error``: why a failed run stopped;
- ``arguments.release``: an upgrade's release name (``upgrade --release``,
  by default the models' versions, ``app.User=3,app.Order=2``); a
  downgrade of releases (``downgrade --release -1``, ``--to-release``)
  records the release asked for there, and in ``arguments.undone`` the
  releases it took back (``id``, ``release``);
- ``models.<name>.by_version``: the documents not at the target when the
  run started, by stored version (the versions a release found them at);
- ``checksums``: for an upgrade, each step of the models' chains up to the
  target (model, versions, module, checksum), as `atomdb_migrate.checksums`
  takes it; ``stamp --accept-checksums`` records a run of these alone.

A dry run writes no record.

"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

#: How a recorded run stands.
Outcome = Literal["running", "succeeded", "failed", "interrupted", "abandoned"]

#: How many failures a run report, and so its record, keeps in detail.
MAX_FAILURES = 100

#: How many of the latest successful upgrades are searched for a model's.
RECENT = 200


class History:
    """Records runs in a collection (PyMongo async or Motor)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    async def start(
        self,
        command: str,
        arguments: dict[str, Any],
        owner: str = "",
        *,
        checksums: list[dict[str, Any]] | None = None,
        record_id: Any = None,
    ) -> Any:
        """Record the start of a run, by the holder of the lock `owner`; return its ``_id``.

        `record_id` is the record's ``_id`` (default: a new one): give the same
        one to every attempt, so that a start sent again records one run.

        The lock is exclusive, so any other run still recorded as running
        belongs to a runner that died: it is marked abandoned.

        """
        await self.abandon({"owner": {"$ne": owner}})
        record = {
            "command": command,
            "arguments": arguments,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "owner": owner,
            "started_at": datetime.now(UTC),
            "outcome": "running",
        }
        if checksums:
            record["checksums"] = checksums
        # Its _id chosen by the caller, the same for every attempt: a start sent
        # again after a lost answer (or a write-concern error) finds the record
        # there, and adds no second one.
        record["_id"] = ObjectId() if record_id is None else record_id
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one(record)
        return record["_id"]

    async def abandon(self, query: dict[str, Any]) -> int:
        """Mark the runs `query` matches that are still recorded as running as abandoned."""
        result = await self.collection.update_many(
            {**query, "outcome": "running"},
            {"$set": {"outcome": "abandoned", "abandoned_at": datetime.now(UTC)}},
        )
        return int(result.modified_count)

    async def abandon_holder(self, holder: dict[str, Any] | None) -> int:
        """Mark the run of a lock holder that died abandoned, with what it had written.

        `holder` is the lock document its lease left (see
        `atomdb_migrate.lock.LeaseLock.replaced`): its ``progress``, the
        counts its last renewal or write carried, become the run's
        ``models``, so that a killed run's documents are counted somewhere.

        """
        if not isinstance(holder, dict):
            return 0
        owner = holder.get("owner")
        if not isinstance(owner, str) or not owner:
            return 0
        update: dict[str, Any] = {"outcome": "abandoned", "abandoned_at": datetime.now(UTC)}
        progress = holder.get("progress")
        if isinstance(progress, dict):
            update["models"] = progress
            update["counted_until"] = holder.get("verified_at") or holder.get("renewed_at")
        result = await self.collection.update_many(
            {"owner": owner, "outcome": "running"}, {"$set": update}
        )
        return int(result.modified_count)

    async def with_failures(self) -> dict[str, Any] | None:
        """The latest run that recorded failed documents."""
        cursor = self.collection.find({"failures.0": {"$exists": True}})
        found = list(await cursor.sort("started_at", -1).limit(1).to_list(length=1))
        return found[0] if found else None

    async def retried(self, run: dict[str, Any], models: list[str]) -> dict[str, Any] | None:
        """The first run after `run` that retried its failures of every model in
        `models` and succeeded (None if none did)."""
        started = run.get("started_at")
        if not isinstance(started, datetime):
            return None
        query = {
            "started_at": {"$gt": started},
            "arguments.retry_failed": True,
            "outcome": "succeeded",
            "arguments.models": {"$all": models},
        }
        found = await self.collection.find(query).sort("started_at", 1).limit(1).to_list(length=1)
        return found[0] if found else None

    async def finish(
        self,
        record_id: Any,
        outcome: Outcome,
        models: dict[str, Any],
        *,
        failures: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a run ended."""
        record = await self.collection.find_one({"_id": record_id}, {"started_at": 1})
        now = datetime.now(UTC)
        started = record.get("started_at") if record else None
        if not isinstance(started, datetime):
            started = None
        elif started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        update: dict[str, Any] = {
            "outcome": outcome,
            "finished_at": now,
            "duration_s": round((now - started).total_seconds(), 3) if started else None,
            "models": models,
            "failures": (failures or [])[:MAX_FAILURES],
        }
        if error:
            update["error"] = error
        await self.collection.update_one({"_id": record_id}, {"$set": update})

    async def last_complete(self, model: str, version: str) -> datetime | None:
        """When the last run finished that left every document of `model` at `version`.

        That is a successful upgrade of the model to that version, in which no
        document failed or was skipped. None if there was none.

        """
        # Model names hold dots, which a query reads as paths: look in Python.
        query = {"command": "upgrade", "outcome": "succeeded"}
        cursor = self.collection.find(query, {"finished_at": 1, "models": 1})
        for run in await cursor.sort("finished_at", -1).limit(RECENT).to_list(length=RECENT):
            models = run.get("models")
            counts = models.get(model) if isinstance(models, dict) else None
            if (
                isinstance(counts, dict)
                and counts.get("target") == version
                and not counts.get("failed")
                and not counts.get("skipped")
            ):
                when = run.get("finished_at")
                return when if isinstance(when, datetime) else None
        return None

    async def with_checksums(self) -> list[dict[str, Any]]:
        """The runs that recorded checksums of steps, newest first (their checksums only)."""
        cursor = self.collection.find(
            {"checksums.0": {"$exists": True}}, {"checksums": 1, "started_at": 1}
        )
        return list(await cursor.sort("started_at", -1).to_list(length=None))

    async def finished(self, limit: int = RECENT) -> list[dict[str, Any]]:
        """The latest upgrades and downgrades that succeeded, newest first: the
        releases, and the rollbacks that took them back."""
        query = {"command": {"$in": ["upgrade", "downgrade"]}, "outcome": "succeeded"}
        cursor = self.collection.find(query).sort("started_at", -1).limit(limit)
        return list(await cursor.to_list(length=limit))

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        cursor = self.collection.find({}).sort("started_at", -1).limit(limit)
        return list(await cursor.to_list(length=limit))
