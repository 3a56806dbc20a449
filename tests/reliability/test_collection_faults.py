"""A failure after each server call of a collection operation: no index is lost, and
what was done is said and recorded.

For each collection operation a step can ask for (an index created, one
dropped, one replaced by a unique one, a validator set, one removed), a first
run lists the commands the run sends (PyMongo's command monitoring). Then
each of them in turn, on a fresh database, fails through SecantusDB's
``failCommand`` fail point (``skip`` the earlier ones of its name, fail the
next ``times: 1``): with a code the runner does not retry (the run stops
there), and with a dropped connection (which the runner rides through). A
step that raises on one document, after the collection changed, is one more
scenario per operation.

After each run:

- the collection has every index it had before (by name: the old one or its
  replacement), and lacks only one the steps drop for good;
- replaying the lines the run reported (``created index ...``, ``dropped
  index ...``, ``created index ... again``, the validator removed or set)
  over the collection as it was gives the collection as it is: nothing done
  is left unsaid, nothing said is left undone;
- the output says those lines, and the history record holds them.

``COLLECTION_FAULTS=all`` also fails the commands outside the model's run
(the lock, the history's start).

"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pymongo
import pytest
from atom.api import Str
from pymongo import MongoClient, monitoring

from atomdb_migrate import ConfigError, MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.cli.output import summarize as _summarize
from atomdb_migrate.commands.command import RunResult, upgrade
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.engine.runner import RunOptions

from ..servers import secantus_server
from .conftest import record

APP = "atomdb-migrate-collection-faults"
HISTORY = "atomdb_migrate_history"
LOCK = "atomdb_migrate_lock"

#: Every command of the run, not only those of the model's run (slower).
ALL_COMMANDS = os.environ.get("COLLECTION_FAULTS") == "all"


class Member(VersionedModel):
    __model__ = "collection_faults.Member"
    __version__ = 2

    email = Str()
    name = Str()


def fill_name(doc: dict[str, Any]) -> None:
    if doc.get("email") == "boom":
        raise ValueError("boom")
    doc["name"] = doc["email"].split("@")[0]


@dataclass
class Scenario:
    """A collection operation: the step asking for it, and the collection before."""

    label: str
    operations: list[Any]
    #: Indexes on the collection before the run: name -> keys.
    indexes: dict[str, str] = field(default_factory=dict)
    #: A validator on the collection before the run.
    validator: dict[str, Any] | None = None
    #: The index the steps drop for good.
    dropped: str | None = None


OLDER_VALIDATOR = {"$jsonSchema": {"required": ["email"]}}

SCENARIOS = [
    Scenario("create_index", [ops.create_index("name")]),
    Scenario(
        "drop_index",
        [ops.drop_index([("legacy", 1)])],
        indexes={"legacy_1": "legacy"},
        dropped="legacy_1",
    ),
    Scenario(
        "a replaced index (made unique)",
        [ops.drop_index([("email", 1)]), ops.create_index("email", unique=True)],
        indexes={"email_1": "email"},
    ),
    Scenario("set_validator", [ops.set_validator("moderate")]),
    Scenario("removing a validator", [ops.set_validator(None)], validator=OLDER_VALIDATOR),
]


class Commands(monitoring.CommandListener):
    """The commands a client sends: name, and the collection they name."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        self.sent.append((name, target if isinstance(target, str) else ""))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(scope="module")
def fault_server() -> Iterator[str]:
    with secantus_server(test_commands=True) as url:
        yield url


@dataclass
class Outcome:
    error: BaseException | None
    lines: list[str]
    version_index: str
    output: str
    record: dict[str, Any] | None


class Lab:
    """A fresh database per run, seeded for a scenario, and the fail point."""

    def __init__(self, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.client: MongoClient[dict[str, Any]] = MongoClient(server)
        self.listener = Commands()
        real = pymongo.AsyncMongoClient
        monkeypatch.setattr(
            pymongo, "AsyncMongoClient", partial(real, event_listeners=[self.listener])
        )
        self.names: list[str] = []

    def seed(self, scenario: Scenario, *, boom: bool = False) -> Any:
        name = f"cfaults_{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        db = self.client[name]
        if scenario.validator is not None:
            db.create_collection(Member.__model__, validator=scenario.validator)
        collection = db[Member.__model__]
        emails = [f"user{i}@example.org" for i in range(6)] + (["boom"] if boom else [])
        collection.insert_many(
            [{"email": e, "__model__": Member.__model__, "__version__": "1"} for e in emails]
        )
        for index, keys in scenario.indexes.items():
            collection.create_index(keys, name=index)
        return db

    def state(self, db: Any) -> tuple[dict[str, Any], bool]:
        collection = db[Member.__model__]
        found = {
            name: {k: v for k, v in info.items() if k not in ("v", "ns")}
            for name, info in collection.index_information().items()
        }
        return found, bool(collection.options().get("validator"))

    def fail(self, mode: Any, command: str, **data: Any) -> None:
        self.client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": mode,
                "data": {"appName": APP, "failCommands": [command], **data},
            }
        )

    def off(self) -> None:
        self.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})

    async def run(self, db: Any, capsys: pytest.CaptureFixture[str], extra: str = "") -> Outcome:
        url = (
            f"{self.server}/{db.name}?appname={APP}&retryWrites=false&retryReads=false"
            f"&heartbeatFrequencyMS=500{extra}"
        )
        ws = Workspace(replace(load_config(url=url, models=[]), lock_ttl=60))
        result = RunResult("upgrade", False)
        error: BaseException | None = None
        capsys.readouterr()
        try:
            async with ws:
                await upgrade(
                    ws, [Member.__model__], options=RunOptions(retry_for=5), result=result
                )
        except Exception as exc:
            error = exc
        _summarize(result, stopped=error is not None)
        output = capsys.readouterr().out
        (report,) = result.reports or [None]
        record = db[HISTORY].find_one({})
        return Outcome(
            error,
            list(report.indexes) if report else [],
            report.version_index if report else "",
            output,
            record,
        )

    def close(self) -> None:
        self.off()
        for name in self.names:
            self.client.drop_database(name)
        self.client.close()


@pytest.fixture
def lab(fault_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    found = Lab(fault_server, monkeypatch)
    yield found
    found.close()


def replay(before: dict[str, Any], validator: bool, outcome: Outcome) -> tuple[set[str], bool]:
    """The index names and validator the lines say the run left."""
    names = set(before)
    for line in outcome.lines:
        words = line.split()
        if words[:2] == ["created", "index"]:
            names.add(words[2])
        elif words[:2] == ["dropped", "index"]:
            names.discard(words[2])
        elif line.startswith("removed the validator"):
            validator = False
        elif line.startswith("set the validator"):
            validator = True
    if outcome.version_index in ("created", "created after"):
        names.add("atomdb_migrate_version")
    elif outcome.version_index == "dropped":  # dropped for the writes, not built again
        names.discard("atomdb_migrate_version")
    return names, validator


def check(scenario: Scenario, lab: Lab, db: Any, before: Any, outcome: Outcome) -> None:
    """The invariants, after one run."""
    indexes, validator = lab.state(db)
    where = f"{scenario.label}: {outcome.error!r}; lines {outcome.lines}"
    lost = set(before[0]) - set(indexes) - {scenario.dropped}
    assert not lost, f"{where}: lost {lost}"
    if scenario.dropped in before[0] and scenario.dropped not in indexes:
        assert f"dropped index {scenario.dropped}" in outcome.lines, where
    assert replay(before[0], before[1], outcome) == (set(indexes), validator), where
    for name, info in indexes.items():
        if name in before[0] and info != before[0][name]:
            assert any(line.startswith(f"created index {name}") for line in outcome.lines), where
    for line in outcome.lines:
        assert f"{Member.__model__}: {line}" in outcome.output, where
    if outcome.version_index in ("created", "created after"):
        assert "created the index atomdb_migrate_version" in outcome.output, where
    if outcome.record is None:  # stopped before the run was recorded: nothing done
        assert not outcome.lines and (indexes, validator) == before, where
    elif outcome.record["outcome"] != "running":  # its end recorded
        counts = outcome.record["models"][Member.__model__]
        assert counts["collection"] == outcome.lines, where
        assert counts["version_index"] == outcome.version_index, where


def window(sent: list[tuple[str, str]]) -> list[int]:
    """The positions of the commands to fail: those of the model's run (after the
    history records its start, before it records its end), or all of them."""
    if ALL_COMMANDS:
        return list(range(len(sent)))
    start = next(i for i, (c, t) in enumerate(sent) if c == "insert" and t == HISTORY)
    end = max(i for i, (c, t) in enumerate(sent) if c == "update" and t == HISTORY)
    return [i for i in range(start + 1, end) if sent[i][1] != LOCK]


#: How a command fails: not retried (the run stops), and a dropped connection.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("UnknownError (8)", {"errorCode": 8}),
    ("connection dropped", {"closeConnection": True}),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.label for s in SCENARIOS])
async def test_a_failure_after_each_call_loses_no_index_and_hides_no_change(
    lab: Lab,
    registry: MigrationRegistry,
    capsys: pytest.CaptureFixture[str],
    scenario: Scenario,
) -> None:
    register_step(Member, 1, 2, fill_name, operations=scenario.operations)
    runs = 0

    async def one(prepare: Callable[[Any], None] | None, *, boom: bool = False) -> Outcome:
        nonlocal runs
        db = lab.seed(scenario, boom=boom)
        before = lab.state(db)
        lab.listener.sent.clear()
        if prepare is not None:
            prepare(db)
        try:
            outcome = await lab.run(db, capsys)
        finally:
            lab.off()
        check(scenario, lab, db, before, outcome)
        runs += 1
        return outcome

    clean = await one(None)
    assert clean.error is None, clean.error
    sent = list(lab.listener.sent)
    assert sent, "the listener saw the run's commands"
    stopped = 0
    positions = window(sent)
    for position in positions:
        command = sent[position][0]
        earlier = sum(1 for c, _ in sent[:position] if c == command)
        for label, data in FAULTS:
            outcome = await one(
                lambda db, c=command, n=earlier, d=data: lab.fail({"skip": n, "times": 1}, c, **d)
            )
            if outcome.error is not None:
                stopped += 1
                # Ridden through once the run holds its lock (connecting is not retried).
                if "errorCode" not in data and outcome.record is not None:
                    pytest.fail(f"{label} on {command} #{earlier}: {outcome.error!r}")
    # A step that raises on one document, after the collection changed.
    failed = await one(None, boom=True)
    assert failed.error is not None and "boom" in str(failed.error)
    assert stopped, "the fail point never stopped a run"
    record(
        "collection_faults",
        **{scenario.label: {"runs": runs, "stopped": stopped, "commands": len(positions)}},
    )


REPLACED = SCENARIOS[2]


async def test_an_old_index_that_cannot_be_created_again_is_said_missing(
    lab: Lab, registry: MigrationRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new index fails, and so does the old one created again: the one case
    where the collection is left with fewer indexes, and the run says so."""
    register_step(Member, 1, 2, fill_name, operations=REPLACED.operations)
    db = lab.seed(REPLACED)
    # Every document is pending, so the toolkit's version index is built after the
    # writes: the first createIndexes is the new email_1, then the old one again.
    lab.fail({"skip": 0, "times": 2}, "createIndexes", errorCode=8)
    outcome = await lab.run(db, capsys)
    assert outcome.error is not None
    assert outcome.lines[0] == "dropped index email_1"
    assert outcome.lines[1].startswith("could not create index email_1 {email: 1} again")
    assert "the collection lacks it" in outcome.lines[1]
    for line in outcome.lines:
        assert line in outcome.output
    assert outcome.record is not None
    assert outcome.record["models"][Member.__model__]["collection"] == outcome.lines
    assert "email_1" not in lab.state(db)[0]
    # The next run builds the new one.
    lab.off()
    again = await lab.run(db, capsys)
    assert again.error is None and "email_1" in lab.state(db)[0]
    assert again.lines == ["created index email_1 {email: 1} (unique=True)"]


@pytest.mark.parametrize("command", ["dropIndexes", "createIndexes", "collMod"])
async def test_an_answer_lost_after_the_server_acted(
    lab: Lab,
    registry: MigrationRegistry,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """The connection held past the socket timeout: the server may act on the
    command after the runner gave up on it and sent it again."""
    scenario = REPLACED if command != "collMod" else SCENARIOS[3]
    register_step(Member, 1, 2, fill_name, operations=scenario.operations)
    db = lab.seed(scenario)
    before = lab.state(db)
    # The version index comes after the writes (every document pending): the
    # first of each command is the step's.
    lab.fail({"skip": 0, "times": 1}, command, blockConnection=True, blockTimeMS=1500)
    outcome = await lab.run(db, capsys, "&socketTimeoutMS=500")
    assert outcome.error is None, outcome.error
    check(scenario, lab, db, before, outcome)


async def test_an_index_the_server_refuses_is_a_configuration_error(
    lab: Lab, registry: MigrationRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """CannotCreateIndex (67), as MongoDB answers a partial filter it does not take:
    the step asks for what the server does not build (exit 3), not a connection
    problem; the index it replaces is back."""
    register_step(Member, 1, 2, fill_name, operations=REPLACED.operations)
    db = lab.seed(REPLACED)
    before = lab.state(db)
    lab.fail({"skip": 0, "times": 1}, "createIndexes", errorCode=67)  # the step's first
    outcome = await lab.run(db, capsys)
    assert isinstance(outcome.error, ConfigError), outcome.error
    assert "the server refuses index email_1 {email: 1} (unique=True)" in str(outcome.error)
    assert "the index email_1 {email: 1} it replaces was created again" in str(outcome.error)
    check(REPLACED, lab, db, before, outcome)
    assert lab.state(db)[0]["email_1"] == before[0]["email_1"]
