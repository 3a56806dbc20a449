"""The toolkit's own index on ``{__version__: 1, _id: 1}``.

`upgrade` creates it (once, announced; ``version-index = false`` goes
without), and then reads the pending documents through it, by the versions
behind, instead of reading every document not at the target.
"""

from __future__ import annotations

from typing import Any

import pytest

from atomdb_migrate.driver.mongo import VERSION_INDEX
from atomdb_migrate.engine.runner import Runner

from .project import CUSTOMER, Project


def indexes(project: Project) -> dict[str, Any]:
    return dict(project.db[CUSTOMER].index_information())


def test_upgrade_creates_the_index_once_and_announces_it(project: Project) -> None:
    project.seed(5)
    dry = project.invoke("upgrade", "--dry-run")
    assert f"would create the index {VERSION_INDEX}" in dry.output
    assert VERSION_INDEX not in indexes(project)
    first = project.invoke("upgrade", "--no-progress")
    assert first.exit_code == 0, first.output
    assert f"created the index {VERSION_INDEX} on {{__version__: 1, _id: 1}}" in first.output
    assert indexes(project)[VERSION_INDEX]["key"] == [("__version__", 1), ("_id", 1)]
    project.seed(2)
    second = project.invoke("upgrade", "--no-progress")
    assert second.exit_code == 0 and "created the index" not in second.output
    assert project.versions() == {"3": 7}


def test_with_the_index_the_pending_documents_are_read_through_it(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.seed(20)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    project.seed(3, version="2")
    project.seed(2, version="1")
    status = project.invoke("status")
    assert "stored 1: 2, 2: 3, 3: 20; 5 pending" in status.output, status.output
    read: list[Any] = []
    pump = Runner._pump

    async def spy(self: Runner, run: Any, query: dict[str, Any], total: int) -> None:
        read.append(query)
        await pump(self, run, query, total)

    monkeypatch.setattr(Runner, "_pump", spy)
    result = project.invoke("upgrade", "--no-progress")
    assert result.exit_code == 0, result.output
    # By the versions behind (and those steps store on the way), not "$ne": the index serves it.
    assert read and all("$in" in q["__version__"] for q in read), read
    assert project.versions() == {"3": 25}
    assert project.invoke("check", "--pending").exit_code == 0
    # A run with nothing to do reads no document.
    read.clear()
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    assert read == []


def test_a_version_written_by_hand_is_still_found(project: Project) -> None:
    project.seed(4)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    # Forms the chain does not store: the survey finds them, and the read takes them.
    project.seed(1, version="1.0")
    project.seed(1, version="v2")
    status = project.invoke("status")
    assert "2 pending" in status.output, status.output
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    assert project.versions() == {"3": 6}


def test_the_read_of_the_pending_documents_is_an_index_scan(project: Project) -> None:
    project.seed(3)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    for query in ({"__version__": "2"}, {"__version__": {"$in": ["1", 1, "2"]}}):
        plan = project.db.command(
            "explain",
            {"find": CUSTOMER, "filter": query, "sort": {"_id": 1}},
            verbosity="queryPlanner",
        )
        assert "COLLSCAN" not in repr(plan["queryPlanner"]["winningPlan"]), plan


def test_version_index_false_goes_without(project: Project) -> None:
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "version-index = false\n")
    project.seed(3)
    result = project.invoke("upgrade", "--no-progress")
    assert result.exit_code == 0 and "index" not in result.output
    assert VERSION_INDEX not in indexes(project)
    assert project.versions() == {"3": 3}
    pyproject.write_text(pyproject.read_text().replace("false", '"no"'))
    bad = project.invoke("status")
    assert bad.exit_code == 3 and "version-index has the wrong type (str)" in bad.output


def test_the_gate_advises_the_index_without_failing(project: Project) -> None:
    project.seed(2, version="3")
    result = project.invoke("check", "--pending")
    assert result.exit_code == 0, result.output
    assert "note: model 'clidemo.Customer': collection clidemo.Customer has no index " in (
        result.output
    )
    assert "`atomdb-migrate upgrade` creates it" in result.output
    # No note for a model with nothing stored (clidemo.Order).
    assert "clidemo.Order" not in result.output
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    result = project.invoke("check", "--pending")
    assert result.exit_code == 0 and "note:" not in result.output, result.output
    # Opted out: the note says how to opt in.
    project.db[CUSTOMER].drop_index(VERSION_INDEX)
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "version-index = false\n")
    result = project.invoke("check", "--pending")
    assert result.exit_code == 0, result.output
    assert "set version-index = true in [tool.atomdb-migrate]" in result.output
