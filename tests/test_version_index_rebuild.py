"""The version index around a run's writes, and the counts read on it.

When more than ``version_index_rebuild_at`` of a collection is pending, an
upgrade drops the toolkit's index before its writes and builds it after
them. The counts `status` and `check --pending` report are the server's
truth at every moment of a run, with the index, without it, and in the
window where it is dropped; a killed run leaves the next one to build it;
a finished upgrade never leaves the collection without it.

The survey counts on the index only where the server answers a count from
it (MongoDB's ``COUNT_SCAN``); SecantusDB's plan fetches every document, so
the tests force that path (`counts_on_index` made to take any plan of an
index that is not multikey) to prove it exact.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.core.versions import known_forms, parse_version
from atomdb_migrate.driver import index_counts
from atomdb_migrate.driver.mongo import VERSION_INDEX, count_versions
from atomdb_migrate.engine import stream as stream_module
from atomdb_migrate.engine.leg import version_name
from atomdb_migrate.engine.survey import count_stored

from .project import CUSTOMER, Project

#: Generated collections of the differential test of the two surveys.
COUNT_EXAMPLES = int(os.environ.get("VERSION_COUNT_EXAMPLES", "25"))

#: The known forms of the demo model's versions.
FORMS = known_forms([parse_version(v) for v in ("0", "1", "2", "3")])


def has_index(project: Project) -> bool:
    return VERSION_INDEX in project.db[CUSTOMER].index_information()


def truth(project: Project) -> dict[str, int]:
    """The documents per version, by a full scan of the sync client (the truth)."""
    found: dict[str, int] = {}
    for doc in project.db[CUSTOMER].find({}, {"__version__": 1}):
        name = version_name(doc.get("__version__"))
        found[name] = found.get(name, 0) + 1
    return found


def reported(rows: list[tuple[Any, int]]) -> dict[str, int]:
    """Counted rows as status names them."""
    found: dict[str, int] = {}
    for raw, n in rows:
        found[version_name(raw)] = found.get(version_name(raw), 0) + n
    return found


def force_index_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count on the index whatever the plan, while it is not multikey."""
    monkeypatch.setattr(
        index_counts,
        "counts_on_index",
        lambda plan: plan is not None and "'isMultiKey': True" not in repr(plan),
    )


def watch_batches(monkeypatch: pytest.MonkeyPatch, project: Project) -> list[dict[str, Any]]:
    """After each bulk write of the stream: the index's presence, the truth, and the
    counts of the survey (on the index where there is one, else the scan)."""
    seen: list[dict[str, Any]] = []
    write = stream_module.bulk_update

    async def spy(collection: Any, writes: Any) -> Any:
        done = await write(collection, writes)
        counted = await count_stored(collection, None, FORMS)
        scanned = await count_versions(collection)
        seen.append(
            {
                "index": has_index(project),
                "truth": truth(project),
                "counted": reported(counted),
                "scanned": reported(scanned),
            }
        )
        return done

    monkeypatch.setattr(stream_module, "bulk_update", spy)
    return seen


def status_stored(project: Project) -> dict[str, int]:
    """What ``status --json`` reports stored, from another process."""
    proc = project.spawn("status", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    for model in json.loads(out):
        if model["model"] == CUSTOMER:
            return {k: v for k, v in model["stored"].items() if v}
    raise AssertionError(out)


def upgrade_json(project: Project, *args: str) -> dict[str, Any]:
    result = project.invoke("upgrade", "--no-progress", "--json", *args)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    for run in found["models"] if "models" in found else found["runs"]:
        if run["model"] == CUSTOMER:
            return dict(run)
    raise AssertionError(result.output)


@pytest.mark.parametrize("forced", [False, True], ids=["scan", "index-counts"])
def test_most_pending_drops_the_index_and_counts_stay_true(
    project: Project, monkeypatch: pytest.MonkeyPatch, forced: bool
) -> None:
    if forced:
        force_index_counts(monkeypatch)
    project.seed(10, version="3")
    first = project.invoke("upgrade", "--no-progress")
    assert first.exit_code == 0 and has_index(project), first.output
    project.seed(30, version="1")  # 30 of 40 pending: more than half
    seen = watch_batches(monkeypatch, project)
    run = upgrade_json(project, "--batch-size", "7")
    assert has_index(project), run
    assert run["version_index"] == "rebuilt", run
    assert has_index(project)
    assert seen and not any(s["index"] for s in seen), seen  # dropped during the writes
    for s in seen:
        assert s["counted"] == s["truth"] == s["scanned"], s
    assert truth(project) == {"3": 40}


@pytest.mark.parametrize("forced", [False, True], ids=["scan", "index-counts"])
def test_few_pending_keep_the_index_and_counts_stay_true(
    project: Project, monkeypatch: pytest.MonkeyPatch, forced: bool
) -> None:
    if forced:
        force_index_counts(monkeypatch)
    project.seed(30, version="3")
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    project.seed(10, version="1")
    project.seed(2, version="2")
    seen = watch_batches(monkeypatch, project)
    run = upgrade_json(project, "--batch-size", "3")
    assert run["version_index"] is None, run
    assert seen and all(s["index"] for s in seen), seen
    for s in seen:
        assert s["counted"] == s["truth"] == s["scanned"], s


def test_the_setting_keeps_the_index_and_a_dry_run_says_what_it_would_do(
    project: Project,
) -> None:
    project.seed(4, version="3")
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    project.seed(20, version="1")
    dry = project.invoke("upgrade", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would drop the index {VERSION_INDEX} on {{__version__: 1, _id: 1}} before" in (
        dry.output
    )
    assert has_index(project)
    run = upgrade_json(project, "--version-index-rebuild-at", "1")
    assert run["version_index"] is None and has_index(project), run
    bad = project.invoke("upgrade", "--version-index-rebuild-at", "1.5")
    assert bad.exit_code == 2 and "0<=x<=1" in bad.output, bad.output


def test_a_run_stopping_on_an_error_builds_the_index_first(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.seed(2, version="3")
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    project.seed(20, version="1")
    write = stream_module.bulk_update
    calls: list[int] = []

    async def failing(collection: Any, writes: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the disk is full")
        return await write(collection, writes)

    monkeypatch.setattr(stream_module, "bulk_update", failing)
    with pytest.raises(RuntimeError, match="the disk is full"):
        project.invoke("upgrade", "--no-progress", "--batch-size", "5")
    assert has_index(project)


def test_a_run_killed_after_the_drop_leaves_the_next_run_to_build_it(project: Project) -> None:
    project.seed(3000, version="1")
    proc = project.spawn("upgrade", "--no-progress", "--batch-size", "20")
    try:
        deadline = time.monotonic() + 60
        # The first run creates no index before its writes (all pending):
        # wait for writes under way, then kill it.
        while project.versions().get("3", 0) < 200:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate()
    assert not has_index(project)
    # Meanwhile status reports the truth (a scan: no index).
    assert status_stored(project) == truth(project)
    gate = project.invoke("check", "--pending")
    assert f"has no index {VERSION_INDEX}" in gate.output, gate.output
    time.sleep(2.5)  # the killed run's lease runs out (lock-ttl = 2)
    again = project.invoke("upgrade", "--no-progress")
    assert again.exit_code == 0, again.output
    assert f"created the index {VERSION_INDEX}" in again.output, again.output
    assert has_index(project) and truth(project) == {"3": 3000}
    assert status_stored(project) == {"3": 3000}


def test_a_run_killed_with_the_index_dropped_gets_it_back(project: Project) -> None:
    project.seed(10, version="3")
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    assert has_index(project)
    project.seed(3000, version="1")
    proc = project.spawn("upgrade", "--no-progress", "--batch-size", "20")
    try:
        deadline = time.monotonic() + 60
        while has_index(project) or project.versions().get("3", 0) < 200:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate()
    assert not has_index(project)
    assert status_stored(project) == truth(project)
    time.sleep(2.5)
    run = upgrade_json(project)
    assert run["version_index"] in ("created", "created after"), run
    assert has_index(project) and truth(project) == {"3": 3010}


VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "1.0", "2.0", "v2", "4", ""]),
    st.integers(-1, 5),
    st.sampled_from([1.0, 2.0, 2.5, 3.0]),
    st.none(),
    st.just("missing"),
)


@settings(
    max_examples=COUNT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(VALUES, max_size=25), arrays=st.booleans())
def test_counts_on_the_index_are_the_scan_or_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch, values: list[Any], arrays: bool
) -> None:
    """Differential: the counts per form on the index equal the scan's (by what
    status shows), or are refused (None: a multikey index)."""
    import asyncio

    from pymongo import AsyncMongoClient

    force_index_counts(monkeypatch)
    coll = project.db[CUSTOMER]
    coll.drop()
    docs: list[dict[str, Any]] = [{} if v == "missing" else {"__version__": v} for v in values]
    if arrays:
        docs.append({"__version__": ["3", "1"]})
    if docs:
        coll.insert_many(docs)
    coll.create_index([("__version__", 1), ("_id", 1)], name=VERSION_INDEX)

    async def both() -> tuple[Any, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(project.url.rsplit("/", 1)[0])
        try:
            acoll = client[project.dbname][CUSTOMER]
            return await index_counts.indexed_version_counts(acoll, FORMS), await count_versions(
                acoll
            )
        finally:
            await client.close()

    on_index, scanned = asyncio.run(both())
    if arrays:
        assert on_index is None
    else:
        assert on_index is not None and reported(on_index) == reported(scanned)


def test_only_a_count_scan_of_an_index_that_is_not_multikey_counts_on_it() -> None:
    """The plans MongoDB explains a count with, and SecantusDB's."""

    def scan(multikey: bool) -> dict[str, Any]:
        return {
            "stage": "COUNT",
            "inputStage": {
                "stage": "COUNT_SCAN",
                "keyPattern": {"__version__": 1, "_id": 1},
                "indexName": VERSION_INDEX,
                "isMultiKey": multikey,
            },
        }

    assert index_counts.counts_on_index(scan(False))
    assert not index_counts.counts_on_index(scan(True))
    fetch = {"stage": "FETCH", "inputStage": {"stage": "IXSCAN", "isMultiKey": False}}
    assert not index_counts.counts_on_index(fetch)
    assert not index_counts.counts_on_index({"stage": "COLLSCAN"})
    assert not index_counts.counts_on_index(None)


def test_the_known_forms_match_no_document_twice() -> None:
    forms = known_forms([parse_version(v) for v in ("0", "1", "1.5", "2", "10")])
    assert forms == ["0", 0, None, "1", 1, "1.5", 1.5, "2", 2, "10", 10]


#: Generated runs of the property that a finished upgrade leaves the index.
RUN_EXAMPLES = int(os.environ.get("VERSION_INDEX_RUN_EXAMPLES", "6"))


@settings(
    max_examples=RUN_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    current=st.integers(0, 12),
    pending=st.integers(0, 12),
    indexed=st.booleans(),
    rebuild_at=st.sampled_from(["0", "0.25", "0.4", "0.5", "0.9", "1"]),
)
def test_a_finished_upgrade_always_leaves_the_index(
    project: Project, current: int, pending: int, indexed: bool, rebuild_at: str
) -> None:
    """Whatever the share pending, the setting, and whether the index was there."""
    project.db[CUSTOMER].drop()
    project.seed(current, version="3")
    project.seed(pending, version="1")
    if indexed:
        project.db[CUSTOMER].create_index([("__version__", 1), ("_id", 1)], name=VERSION_INDEX)
    run = upgrade_json(project, "--batch-size", "4", "--version-index-rebuild-at", rebuild_at)
    total = current + pending
    dropped = pending > float(rebuild_at) * total and total > 0
    expected = {
        (True, True): "rebuilt",
        (True, False): "created after",
        (False, True): None,
        (False, False): "created",
    }[(dropped, indexed)]
    assert run["version_index"] == expected, (run, dropped, indexed)
    assert has_index(project)
    assert truth(project) == ({"3": total} if total else {})


def test_a_drop_whose_answer_is_lost_still_builds_the_index_after(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop done on the server, its answer lost: sent again, it finds no index
    of its own; the run must still build the index after its writes."""
    from pymongo.errors import AutoReconnect

    from atomdb_migrate.engine import version_index as version_index_module

    project.seed(10, version="1")
    project.db[CUSTOMER].create_index([("__version__", 1), ("_id", 1)], name=VERSION_INDEX)
    drop = version_index_module.drop_version_index
    calls: list[int] = []

    async def answer_lost(collection: Any) -> bool:
        done = await drop(collection)
        calls.append(1)
        if len(calls) == 1:
            raise AutoReconnect("connection closed after the drop")
        return done

    monkeypatch.setattr(version_index_module, "drop_version_index", answer_lost)
    result = project.invoke("upgrade", "--no-progress", "--json", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    # The retry's warning comes first, as a JSON line of its own.
    report = json.loads(result.output[result.output.index("\n{\n") :])
    run = next(r for r in report["models"] if r["model"] == CUSTOMER)
    assert len(calls) == 2
    assert has_index(project), run
    assert run["version_index"] == "rebuilt", run
    assert has_index(project)
    assert truth(project) == {"3": 10}


def test_a_users_index_on_the_keys_stays_and_the_dry_run_says_so(project: Project) -> None:
    """An index on ``{__version__: 1, _id: 1}`` under the user's name is never
    dropped; the dry run must not say it would be."""
    project.seed(20, version="1")
    project.db[CUSTOMER].create_index([("__version__", 1), ("_id", 1)], name="mine")
    dry = upgrade_json(project, "--dry-run")
    run = upgrade_json(project)
    assert "mine" in project.db[CUSTOMER].index_information()
    assert truth(project) == {"3": 20}
    assert dry["version_index"] == run["version_index"], (dry, run)
