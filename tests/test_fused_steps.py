"""Consecutive server steps in one pass give what the steps give one by one.

Random chains of one to five steps of operations, on random documents stored
at any version of the chain (values equal in BSON but of other types: 1, 1.0,
True, Int64(1); missing fields; nested documents; arrays), are run three
ways: the Python chain, step by step on the server (each step's own updates),
and fused (one pipeline update per stored version, the stages of each step in
order). The three must agree document by document; where a step refuses a
document, each leaves it at that step's version as the steps before left it.

The same is checked through the runner, fused and not, with the counts each
records; and that a model five steps behind takes one update, not five.

The examples: ``FUSED_EXAMPLES`` (pipelines) and ``FUSED_RUNNER_EXAMPLES``
(through the runner), ten times more with ``--long``.

"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128, Int64
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient, monitoring

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.core.documents import copy_document
from atomdb_migrate.engine.runner import Runner, RunOptions
from atomdb_migrate.engine.server_passes import passes
from atomdb_migrate.exceptions import MigrateError
from atomdb_migrate.operations.running import fused_updates
from atomdb_migrate.steps.versions import Step
from tests.test_ops_server import OPERATIONS, any_operation, document, embedded, key, normal, path

#: Examples of the pipeline property, and of the one through the runner.
EXAMPLES = int(os.environ.get("FUSED_EXAMPLES", "60"))
RUNNER_EXAMPLES = int(os.environ.get("FUSED_RUNNER_EXAMPLES", "12"))

#: Values BSON compares equal but stores as other types.
SAME_IN_BSON = [1, 1.0, True, Int64(1), Decimal128(Decimal("1")), 0, 0.0, False, Int64(0)]
same = st.sampled_from(SAME_IN_BSON)
#: Those an operation's default may be (a Decimal128 is refused there).
same_default = st.sampled_from([v for v in SAME_IN_BSON if not isinstance(v, Decimal128)])
bson_document = st.one_of(
    document,
    st.dictionaries(
        key,
        st.one_of(same, st.lists(same, max_size=3), st.dictionaries(key, same, max_size=2)),
        max_size=3,
    ),
)
operation = st.one_of(
    any_operation,
    st.builds(ops.add_field, path, same_default),
    st.builds(ops.set_default_where_missing, path, same_default),
    OPERATIONS["rename_field"],
)
#: A chain: each step's operations, and the embedded models it knows.
chains = st.lists(
    st.tuples(st.lists(operation, min_size=1, max_size=3), embedded), min_size=1, max_size=5
)
#: Documents, each with the index of the step it is stored at the start of.
stored = st.lists(st.tuples(st.integers(0, 4), bson_document), min_size=1, max_size=8)


def version(i: int) -> str:
    """The version step `i` (from 0) starts from."""
    return str(i + 1)


def python_chain(doc: dict[str, Any], start: int, chain: list[Any]) -> dict[str, Any]:
    """The Python form, step by step: a step that refuses the document leaves it as
    the steps before left it, at its version."""
    for i in range(start, len(chain)):
        mine = copy_document(doc)
        try:
            chain[i](mine)
        except ops.OperationError:
            return doc
        mine["__version__"] = version(i + 1)
        doc = mine
    return doc


def step_by_step(collection: Any, chain: list[Any]) -> None:
    """Each step's own updates, one step after the other (the unfused form)."""
    for i, steps in enumerate(chain):
        for query, pipeline in steps.server_updates({"__version__": version(i)}, version(i + 1)):
            collection.update_many(query, pipeline)


#: How many passes of several steps had a fast form, of how many.
FAST = [0, 0]


def fused(collection: Any, chain: list[Any]) -> int:
    """The chain cut into passes as the runner cuts it, each pass its updates per
    start version (last first; the fast form, then the general pipeline);
    returns how many updates were sent."""
    made = tuple(
        Step("fused.M", version(i), version(i + 1), upgrade_fn=s, server_side=True)
        for i, s in enumerate(chain)
    )
    sent, first = 0, 0
    for cut in passes(made, set(made), down=False):
        for j in reversed(range(len(cut))):
            steps = [(s.upgrade_fn, s.to_version) for s in cut[j:]]
            updates = fused_updates(steps, {"__version__": cut[j].from_version})  # type: ignore[arg-type]
            if len(steps) > 1:
                FAST[0] += len(updates) > 1
                FAST[1] += 1
            for query, pipeline in updates:
                collection.update_many(query, pipeline)
                sent += 1
        first += len(cut)
    assert first == len(chain)
    return sent


@pytest.fixture
def server(secantus_url: str) -> Any:
    client: MongoClient[dict[str, Any]] = MongoClient(secantus_url)
    database = client[f"fused_{uuid.uuid4().hex[:10]}"]
    try:
        yield database
    finally:
        client.drop_database(database.name)
        client.close()


def three_ways(database: Any, chain: list[Any], docs: list[tuple[int, dict[str, Any]]]) -> None:
    rows = [
        {**d, "_id": n, "__version__": version(start % len(chain))}
        for n, (start, d) in enumerate(docs)
    ]
    for name in ("steps", "fused"):
        database[name].delete_many({})
        database[name].insert_many([dict(r) for r in rows])
    read = {d["_id"]: d for d in database["steps"].find()}
    step_by_step(database["steps"], chain)
    fused(database["fused"], chain)
    by_steps = {d["_id"]: d for d in database["steps"].find()}
    by_pass = {d["_id"]: d for d in database["fused"].find()}
    for n, doc in read.items():
        mine = python_chain(doc, int(doc["__version__"]) - 1, chain)
        assert normal(by_pass[n]) == normal(mine) == normal(by_steps[n]), (
            f"chain {chain!r}\nstored  {doc!r}\npython  {mine!r}\n"
            f"steps   {by_steps[n]!r}\nfused   {by_pass[n]!r}"
        )


@pytest.mark.timeout(1800)
def test_fused_pass_agrees_with_python_and_step_by_step(server: Any, long: bool) -> None:
    runs = [0, 0]

    @settings(
        max_examples=EXAMPLES * (10 if long else 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(chains, stored)
    # A conversion refusing a document, then a step after it; and two steps on
    # other fields, a pass with a fast form: both in every run.
    @example(
        [([ops.convert("a", "int")], {}), ([ops.rename_field("c", "d")], {})], [(0, {"a": "x"})]
    )
    @example(
        [([ops.rename_field("a", "b")], {}), ([ops.rename_field("c", "d")], {})],
        [(0, {"a": 1, "c": 2})],
    )
    def check(chain: list[Any], docs: list[tuple[int, dict[str, Any]]]) -> None:
        made = [ops.Operations(operations, embedded=models) for operations, models in chain]
        three_ways(server, made, docs)
        runs[0] += 1
        runs[1] += len(made) > 1 and any(s.fallible for s in made[:-1])

    check()
    print(
        f"fused pipelines: {runs[0]} chains, {runs[1]} with a step that may refuse before the last"
    )
    print(f"passes of several steps with a fast form: {FAST[0]} of {FAST[1]}")
    assert runs[1] > 0  # some chains held a refused document through the steps after
    assert FAST[0] > 0  # and some passes had a fast form


def test_consecutive_server_steps_make_one_pass() -> None:
    made = tuple(
        Step("fused.M", version(i), version(i + 1), upgrade_fn=ops.Operations(o), server_side=True)
        for i, o in enumerate(
            [
                [ops.add_field("a", 1)],
                [ops.convert("a", int)],  # may refuse a document: fused all the same
                [ops.rename_field("a", "b")],
                [ops.add_field("c", 1)],
            ]
        )
    )
    assert [len(c) for c in passes(made, set(made), down=False)] == [4]
    assert [len(c) for c in passes(made, {made[0], made[2], made[3]}, down=False)] == [1, 1, 2]
    assert [len(c) for c in passes(made, set(made), down=False, fuse=False)] == [1, 1, 1, 1]


def test_a_document_refused_mid_pass_stays_where_the_step_found_it(server: Any) -> None:
    chain = [
        ops.Operations([ops.add_field("b", 1)]),
        ops.Operations([ops.convert("a", int)]),
        ops.Operations([ops.rename_field("a", "c"), ops.add_field("d", 2)]),
    ]
    three_ways(server, chain, [(0, {"a": "abc"}), (0, {"a": "7"}), (1, {"a": "x"}), (2, {})])
    found = {d["_id"]: d for d in server["fused"].find()}
    assert found == {
        0: {"_id": 0, "a": "abc", "b": 1, "__version__": "2"},
        1: {"_id": 1, "b": 1, "c": 7, "d": 2, "__version__": "4"},
        2: {"_id": 2, "a": "x", "__version__": "2"},
        3: {"_id": 3, "d": 2, "__version__": "4"},
    }


# ----------------------------------------------------------------------
# Through the runner
# ----------------------------------------------------------------------
MODELS = {
    k: type(f"Chain{k}", (VersionedModel,), {"__model__": f"fused.Chain{k}", "__version__": k + 1})
    for k in range(1, 6)
}


#: The runs' client name, which fail points aim at.
APP = "fused-steps"


class Updates(monitoring.CommandListener):
    """Counts the update commands a client sends."""

    def __init__(self) -> None:
        self.sent = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent += event.command_name == "update"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def run_model(
    url: str,
    registry: MigrationRegistry,
    cls: type,
    rows: list[dict[str, Any]],
    fuse: bool,
    fault: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[dict[Any, Any], Any, int]:
    """Run the model's upgrade on `rows`, fused or not (with the fail point `fault`
    aimed at the run's client): the documents after, the report, the update
    commands sent."""
    listener = Updates()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, event_listeners=[listener], appname=APP, retryWrites=False
    )
    db = client[f"fused_{uuid.uuid4().hex[:10]}"]
    try:
        await db[cls.__model__].insert_many([dict(r) for r in rows])
        if fault is not None:
            await client.admin.command(
                {"configureFailPoint": "failCommand", **fault, "appName": APP}
                | {"data": {**fault["data"], "appName": APP}}
            )
        runner = Runner(
            db, RunOptions(fuse_steps=fuse, continue_on_error=True, **options), registry=registry
        )
        listener.sent = 0
        try:
            report = await runner.upgrade(cls)  # type: ignore[arg-type]
        except MigrateError as stopped:
            stopped.report = runner.reports[-1]  # type: ignore[attr-defined]
            raise
        sent = listener.sent
        after = {d["_id"]: d async for d in db[cls.__model__].find()}
        return after, report, sent
    finally:
        await client.drop_database(db.name)
        await client.close()


#: Chains the registry refused to register (printed with the counts).
REFUSED: list[str] = []


async def runner_both_ways(
    url: str, chain: list[Any], docs: list[tuple[int, dict[str, Any]]]
) -> bool:
    """Run a chain's model through the runner fused and not; whether it fused."""
    cls = MODELS[len(chain)]
    with MigrationRegistry.instance().isolated() as registry:
        try:
            steps = [
                register_step(cls, i + 1, i + 2, operations=operations)
                for i, (operations, _) in enumerate(chain)
            ]
        except ValueError as refused:
            # Registering derives each step's downgrade: the inverse of
            # rename_field("a", "b.a") is refused as overlapping, a limit of
            # the registry, not of the passes (the pipelines above cover it).
            REFUSED.append(str(refused))
            reject()
        rows = [
            {**d, "_id": n, "__model__": cls.__model__, "__version__": version(s % len(chain))}
            for n, (s, d) in enumerate(docs)
        ]
        by_pass, fused_report, _ = await run_model(url, registry, cls, rows, fuse=True)
        by_steps, steps_report, _ = await run_model(url, registry, cls, rows, fuse=False)
    functions = [s.upgrade_fn for s in steps]  # the registered steps' own operations
    for row in rows:
        start = int(row["__version__"]) - 1
        mine = python_chain(row, start, functions)
        n = row["_id"]
        assert normal(by_pass[n]) == normal(mine) == normal(by_steps[n]), (
            f"chain {chain!r}\nstored  {row!r}\npython  {mine!r}\n"
            f"steps   {by_steps[n]!r}\nfused   {by_pass[n]!r}"
        )
    assert fused_report.server_steps == steps_report.server_steps
    assert fused_report.migrated == steps_report.migrated
    assert fused_report.failed == steps_report.failed
    assert not steps_report.server_passes
    return bool(fused_report.server_passes)


@pytest.mark.timeout(1800)
def test_the_runner_fused_agrees_with_the_runner_step_by_step(
    secantus_url: str, long: bool
) -> None:
    runs = [0, 0]

    @settings(
        max_examples=RUNNER_EXAMPLES * (10 if long else 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(chains, stored)
    def check(chain: list[Any], docs: list[tuple[int, dict[str, Any]]]) -> None:
        runs[1] += asyncio.run(runner_both_ways(secantus_url, chain, docs))
        runs[0] += 1

    check()
    print(
        f"through the runner: {runs[0]} chains, {runs[1]} with a fused pass; "
        f"{len(REFUSED)} chains the registry refused: {sorted(set(REFUSED))[:3]}"
    )


def test_five_steps_behind_take_one_update(secantus_url: str) -> None:
    cls = MODELS[5]
    chain = [
        [ops.rename_field("a", "b")],
        [ops.add_field("c", 1)],
        [ops.copy_field("c", "d")],
        [ops.remove_field("b")],
        [ops.add_field("e.f", True)],
    ]
    rows = [{"_id": n, "__model__": cls.__model__, "__version__": "1", "a": n} for n in range(50)]
    with MigrationRegistry.instance().isolated() as registry:
        for i, operations in enumerate(chain):
            register_step(cls, i + 1, i + 2, operations=operations)
        by_pass, report, sent = asyncio.run(run_model(secantus_url, registry, cls, rows, True))
        by_steps, steps_report, sent_by_steps = asyncio.run(
            run_model(secantus_url, registry, cls, rows, False)
        )
    assert sent == 1, sent
    assert sent_by_steps >= 5, sent_by_steps
    assert report.server_passes == {"1 -> 6": ["1 -> 2", "2 -> 3", "3 -> 4", "4 -> 5", "5 -> 6"]}
    assert (
        report.server_steps
        == steps_report.server_steps
        == {f"{i} -> {i + 1}": 50 for i in range(1, 6)}
    )
    assert report.migrated == 50
    assert by_pass == by_steps
    assert by_pass[7] == {
        "_id": 7, "__model__": cls.__model__, "__version__": "6", "c": 1, "d": 1, "e": {"f": True}
    }  # fmt: skip


# ----------------------------------------------------------------------
# What the command says
# ----------------------------------------------------------------------
def _operations_only(project: Any) -> None:
    """The demo's two Python steps, replaced by steps of operations."""
    migrations = project.path / "migrations"
    for name, start, operations in [
        ("0001_split_name.py", "1", '[ops.rename_field("name", "first"), ops.add_field("b", 0)]'),
        ("0002_add_tier.py", "2", '[ops.add_field("tier", "basic")]'),
    ]:
        (migrations / name).write_text(
            '"""Operations only."""\nfrom atomdb_migrate import ops\n'
            f'model = "clidemo.Customer"\nfrom_version = "{start}"\n'
            f'to_version = "{int(start) + 1}"\noperations = {operations}\n'
        )


def test_the_dry_run_lists_consecutive_server_steps_as_one_pass(project: Any) -> None:
    _operations_only(project)
    project.seed(4)
    result = project.invoke("upgrade", "--dry-run", "--sample", "0")
    assert result.exit_code == 0, result.output
    assert "step 1 -> 2: 4 documents (on the server)" in result.output
    assert (
        "pass 1 -> 3 on the server: would run steps 1 -> 2, 2 -> 3 in one pass" in result.output
    ), result.output
    shown = json.loads(project.invoke("upgrade", "--dry-run", "--sample", "0", "--json").output)
    (model,) = [m for m in shown["models"] if m["model"] == "clidemo.Customer"]
    assert model["server_passes"] == [{"pass": "1 -> 3", "steps": ["1 -> 2", "2 -> 3"]}]
    assert [(s["from"], s["pass"]) for s in model["steps"]] == [("1", "1 -> 3"), ("2", "1 -> 3")]
    assert project.versions() == {"1": 4}

    result = project.invoke("upgrade")
    assert result.exit_code == 0, result.output
    assert "pass 1 -> 3 on the server: ran steps 1 -> 2, 2 -> 3 in one pass" in result.output
    assert project.versions() == {"3": 4}


# ----------------------------------------------------------------------
# Faults: retries, and a server that refuses the pipeline
# ----------------------------------------------------------------------
FIVE = [
    [ops.rename_field("a", "b")],
    [ops.convert("b", int)],
    [ops.copy_field("b", "c.d")],
    [ops.remove_field("x")],
    [ops.add_field("e", 1)],
]


@pytest.fixture(scope="module")
def fault_server() -> Any:
    """A SecantusDB server that accepts ``configureFailPoint``."""
    from tests.servers import secantus_server

    with secantus_server(test_commands=True) as url:
        yield url


def _run_with_fault(url: str, fault: dict[str, Any] | None) -> tuple[dict[Any, Any], Any, Any]:
    """The five steps (one refusing "no"), fused with `fault`, and step by step."""
    cls = MODELS[5]
    rows = [
        {"_id": n, "__model__": cls.__model__, "__version__": "1", "a": "no" if n < 3 else str(n)}
        for n in range(40)
    ]
    with MigrationRegistry.instance().isolated() as registry:
        for i, operations in enumerate(FIVE):
            register_step(cls, i + 1, i + 2, operations=operations)
        by_pass, report, sent = asyncio.run(run_model(url, registry, cls, rows, True, fault))
        report.sent = sent  # the update commands of the fused run
        by_steps, steps_report, _ = asyncio.run(run_model(url, registry, cls, rows, False))
    assert {n: d for n, d in by_pass.items() if n >= 3} == {
        n: d for n, d in by_steps.items() if n >= 3
    }
    assert (report.migrated, report.failed) == (steps_report.migrated, steps_report.failed)
    assert (report.migrated, report.failed) == (37, 3)
    assert by_steps[0] == {"_id": 0, "__model__": cls.__model__, "__version__": "2", "b": "no"}
    return by_pass, report, steps_report


def test_a_pass_sent_again_counts_each_step_once(fault_server: str) -> None:
    fault = {"mode": {"times": 1}, "data": {"failCommands": ["update"], "closeConnection": True}}
    by_pass, report, steps_report = _run_with_fault(fault_server, fault)
    assert report.sent == 2, "the pass's update, cut, then sent again"
    assert by_pass[0] == {"_id": 0, "__model__": MODELS[5].__model__, "__version__": "2", "b": "no"}
    assert report.server_passes == {"1 -> 6": [f"{i} -> {i + 1}" for i in range(1, 6)]}
    assert report.server_steps == steps_report.server_steps
    assert report.server_steps == {"1 -> 2": 40, **{f"{i} -> {i + 1}": 37 for i in range(2, 6)}}


def test_a_server_refusing_the_pass_leaves_it_to_the_client(fault_server: str) -> None:
    fault = {"mode": {"times": 1}, "data": {"failCommands": ["update"], "errorCode": 2}}
    by_pass, report, _ = _run_with_fault(fault_server, fault)
    assert report.server_steps == {} and report.server_passes == {}
    # the client path fails a document whole: it stays as stored
    assert by_pass[0] == {"_id": 0, "__model__": MODELS[5].__model__, "__version__": "1", "a": "no"}


def test_a_downgrade_fuses_the_inverses(secantus_url: str) -> None:
    cls = MODELS[5]
    chain = [
        [ops.rename_field("a", "b")],
        [ops.add_field("c", 1)],
        [ops.rename_field("b", "d")],
        [ops.add_field("e.f", True)],
        [ops.rename_field("c", "g")],
    ]
    rows = [
        {"_id": n, "__model__": cls.__model__, "__version__": "6", "d": n, "g": 1}
        for n in range(30)
    ]
    rows += [{"_id": 99, "__model__": cls.__model__, "__version__": "3", "b": 5, "c": 1}]

    async def down(url: str, fuse: bool) -> tuple[dict[Any, Any], Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        db = client[f"fused_{uuid.uuid4().hex[:10]}"]
        try:
            await db[cls.__model__].insert_many([dict(r) for r in rows])
            report = await Runner(db, RunOptions(fuse_steps=fuse), registry=registry).downgrade(
                cls,  # type: ignore[arg-type]
                "1",
            )
            return {d["_id"]: d async for d in db[cls.__model__].find()}, report
        finally:
            await client.drop_database(db.name)
            await client.close()

    with MigrationRegistry.instance().isolated() as registry:
        for i, operations in enumerate(chain):
            register_step(cls, i + 1, i + 2, operations=operations)
        by_pass, report = asyncio.run(down(secantus_url, True))
        by_steps, steps_report = asyncio.run(down(secantus_url, False))
    assert by_pass == by_steps
    assert by_pass[3] == {"_id": 3, "__model__": cls.__model__, "__version__": "1", "a": 3}
    assert by_pass[99] == {"_id": 99, "__model__": cls.__model__, "__version__": "1", "a": 5}
    assert report.server_passes == {"1 -> 6": ["5 -> 6", "4 -> 5", "3 -> 4", "2 -> 3", "1 -> 2"]}
    assert report.server_steps == steps_report.server_steps
    assert report.server_steps["2 -> 3"] == 31 and report.server_steps["4 -> 5"] == 30
    assert report.migrated == steps_report.migrated == 31


def test_a_pass_whose_answer_never_comes_counts_what_it_may_yet_change(
    fault_server: str,
) -> None:
    """Past the retry window, a pass stops as a step stops: nothing recorded as done
    that the server does not show, the documents still behind unconfirmed."""
    cls = MODELS[5]
    rows = [
        {"_id": n, "__model__": cls.__model__, "__version__": "1", "a": str(n)} for n in range(20)
    ]
    always = {"mode": "alwaysOn", "data": {"failCommands": ["update"], "closeConnection": True}}
    reports = {}
    with MigrationRegistry.instance().isolated() as registry:
        for i, operations in enumerate(FIVE):
            register_step(cls, i + 1, i + 2, operations=operations)
        for fuse in (True, False):
            with pytest.raises(MigrateError) as stopped:
                asyncio.run(run_model(fault_server, registry, cls, rows, fuse, always, retry_for=1))
            reports[fuse] = stopped.value.report  # type: ignore[attr-defined]
            MongoClient(fault_server).admin.command(
                {"configureFailPoint": "failCommand", "mode": "off"}
            )
    assert reports[True].unconfirmed == reports[False].unconfirmed == 20
    assert reports[True].server_steps == reports[False].server_steps == {}
