"""Adopting versioning, and a chain's start: version 0, or ``__base_version__``.

A model already at ``__version__ = N`` with no step gets its first step from
0 to N (deploying.md, "Adopting versioning"); ``check`` fails while the chain
does not lead from 0 (or the model's declared base, once old steps were
squashed) to the model's version; a document stored below the base is
refused by name, and ``check --pending`` counts such documents.

The property compares the registry's `problems` with a brute force over
random step graphs; ``ADOPTION_EXAMPLES`` sets its examples (200 by default).

"""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from atom.api import Str
from hypothesis import given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    BelowBaseError,
    ChainError,
    GapError,
    InvalidVersionError,
    MigrationRegistry,
    VersionedModel,
    register_step,
)
from atomdb_migrate.autogenerate.infer import infer_operations
from atomdb_migrate.autogenerate.revision import step_versions
from atomdb_migrate.cli.main import main
from atomdb_migrate.commands.revision import Revision
from atomdb_migrate.schema.snapshots import compare
from atomdb_migrate.steps.versions import Step, parse_version

from .project import Project

ADOPTION_EXAMPLES = int(os.environ.get("ADOPTION_EXAMPLES", "200"))


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> MigrationRegistry:
    """A registry of this test alone, as in a fresh process."""
    registry = MigrationRegistry()
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    return registry


def versioned(version: int, base: int | None = None, **members: Any) -> type[VersionedModel]:
    """A model class of a new name at `version` (and `base`), registered."""
    name = f"adopt.M{uuid.uuid4().hex[:8]}"
    attrs: dict[str, Any] = {"__model__": name, "__version__": version, **members}
    if base is not None:
        attrs["__base_version__"] = base
    return type(name.rpartition(".")[2], (VersionedModel,), attrs)  # type: ignore[return-value]


def noop(doc: dict[str, Any]) -> None:
    """A step that changes nothing."""


# ----------------------------------------------------------------------
# revision: the first step of a model adopting versioning
# ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "base", "expected"),
    [(1, None, ("0", "1")), (3, None, ("0", "3")), (0, None, ("0", "1")), (3, 2, ("2", "3"))],
)
def test_the_first_step_goes_from_the_base_to_the_models_version(
    fresh: MigrationRegistry, version: int, base: int | None, expected: tuple[str, str]
) -> None:
    cls = versioned(version, base)
    assert step_versions(cls, fresh.graph(cls)) == expected


def test_with_steps_the_next_step_follows_them(fresh: MigrationRegistry) -> None:
    cls = versioned(2)
    register_step(cls, 0, 1, noop)
    assert step_versions(cls, fresh.graph(cls)) == ("1", "2")  # __version__ ahead
    register_step(cls, 1, 2, noop)
    assert step_versions(cls, fresh.graph(cls)) == ("2", "3")


PYPROJECT = """
[tool.atomdb-migrate]
models = ["{module}"]
migrations = "migrations"
"""


@pytest.fixture
def adopting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: MigrationRegistry
) -> tuple[Path, str]:
    """A project whose one model, Thing, is at version 1 with no step yet."""
    module = f"adopting_{uuid.uuid4().hex[:8]}"
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(module=module))
    (tmp_path / "migrations").mkdir()
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from atom.api import Str
            from atomdb_migrate import VersionedModel

            class Thing(VersionedModel):
                __version__ = 1
                name = Str()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, f"{module}.Thing"


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    env = {"MONGO_URL": "", "ATOMDB_MIGRATE_URL": ""}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("autogenerate", [False, True])
def test_revision_of_a_model_at_1_with_no_step_writes_0_to_1(
    adopting: tuple[Path, str], autogenerate: bool
) -> None:
    path, model = adopting
    result = invoke(
        "revision", "-m", "adopt", "--model", "Thing", *(["--autogenerate"] if autogenerate else [])
    )
    assert result.exit_code == 0, result.output
    assert f"({model} 0 -> 1)" in result.output
    assert "__version__" not in result.output  # nothing to raise
    text = (path / "migrations" / "0001_adopt.py").read_text()
    assert 'from_version = "0"' in text and 'to_version = "1"' in text
    if autogenerate:  # operations = [] to fill in by hand: a whole step already
        result = invoke("check")
        assert (result.exit_code, result.output) == (0, "ok\n")


def test_an_autogenerated_adoption_step_says_no_operation_is_needed(
    adopting: tuple[Path, str],
) -> None:
    """From 0 with no schema to compare with: the empty list is the adoption step
    (docs/deploying.md), so the hint does not send the author to write operations."""
    path, _ = adopting
    result = invoke("revision", "-m", "adopt", "--model", "Thing", "--autogenerate")
    assert result.exit_code == 0, result.output
    assert "write the fields' operations by hand" not in result.output
    assert "adopting versioning, no operation is needed if the documents" in result.output
    text = (path / "migrations" / "0001_adopt.py").read_text()
    assert "write its operations by hand" not in text
    assert "# Adopting versioning: if the documents saved so far are stored in" in text


def test_check_of_a_model_with_no_step_names_the_command(adopting: tuple[Path, str]) -> None:
    _, model = adopting
    result = invoke("check")
    assert result.exit_code == 1
    assert "is at version 1 but has no step" in result.output
    assert f"`atomdb-migrate revision --model {model} -m ...` writes it" in result.output


STEP_1_2 = """
"From 1 to 2."
model = "{model}"
from_version = "1"
to_version = "2"
operations = []
"""


def test_check_fails_a_chain_that_does_not_start_at_0(adopting: tuple[Path, str]) -> None:
    """The walk-through's probe: a step 1 -> 2 and the model at 2 passed `check`,
    while every document saved before versioning failed to read."""
    path, model = adopting
    module = path / f"{model.partition('.')[0]}.py"
    module.write_text(module.read_text().replace("__version__ = 1", "__version__ = 2"))
    (path / "migrations" / "0001_two.py").write_text(STEP_1_2.format(model=model))
    result = invoke("check")
    assert result.exit_code == 1, result.output
    assert "documents at version 0 cannot be upgraded to 2: no step leaves version 0" in (
        result.output
    )
    assert 'add a step from 0 to 1 (from_version = "0", to_version = "1"' in result.output
    assert '__base_version__ = "1"' in result.output

    # Declaring the base (the steps below it squashed) passes.
    module.write_text(
        module.read_text().replace("__version__ = 2", "__version__ = 2\n    __base_version__ = 1")
    )
    MigrationRegistry._instance = MigrationRegistry()
    import importlib
    import sys

    sys.modules.pop(model.partition(".")[0], None)
    importlib.invalidate_caches()
    result = invoke("check")
    assert (result.exit_code, result.output) == (0, "ok\n")


# ----------------------------------------------------------------------
# The base, in Python: the chain, the lazy path, the declaration
# ----------------------------------------------------------------------
def test_problems_name_the_gap_at_the_start(fresh: MigrationRegistry) -> None:
    cls = versioned(3)
    register_step(cls, 1, 2, noop)
    register_step(cls, 2, 3, noop)
    (problem,) = fresh.problems()
    assert isinstance(problem, ChainError)
    assert (problem.from_version, problem.to_version) == ("0", "1")
    assert "no step leaves version 0" in str(problem)


async def test_a_document_below_the_base_is_refused_naming_the_base(
    fresh: MigrationRegistry,
) -> None:
    cls = versioned(3, base=2, name=Str())
    register_step(cls, 2, 3, lambda doc: doc.update(name="up"))
    assert fresh.problems() == []
    assert (await cls.upgrade_state({"__version__": "2"}))["name"] == "up"
    with pytest.raises(BelowBaseError) as info:
        await cls.upgrade_state({"_id": 7, "name": "x"})
    error = info.value
    assert isinstance(error, GapError)  # caught where a gap is
    assert (error.base, error.from_version, error.missing, error.doc_id) == ("2", "0", "0", 7)
    assert "below the model's __base_version__ 2" in str(error)


async def test_without_a_base_a_gap_stays_a_gap(fresh: MigrationRegistry) -> None:
    cls = versioned(2)
    register_step(cls, 1, 2, noop)
    with pytest.raises(GapError) as info:
        await cls.upgrade_state({"name": "x"})
    assert not isinstance(info.value, BelowBaseError)


async def test_steps_below_the_base_still_run_when_they_are_kept(
    fresh: MigrationRegistry,
) -> None:
    cls = versioned(2, base=1, name=Str())
    register_step(cls, 0, 1, lambda doc: doc.update(name="from 0"))
    register_step(cls, 1, 2, noop)
    assert fresh.problems() == []
    assert (await cls.upgrade_state({}))["name"] == "from 0"


def test_a_base_above_the_version_or_no_version_is_refused(fresh: MigrationRegistry) -> None:
    with pytest.raises(ChainError, match="__base_version__ 3 is above __version__ 2"):
        versioned(2, base=3)
    with pytest.raises(InvalidVersionError, match="__base_version__"):
        versioned(2, base="two")  # type: ignore[arg-type]
    assert versioned(2, base="1.0").__base_version__ == "1"  # type: ignore[arg-type]
    assert versioned(2).__base_version__ == "0"


def test_a_model_at_its_base_needs_no_step(fresh: MigrationRegistry) -> None:
    versioned(4, base=4)
    assert fresh.problems() == []


def test_the_rename_hint_ends_without_a_comma(fresh: MigrationRegistry) -> None:
    cls = versioned(1)
    diff = compare({"title": "Str"}, {"name": "Str"})
    (hint,) = [h for h in infer_operations(cls, diff).hints if h.startswith("RENAME?")]
    assert hint.endswith("ops.rename_field('title', 'name')"), hint


# ----------------------------------------------------------------------
# check --pending: documents stored below the base
# ----------------------------------------------------------------------
def test_check_pending_counts_the_documents_below_the_base(project: Project) -> None:
    """The demo Customer declares __base_version__ = 1."""
    project.seed(3, version=None)
    project.seed(2)
    result = project.invoke("check", "--pending")
    assert result.exit_code == 1
    assert (
        "model 'clidemo.Customer': 3 stored documents are below its __base_version__ 1 "
        "(3 at version 0)"
    ) in result.output
    assert "`atomdb-migrate upgrade` from the release that still has those steps" in (result.output)
    project.db["clidemo.Customer"].delete_many({"__version__": {"$exists": False}})
    result = project.invoke("check", "--pending")
    assert "below its __base_version__" not in result.output


# ----------------------------------------------------------------------
# The property: check passes exactly when every version from the base up
# to the model's has a path to it
# ----------------------------------------------------------------------
VERSIONS = 7


@st.composite
def step_graphs(draw: st.DrawFn) -> tuple[int, int, dict[int, int]]:
    """A head, a base at or below it, and steps (the version each leaves: the
    version it reaches, above it), any of them around, below or above both."""
    head = draw(st.integers(0, VERSIONS - 1))
    base = draw(st.integers(0, head))
    leaves = draw(st.sets(st.integers(0, VERSIONS - 1), max_size=VERSIONS))
    steps = {v: draw(st.integers(v + 1, VERSIONS)) for v in sorted(leaves)}
    return head, base, steps


def reaches(steps: dict[int, int], version: int, head: int) -> bool:
    """Whether following the steps from `version` lands on `head` exactly."""
    while version < head:
        if version not in steps:
            return False
        version = steps[version]
    return version == head


def expected_to_pass(head: int, base: int, steps: dict[int, int]) -> bool:
    """Brute force: every version a document may hold, from the base up to the
    head (the base, and each version a step from the base up leaves or
    reaches), leads to the head; and no step leaves the head or above."""
    kept = {f: t for f, t in steps.items() if f >= base}
    stored = {base} | set(kept) | set(kept.values())
    return all(reaches(steps, v, head) for v in stored if v <= head) and not any(
        f >= head for f in kept
    )


class Fake:
    """A model as the registry knows one: its name and versions."""

    __on_newer__ = "raise"


@settings(max_examples=ADOPTION_EXAMPLES, deadline=None)
@given(step_graphs())
def test_check_passes_exactly_when_every_stored_version_reaches_the_head(
    graph: tuple[int, int, dict[int, int]],
) -> None:
    head, base, steps = graph
    registry = MigrationRegistry()
    cls = type("Fake", (Fake,), {"__model__": "prop.Fake", "__version__": str(head)})
    cls.__parsed_version__ = parse_version(head)  # type: ignore[attr-defined]
    cls.__base_version__ = str(base)  # type: ignore[attr-defined]
    registry.register_model(cls)
    for f, t in steps.items():
        registry.add_step(Step("prop.Fake", str(f), str(t), noop))
    assert (registry.problems() == []) == expected_to_pass(head, base, steps), graph

    # The lazy path agrees: below the base, a version no step leaves is
    # refused naming the base; from the base up, a gap is a gap.
    planned = registry.graph(cls)
    for v in range(head + 1):
        try:
            planned.plan_upgrade(v, head)
        except GapError as exc:
            assert not reaches(steps, v, head)
            assert isinstance(exc, BelowBaseError) == (v < base), (v, exc)
        except ChainError:  # a step past the head on the way
            assert not reaches(steps, v, head)
        else:
            assert reaches(steps, v, head)


@settings(max_examples=int(os.environ.get("ADOPTION_HINT_EXAMPLES", "100")), deadline=None)
@given(major=st.integers(0, 5), minor=st.one_of(st.none(), st.integers(0, 3)))
def test_only_a_step_from_0_is_told_it_may_need_no_operation(major: int, minor: int | None) -> None:
    start = str(major) if minor is None else f"{major}.{minor}"
    done = Revision(Path("m.py"), "app.M", start, "9")
    adoption = "adopting versioning" in done.left_to_write
    assert adoption == (parse_version(start) == parse_version("0")), (start, done.left_to_write)


@given(n=st.integers(min_value=0, max_value=10**9))
@settings(max_examples=50, deadline=None)
def test_check_pending_counts_speak_in_number(n: int) -> None:
    """``check --pending``'s counts agree with their noun and verb: one document is, two are."""
    from atomdb_migrate.commands.check import _stored

    said = _stored(n)
    assert said == (f"{n} stored document is" if n == 1 else f"{n} stored documents are")
    assert _stored(n, "has", "have", stored="").endswith("has" if n == 1 else "have")
