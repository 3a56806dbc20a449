"""`stamp`: set the stored version of a model's documents without transforming
them; `accept_checksums`: record the steps' checksums as they are now. Both
under the lock, recorded in the history.

"""

from __future__ import annotations

from ..core.storage import VERSION_KEY
from ..exceptions import ConfigError
from ..model.versioned import VersionedModel
from ..steps.versions import parse_version
from . import checksums as step_checksums
from .workspace import Workspace

__all__ = ["accept_checksums", "known_versions", "stamp"]


async def accept_checksums(
    ws: Workspace, models: tuple[str, ...] = (), *, wait: bool = False
) -> tuple[int, int]:
    """Record the checksums of the models' steps as they are now, after review.

    Returns how many steps were recorded, and how many of them had another
    checksum recorded before.

    """
    ws.load()
    classes = ws.models(models)
    await ws.connect()
    steps = [s for cls in classes for s in ws.registry.graph(cls).steps]
    async with ws.lock("stamp", wait=wait) as lock:
        history = ws.history()
        await history.abandon_holder(lock.replaced)
        changed = step_checksums.changed(steps, await history.with_checksums())
        sums = [step_checksums.step_record(s) for s in steps]
        arguments = {"models": [c.__model__ for c in classes], "accept_checksums": True}
        record = await history.start("stamp", arguments, lock.owner, checksums=sums)
        await history.finish(record, "succeeded", {})
    return len(sums), len(changed)


def known_versions(ws: Workspace, cls: type[VersionedModel]) -> list[str]:
    """The versions a model's chain knows: 0, its ``__version__``, and every step's."""
    return [str(v) for v in ws.registry.graph(cls).known_versions(cls.__parsed_version__)]


async def stamp(
    ws: Workspace,
    model: str,
    version: str,
    *,
    wait: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> int:
    """Set every stored document of a model to `version` without transforming it.

    For adopting data that is already in the shape of that version. Returns
    how many documents changed; with `dry_run`, how many would change (those
    not at `version` now), writing nothing: no lock, no history record.

    Raises
    ------
    ConfigError
        If the model's chain does not know `version` (0, the model's
        ``__version__``, or a version a step leaves or arrives at), unless
        `force` is given.

    """
    cls = ws.model(model)
    value = str(parse_version(version, model=cls.__model__, what="stamp version"))
    known = known_versions(ws, cls)
    if value not in known and not force:
        raise ConfigError(
            f"model {cls.__model__!r}: its chain does not know version {value} "
            f"(known: {', '.join(known)}); give --force to stamp it anyway"
        )
    await ws.connect()
    others = {VERSION_KEY: {"$ne": value}}
    if dry_run:
        return int(await ws.database[cls.__model__].count_documents(others))
    async with ws.lock("stamp", wait=wait) as lock:
        history = ws.history()
        await history.abandon_holder(lock.replaced)
        record = await history.start("stamp", {"models": [cls.__model__], "to": value}, lock.owner)
        res = await ws.database[cls.__model__].update_many(others, {"$set": {VERSION_KEY: value}})
        await history.finish(
            record, "succeeded", {cls.__model__: {"stamped": res.modified_count, "target": value}}
        )
    return int(res.modified_count)
