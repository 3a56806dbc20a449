"""Checksums of applied steps: an edited step is caught, a reformatted one is not."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from atomdb_migrate.cli.exits import EXIT_CHECK, EXIT_CHECKSUM, EXIT_USAGE
from atomdb_migrate.commands.checksums import code_checksum

from .project import CUSTOMER, Project

STEP = '''
"""Split name into first and last."""

model = "clidemo.Customer"
from_version = "1"
to_version = "2"


def upgrade(doc):
    doc["first"], _, doc["last"] = doc.pop("name").partition(" ")
'''

SAME_CODE = {
    "a comment": STEP + "# reviewed by Ada\n",
    "a docstring": STEP.replace("def upgrade(doc):\n", 'def upgrade(doc):\n    """Split."""\n'),
    "the module's docstring": STEP.replace("Split name into", "Split a name into"),
    "a reformat": STEP.replace(
        'doc.pop("name").partition(" ")', "doc.pop( 'name' ).partition(' ')"
    ),
    "blank lines": STEP.replace("\n\n\n", "\n\n\n\n\n"),
    "a line break": STEP.replace(
        'doc["first"], _, doc["last"] = doc.pop("name").partition(" ")',
        'doc["first"], _, doc["last"] = (\n        doc.pop("name").partition(" ")\n    )',
    ),
}

OTHER_CODE = {
    "another separator": STEP.replace('partition(" ")', 'partition(",")'),
    "another version": STEP.replace('to_version = "2"', 'to_version = "3"'),
    "one more statement": STEP + "    doc['x'] = 1\n",
    "a default": STEP.replace('doc.pop("name")', 'doc.pop("name", "")'),
    "an import": "import os\n" + STEP,
}


@pytest.mark.parametrize("change", list(SAME_CODE))
def test_what_does_not_run_does_not_count(change: str) -> None:
    assert code_checksum(SAME_CODE[change]) == code_checksum(STEP)


@pytest.mark.parametrize("change", list(OTHER_CODE))
def test_any_change_to_the_code_counts(change: str) -> None:
    assert code_checksum(OTHER_CODE[change]) != code_checksum(STEP)


def step_file(project: Project) -> Path:
    return project.path / "migrations" / "0001_split_name.py"


def test_an_edited_step_fails_check_until_its_checksum_is_accepted(project: Project) -> None:
    project.seed(3)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    run = project.db["atomdb_migrate_history"].find_one({"command": "upgrade"})
    recorded = {(c["model"], c["from"], c["to"]) for c in run["checksums"]}
    assert (CUSTOMER, "1", "2") in recorded
    assert project.invoke("check", "--checksums").exit_code == 0

    # A comment and a reformat: still the same step.
    path = step_file(project)
    original = path.read_text()
    path.write_text("# reviewed\n" + original.replace("    if doc", "    if  doc"))
    assert project.invoke("check", "--checksums").exit_code == 0

    # The code changed after it was applied: check fails, naming the module.
    path.write_text(original.replace('partition(" ")', 'partition(",")'))
    for args in (("check", "--checksums"), ("check", "--pending")):
        result = project.invoke(*args)
        assert result.exit_code == EXIT_CHECKSUM, result.output
        assert "0001_split_name.py" in result.output
        assert "changed since it was applied to this database" in result.output
        assert "stamp --accept-checksums" in result.output
    code, out = project.run("check", "--checksums")  # the installed command, as a deploy runs it
    assert code == EXIT_CHECKSUM and "0001_split_name.py" in out and "Traceback" not in out
    # Without a database, check cannot know: it does not connect.
    assert project.invoke("check").exit_code == 0

    # After review, the new checksum is recorded.
    accepted = project.invoke("stamp", "--accept-checksums")
    assert accepted.exit_code == 0, accepted.output
    assert "1 changed" in accepted.output
    assert project.invoke("check", "--checksums").exit_code == 0
    record = project.db["atomdb_migrate_history"].find_one({"arguments.accept_checksums": True})
    assert record["outcome"] == "succeeded" and record["checksums"]


def test_a_checksum_problem_and_another_exit_with_the_checksum_code(project: Project) -> None:
    project.seed(1)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    path = step_file(project)
    path.write_text(path.read_text() + "\n\ndef helper():\n    return 1\n")
    project.seed(1)  # pending again
    result = project.invoke("check", "--pending")
    assert result.exit_code == EXIT_CHECKSUM, result.output
    assert "behind version" in result.output and "0001_split_name.py" in result.output
    assert EXIT_CHECKSUM not in (EXIT_CHECK, EXIT_USAGE)


def test_stamp_needs_a_model_and_a_version_or_accept_checksums(project: Project) -> None:
    assert project.invoke("stamp").exit_code == EXIT_USAGE
    assert project.invoke("stamp", CUSTOMER).exit_code == EXIT_USAGE
    assert project.invoke("stamp", CUSTOMER, "2", "--accept-checksums").exit_code == EXIT_USAGE
    result = project.invoke("stamp", "--accept-checksums", CUSTOMER)
    assert result.exit_code == 0, result.output
    assert "recorded the checksums of" in result.output


def test_steps_in_code_are_checksummed_from_their_source() -> None:
    from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
    from atomdb_migrate.commands.checksums import step_checksum

    class Noted(VersionedModel):
        __model__ = "checksums.Noted"
        __version__ = 2

    def first(doc: dict) -> None:
        doc["a"] = 1

    def second(doc: dict) -> None:
        doc["a"] = 2

    with MigrationRegistry.instance().isolated():
        a = register_step(Noted, 1, 2, first, operations=[ops.add_field("b", 1)])
        sums = {step_checksum(a)}
    with MigrationRegistry.instance().isolated():
        b = register_step(Noted, 1, 2, second, operations=[ops.add_field("b", 1)])
        sums.add(step_checksum(b))
    with MigrationRegistry.instance().isolated():
        c = register_step(Noted, 1, 2, operations=[ops.add_field("b", 2)])
        sums.add(step_checksum(c))
    assert None not in sums and len(sums) == 3


# ----------------------------------------------------------------------
# What a step imports; its schema; what the message claims (issue 22, item 17)
# ----------------------------------------------------------------------
TIER_STEP = '''
"""Give every customer a tier."""

from {module} import TIER

model = "clidemo.Customer"
from_version = "2"
to_version = "3"


def upgrade(doc):
    doc.setdefault("tier", TIER)
'''


@pytest.fixture
def helper(project: Project) -> Iterator[str]:
    """A module of the project's own, named for the test, that a step imports."""
    name = f"helpers_{project.dbname}"
    (project.path / "pkg").mkdir()
    (project.path / "pkg" / "__init__.py").write_text("")
    (project.path / "pkg" / "tiers.py").write_text('TIER = "basic"\n')
    (project.path / f"{name}.py").write_text("from pkg.tiers import TIER\n")
    step = project.path / "migrations" / "0002_add_tier.py"
    step.write_text(TIER_STEP.format(module=name))
    yield name
    for module in (name, "pkg", "pkg.tiers"):
        sys.modules.pop(module, None)


def test_a_step_covers_the_project_modules_it_imports(project: Project, helper: str) -> None:
    """A step does `from helpers import TIER`; helpers takes it from pkg.tiers. A change
    in either, after the step was applied, fails check --checksums, naming the module."""
    project.seed(2)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    run = project.db["atomdb_migrate_history"].find_one({"command": "upgrade"})
    (entry,) = [c for c in run["checksums"] if c["to"] == "3"]
    assert sorted(entry["imports"]) == sorted([helper, "pkg", "pkg.tiers"])
    assert project.invoke("check", "--checksums").exit_code == 0

    tiers = project.path / "pkg" / "tiers.py"
    tiers.write_text('# a comment counts for nothing\nTIER = "basic"\n')
    assert project.invoke("check", "--checksums").exit_code == 0
    tiers.write_text('TIER = "gold"\n')
    result = project.invoke("check", "--checksums")
    assert result.exit_code == EXIT_CHECKSUM, result.output
    assert "0002_add_tier.py" in result.output and "pkg.tiers" in result.output
    code, out = project.run("check", "--checksums")  # a fresh process, as a deploy runs it
    assert code == EXIT_CHECKSUM and "pkg.tiers" in out, out
    assert project.invoke("stamp", "--accept-checksums").exit_code == 0
    assert project.invoke("check", "--checksums").exit_code == 0


def test_installed_packages_and_the_standard_library_do_not_count(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package installed in the project's own virtual environment is not the
    project's code: upgrading it does not change the steps' checksums."""
    site = project.path / ".venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    name = f"installed_{project.dbname}"
    (site / f"{name}.py").write_text('TIER = "basic"\n')
    monkeypatch.syspath_prepend(str(site))
    step = project.path / "migrations" / "0002_add_tier.py"
    step.write_text("import json\nimport bson\n" + TIER_STEP.format(module=name))
    try:
        project.seed(1)
        assert project.invoke("upgrade", "--no-progress").exit_code == 0
        run = project.db["atomdb_migrate_history"].find_one({"command": "upgrade"})
        (entry,) = [c for c in run["checksums"] if c["to"] == "3"]
        assert entry["imports"] == {}
        (site / f"{name}.py").write_text('TIER = "gold"\n')
        assert project.invoke("check", "--checksums").exit_code == 0
    finally:
        sys.modules.pop(name, None)


#: Customer's fields at version 3, as a schema snapshot.
SCHEMA = """
schema = {"applied": "Int", "first": "Str", "last": "Str", "seq": "Int", "tier": "Str"}
"""


def test_a_schema_added_to_an_applied_step_is_no_change(project: Project) -> None:
    """`check` and autogenerate tell the author to add `schema = {...}`: metadata,
    not code, so the applied step's checksum stays."""
    project.seed(1)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    path = project.path / "migrations" / "0002_add_tier.py"
    text = path.read_text()
    path.write_text(text + SCHEMA)
    result = project.invoke("check", "--pending")
    assert result.exit_code == 0, result.output
    path.write_text(text + SCHEMA.replace('"Str"}', '"Str"}; schema["x"] = "Int"'))
    result = project.invoke("check", "--checksums")
    assert result.exit_code == EXIT_CHECKSUM, "another statement is code"


def test_a_checksum_recorded_before_imports_were_counted_still_matches(project: Project) -> None:
    """A record without `imports` (written by an earlier release) holds the checksum
    of the whole module, schema included: the step as it was is no change."""
    from atomdb_migrate.commands.checksums import code_checksum

    path = project.path / "migrations" / "0002_add_tier.py"
    path.write_text(path.read_text() + SCHEMA)
    checksum = code_checksum(path.read_text())
    legacy = {"model": CUSTOMER, "from": "2", "to": "3", "checksum": checksum}
    project.db["atomdb_migrate_history"].insert_one(
        {
            "command": "upgrade",
            "outcome": "succeeded",
            "started_at": datetime.datetime.now(datetime.UTC),
            "checksums": [legacy],
        }
    )
    result = project.invoke("check", "--checksums")
    assert result.exit_code == 0, result.output
    path.write_text(path.read_text().replace('"basic"', '"gold"'))
    assert project.invoke("check", "--checksums").exit_code == EXIT_CHECKSUM


@pytest.mark.parametrize("stored", [0, 3])
def test_the_message_says_what_the_database_holds(project: Project, stored: int) -> None:
    project.seed(stored)
    assert project.invoke("upgrade", "--no-progress").exit_code == 0
    path = step_file(project)
    path.write_text(path.read_text().replace('partition(" ")', 'partition(",")'))
    result = project.invoke("check", "--checksums")
    assert result.exit_code == EXIT_CHECKSUM
    if stored:
        assert f"This database holds {stored} documents of model {CUSTOMER!r}" in result.output
    else:
        assert "holds other documents" not in result.output
        assert f"This database holds no document of model {CUSTOMER!r}" in result.output


def test_imports_are_followed_through_packages_relative_imports_and_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Imports anywhere in a module (inside a function too), `import a.b` (which runs
    a), relative imports inside the project's packages, and a cycle, each once."""
    from atomdb_migrate.commands.checksums import imported_modules, project_root

    tag = tmp_path.name.replace("-", "_")
    (tmp_path / "pyproject.toml").write_text("")
    pkg = tmp_path / f"app_{tag}"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import rates\n")
    (pkg / "sub" / "rates.py").write_text(f"from ..consts import X\nimport app_{tag}.sub\n")
    (pkg / "consts.py").write_text(f"from app_{tag}.sub import rates\nX = 1\n")
    (pkg / "unused.py").write_text("")
    step = tmp_path / "migrations" / "0001_step.py"
    step.parent.mkdir()
    step.write_text(
        f"import json\ndef upgrade(doc):\n    from app_{tag}.sub.rates import X\n    doc['x'] = X\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = [name for name, _ in imported_modules(step, project_root(step))]
    finally:
        for name in list(sys.modules):
            if name.startswith(f"app_{tag}"):
                del sys.modules[name]
    names = [f"app_{tag}{suffix}" for suffix in ("", ".sub", ".sub.rates", ".consts")]
    assert sorted(found) == sorted(names), found


def test_a_schema_the_code_reads_is_code() -> None:
    """A module that reads its own `schema` (to drive the upgrade, say) runs it:
    then it counts."""
    from atomdb_migrate.commands.checksums import module_checksum

    base = STEP + '\nschema = {"first": "Str"}\n'
    assert module_checksum(base) == module_checksum(base.replace('"Str"', '"Int"'))
    reads = STEP + "    doc.update(schema)\n" + '\nschema = {"first": "Str"}\n'
    assert "doc.update(schema)" in reads
    reads_other = reads.replace('"Str"}', '"Int"}')
    assert module_checksum(reads) != module_checksum(reads_other)


def test_finding_what_a_step_imports_runs_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import only `upgrade` makes is found without running the package it is in."""
    from atomdb_migrate.commands.checksums import imported_modules

    tag = tmp_path.name.replace("-", "_")
    (tmp_path / "pyproject.toml").write_text("")
    pkg = tmp_path / f"noisy_{tag}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "rates.py").write_text("X = 1\n")
    step = tmp_path / "migrations" / "0001_step.py"
    step.parent.mkdir()
    step.write_text(f"def upgrade(doc):\n    from noisy_{tag}.rates import X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [name for name, _ in imported_modules(step, tmp_path)]
    assert found == [f"noisy_{tag}", f"noisy_{tag}.rates"]
    assert f"noisy_{tag}" not in sys.modules


def test_a_module_in_another_encoding_has_its_checksum(tmp_path: Path) -> None:
    """A step module (or a module it imports) declaring another encoding, as Python
    reads it: it had no checksum at all, so check could not see it edited."""
    from atomdb_migrate import MigrationRegistry, load_migrations
    from atomdb_migrate.commands.checksums import _read, module_checksum, step_checksum

    text = "# -*- coding: latin-1 -*-\n" + STEP.replace("Split name", "Split the café's name")
    (tmp_path / "0001_split_name.py").write_bytes(text.encode("latin-1"))
    with MigrationRegistry.instance().isolated():
        (step,) = load_migrations(tmp_path)
        assert step_checksum(step) == module_checksum(text) is not None
    helper = tmp_path / "helper.py"
    helper.write_bytes("# -*- coding: latin-1 -*-\nNAME = 'café'\n".encode("latin-1"))
    assert _read(helper, "") is not None


#: Examples of the property test below; raise it with ENCODING_EXAMPLES.
ENCODING_EXAMPLES = int(os.environ.get("ENCODING_EXAMPLES", "25"))


@settings(max_examples=ENCODING_EXAMPLES, deadline=None)
@given(
    st.sampled_from(["latin-1", "cp1252", "iso-8859-15", "utf-8"]),
    st.text(st.characters(codec="latin-1", categories=("L", "N", "P", "Zs")), max_size=30),
)
def test_every_encoding_a_module_may_declare_is_read_as_python_reads_it(
    tmp_path_factory: pytest.TempPathFactory, coding: str, words: str
) -> None:
    """The step's checksum and what is left to write in it, whatever encoding it declares
    and whatever its comments and docstring hold."""
    from atomdb_migrate import MigrationRegistry, load_migrations
    from atomdb_migrate.commands.checksums import module_checksum, step_checksum

    try:
        words.encode(coding)
    except UnicodeEncodeError:
        assume(False)
    text = (
        f"# -*- coding: {coding} -*-\n# {words}\n"
        + STEP.replace("Split name", f"Split name {words!r}")
        + "# LOSSY: 'name' is cut at its first space; delete this comment\n"
    )
    folder = tmp_path_factory.mktemp("encoding")
    (folder / "0001_split_name.py").write_bytes(text.encode(coding))
    with MigrationRegistry.instance().isolated():
        (step,) = load_migrations(folder)
        assert step_checksum(step) == module_checksum(text)
        assert any(u.startswith("line ") and "LOSSY:" in u for u in step.unfinished), step
