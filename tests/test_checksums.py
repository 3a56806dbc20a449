"""Checksums of applied steps: an edited step is caught, a reformatted one is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomdb_migrate.checksums import code_checksum
from atomdb_migrate.cli import EXIT_CHECK, EXIT_CHECKSUM, EXIT_USAGE

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
    from atomdb_migrate.checksums import step_checksum

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
