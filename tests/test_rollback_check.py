"""A rollback build passes the gate: the old code, shipped with the new step
modules, passes `check` when its model reads newer documents
(``__on_newer__ = "downgrade"``) or when given ``--allow-newer-steps``; the
steps above the code's version are still checked as a rollback needs them
(they load, they form a chain from the code's version, each has a
downgrade, their checksums match the history).

The demo models' code is at version 3 (tests/clidemo.py); the step modules
0004 and 0005 written here stand for what the newer release shipped.

"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import EXIT_CHECK, EXIT_CHECKSUM
from atomdb_migrate.cli.main import main
from atomdb_migrate.commands import command
from atomdb_migrate.commands.config import load_config
from atomdb_migrate.commands.workspace import Workspace
from atomdb_migrate.driver.mongo import MEMORY_SCHEME
from atomdb_migrate.exceptions import ChainError
from atomdb_migrate.steps.registry import MigrationRegistry, register_step

from .clidemo import Customer
from .conftest import server_url
from .project import CUSTOMER, PYPROJECT, STEPS

#: Examples of the property test; raise it with ROLLBACK_CHECK_EXAMPLES.
ROLLBACK_CHECK_EXAMPLES = int(os.environ.get("ROLLBACK_CHECK_EXAMPLES", "200"))

#: The newer release's steps, as modules: 3 -> 4 and 4 -> 5, each with a downgrade.
NEWER_STEPS = {
    "0004_add_email.py": '''"""Give every customer an email."""

model = "clidemo.Customer"
from_version = "3"
to_version = "4"


def upgrade(doc):
    doc.setdefault("email", "")


def downgrade(doc):
    doc.pop("email", None)
''',
    "0005_add_phone.py": '''"""Give every customer a phone."""

model = "clidemo.Customer"
from_version = "4"
to_version = "5"


def upgrade(doc):
    doc.setdefault("phone", "")


def downgrade(doc):
    doc.pop("phone", None)
''',
}


@pytest.fixture
def rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_registry: MigrationRegistry
) -> Iterator[Path]:
    """A project of the old code (the demo models at 3) with the new step modules."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(STEPS, tmp_path / "migrations")
    for name, text in NEWER_STEPS.items():
        (tmp_path / "migrations" / name).write_text(text)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    yield tmp_path


def reads_newer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old code's model reads newer documents through their downgrades."""
    monkeypatch.setattr(Customer, "__on_newer__", "downgrade")


def invoke(*args: str, url: str = "") -> Result:
    env = {"MONGO_URL": url, "ATOMDB_MIGRATE_URL": ""}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def python_check(root: Path, **kwargs: Any) -> list[str]:
    config = load_config(models=["tests.clidemo"], start=root)
    return asyncio.run(command.check(Workspace(config), **kwargs))


# ---------------------------------------------------------------------------
# The command line and Python
# ---------------------------------------------------------------------------
def test_the_old_code_with_newer_steps_fails_as_before(rollback: Path) -> None:
    result = invoke("check")
    assert result.exit_code == EXIT_CHECK, result.output
    assert "goes from version 3 to 4, past the model's current version 3" in result.output
    # The message says how a rollback build passes.
    assert "__on_newer__ = 'downgrade'" in result.output
    assert "--allow-newer-steps" in result.output
    problems = python_check(rollback)
    assert any("past the model's current version 3" in p for p in problems), problems


def test_a_model_reading_newer_documents_passes_with_the_steps_above(
    rollback: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads_newer(monkeypatch)
    result = invoke("check")
    assert result.exit_code == 0, result.output
    assert python_check(rollback) == []


def test_the_flag_passes_the_steps_above(rollback: Path) -> None:
    result = invoke("check", "--allow-newer-steps")
    assert result.exit_code == 0, result.output
    assert python_check(rollback, allow_newer_steps=True) == []


def break_step(root: Path, name: str, old: str, new: str) -> None:
    path = root / "migrations" / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("how", ["on_newer", "flag"])
@pytest.mark.parametrize(
    ("broken", "said"),
    [
        # No downgrade: the rollback could not take documents at 5 back.
        (
            ("0005_add_phone.py", 'def downgrade(doc):\n    doc.pop("phone", None)\n', ""),
            "0005_add_phone.py (4 -> 5) has no downgrade function",
        ),
        # A gap: nothing leaves 4, so documents at 5 cannot come back to 3.
        (
            ("0004_add_email.py", 'to_version = "4"', 'to_version = "3.5"'),
            "no step leaves version 3.5",
        ),
        # A step module that does not load.
        (
            ("0004_add_email.py", "def upgrade(doc):", "def upgrade(doc)"),
            "0004_add_email.py:8: syntax error",
        ),
        # A step module still as `revision` wrote it.
        (
            ("0005_add_phone.py", 'doc.pop("phone", None)', "raise NotImplementedError"),
            "downgrade still raises NotImplementedError",
        ),
    ],
    ids=["no-downgrade", "gap", "syntax", "template"],
)
def test_a_broken_step_above_still_fails(
    rollback: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    broken: tuple[str, str, str],
    said: str,
) -> None:
    break_step(rollback, *broken)
    args = ["check"]
    if how == "on_newer":
        reads_newer(monkeypatch)
    else:
        args.append("--allow-newer-steps")
    result = invoke(*args)
    assert result.exit_code == EXIT_CHECK, result.output
    assert said in result.output, result.output
    problems = python_check(rollback, allow_newer_steps=how == "flag")
    assert any(said in p for p in problems), problems


def test_a_straddling_step_still_fails(rollback: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step from below the code's version to above it is no rollback's step:
    documents at 3 have no step to come back to."""
    for name in NEWER_STEPS:
        (rollback / "migrations" / name).unlink()
    (rollback / "migrations" / "0003_add_tier.py").write_text(
        NEWER_STEPS["0004_add_email.py"].replace('from_version = "3"', 'from_version = "2.5"')
    )
    reads_newer(monkeypatch)
    result = invoke("check")
    assert result.exit_code == EXIT_CHECK, result.output
    assert "goes from version 2.5 to 4, past the model's current version 3" in result.output


# ---------------------------------------------------------------------------
# Checksums of the steps above, against the history
# ---------------------------------------------------------------------------
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    name = f"rollback_{uuid.uuid4().hex[:12]}"
    if backend == "mongomock":
        return f"{MEMORY_SCHEME}testing/{name}"
    if backend != "secantus-pymongo":
        pytest.skip("the workspace opens its own PyMongo client: one server backend is enough")
    return f"{server_url(backend, request)}/{name}"


def test_a_step_above_changed_since_it_was_applied_still_fails(
    rollback: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    url = database_url(backend, request)
    reads_newer(monkeypatch)
    # The newer release recorded the checksums of its steps.
    result = invoke("stamp", "--accept-checksums", url=url)
    assert result.exit_code == 0, result.output
    result = invoke("check", "--checksums", url=url)
    assert result.exit_code == 0, result.output
    # The rollback build ships an edited step module: the gate says so.
    break_step(rollback, "0004_add_email.py", 'doc.setdefault("email", "")', "doc['email'] = 0")
    result = invoke("check", "--checksums", url=url)
    assert result.exit_code == EXIT_CHECKSUM, result.output
    assert "0004_add_email.py) changed since it was applied" in result.output
    result = invoke("check", "--checksums", "--allow-newer-steps", url=url)
    assert result.exit_code == EXIT_CHECKSUM, result.output


def test_the_gate_of_the_old_code_fails_until_the_newer_documents_are_taken_back(
    rollback: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """`check --pending` from the rollback build: the steps above pass, the documents
    newer than the old code fail it until the downgrade took them back."""
    url = database_url(backend, request)
    reads_newer(monkeypatch)
    config = load_config(url=url, models=["tests.clidemo"], start=rollback)

    async def store(*versions: str) -> None:
        async with Workspace(config) as ws:
            await ws.connect()
            await ws.database[CUSTOMER].delete_many({})
            await ws.database[CUSTOMER].insert_many(
                [
                    {"__model__": CUSTOMER, "__version__": v, "first": "Ada", "last": str(i)}
                    | ({"tier": "basic"} if v != "2" else {})
                    for i, v in enumerate(versions)
                ]
            )

    asyncio.run(store("3", "4", "5"))
    result = invoke("check", "--pending", url=url)
    assert result.exit_code == EXIT_CHECK, result.output
    assert "2 stored documents are newer than version 3" in result.output
    assert "past the model's current version" not in result.output
    asyncio.run(store("3", "3", "3"))  # as the downgrade leaves them
    result = invoke("check", "--pending", url=url)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------
# A property: what check says of the steps above is what a rollback can do
# ---------------------------------------------------------------------------
def keep(doc: dict[str, Any]) -> None:
    """A step function that changes nothing."""


@st.composite
def steps_above(draw: st.DrawFn) -> list[tuple[int, int, bool]]:
    """Steps above version 3: (from, to, has a downgrade), one per from version."""
    froms = draw(st.lists(st.integers(3, 7), unique=True, max_size=5))
    return [
        (f, draw(st.integers(f + 1, 8)), draw(st.booleans() | st.just(True))) for f in sorted(froms)
    ]


def rollback_works(registry: MigrationRegistry, above: list[tuple[int, int, bool]]) -> bool:
    """Whether the newer code reaches its version from 3 and from every version above,
    and every stored version above comes back to 3 through downgrades."""
    if not above:
        return True
    graph = registry.graph(CUSTOMER)
    latest = max(to for _, to, _ in above)
    versions = {3} | {f for f, _, _ in above} | {to for _, to, _ in above}
    try:
        for v in versions:
            graph.plan_upgrade(v, latest)
            graph.plan_downgrade(v, 3)
    except ChainError:
        return False
    return all(down for _, _, down in above)


@settings(
    max_examples=ROLLBACK_CHECK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(above=steps_above(), policy=st.sampled_from(["raise", "restore", "downgrade"]))
def test_check_passes_the_steps_above_exactly_when_a_rollback_works(
    above: list[tuple[int, int, bool]], policy: str
) -> None:
    registry = MigrationRegistry()
    registry.register_model(Customer)
    for f, t in [(0, 1), (1, 2), (2, 3)]:
        register_step(CUSTOMER, f, t, keep, keep, registry=registry)
    for f, t, down in above:
        register_step(CUSTOMER, f, t, keep, keep if down else None, registry=registry)
    works = rollback_works(registry, above)
    with mock.patch.object(Customer, "__on_newer__", policy):
        allowed = registry.problems(allow_newer=True)
        by_policy = registry.problems()
    assert (allowed == []) == works, (above, allowed)
    if policy == "downgrade":
        # The model reads newer documents: its steps above are checked as with the flag.
        assert [str(p) for p in by_policy] == [str(p) for p in allowed]
    else:
        # Otherwise a step above the code's version is a problem, as before.
        assert (by_policy == []) == (not above), (above, by_policy)
