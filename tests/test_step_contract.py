"""One contract for a step function, checked in one place, and step
definitions validated once.

A step function takes the document, changes it in place and returns None, or
returns the new dict; it may be a coroutine function. Whatever else it
returns is a `StepResultError`, whether the step is a plain function or a
function run after operations.

"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import (
    MigrationRegistry,
    StepError,
    StepModuleError,
    load_migrations,
    ops,
    register_step,
)
from atomdb_migrate.steps.versions import Step, run_chain

MODEL = "tests.contract.Thing"

#: Examples of the property below (`CONTRACT_EXAMPLES`).
CONTRACT_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "150"))


def outcome(step: Step, doc: dict[str, Any]) -> tuple[str, Any]:
    """What running one step on a copy of `doc` gives: its error class, or the document."""
    try:
        return "ok", asyncio.run(run_chain([step], dict(doc)))
    except StepError as exc:
        return type(exc).__name__, str(exc).rpartition(") ")[2]


def steps_of(fn: Any, registry: MigrationRegistry) -> tuple[Step, Step]:
    """The same function as a plain step, and as the function of a step with operations."""
    plain = register_step(MODEL, 0, 1, fn, registry=registry)
    mixed = register_step(MODEL, 1, 2, fn, operations=[], registry=registry)
    return plain, mixed


def test_an_upgrade_returning_an_int_is_a_result_error_with_or_without_operations(
    registry: MigrationRegistry,
) -> None:
    plain, mixed = steps_of(lambda doc: 3, registry)
    refused = ("StepResultError", "returned int, expected a dict or None")
    assert outcome(plain, {"_id": 1}) == refused
    assert outcome(mixed, {"_id": 1}) == refused


#: What a step function may return: None, the document, a new dict, or
#: something else; perhaps from a coroutine function.
RESULTS = st.one_of(
    st.none(),
    st.just("the document"),
    st.dictionaries(st.sampled_from(["_id", "a", "b"]), st.integers(0, 3), max_size=3),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=3),
    st.tuples(st.integers()),
    st.booleans(),
)


@settings(
    max_examples=CONTRACT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(result=RESULTS, asynchronous=st.booleans(), raises=st.booleans())
def test_a_step_function_means_the_same_with_or_without_operations(
    registry: MigrationRegistry, result: Any, asynchronous: bool, raises: bool
) -> None:
    def give(doc: dict[str, Any]) -> Any:
        if raises:
            raise ValueError("no")
        doc["seen"] = True
        return doc if result == "the document" else copy.deepcopy(result)

    async def give_later(doc: dict[str, Any]) -> Any:
        return give(doc)

    with registry.isolated():
        plain, mixed = steps_of(give_later if asynchronous else give, registry)
        doc = {"_id": 1, "__version__": "0"}
        first, second = outcome(plain, doc), outcome(mixed, doc)
    if first[0] == "ok":
        # The versions differ: one step arrives at 1, the other at 2.
        first[1].pop("__version__"), second[1].pop("__version__")
    assert first == second


def test_a_step_is_frozen(registry: MigrationRegistry) -> None:
    made = register_step(MODEL, 0, 1, lambda doc: None, registry=registry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.message = "another"
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.unfinished = ("x",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.to_key = made.from_key
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.source
    # Its functions stay replaceable: the downgrade decorator, and tests
    # standing in for a function, set them.
    made.upgrade_fn = print
    assert made.upgrade_fn is print


def test_the_downgrade_decorator_still_attaches_to_the_registered_step(
    registry: MigrationRegistry,
) -> None:
    made = register_step(MODEL, 0, 1, lambda doc: None, registry=registry)

    @made.downgrade
    def back(doc: dict[str, Any]) -> None:
        doc["back"] = True

    assert registry.graph(MODEL).plan_downgrade("1", "0") == (made,)
    assert made.downgrade_fn is back


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def test_a_step_module_is_read_once(tmp_path: Path, registry: MigrationRegistry) -> None:
    """The lists a module gives are checked where the step is made, not before too."""
    write(
        tmp_path,
        "0001_once.py",
        f'''
        """Read once."""
        from atomdb_migrate import ops

        READ = {{"operations": 0, "changes": 0}}


        class Counted(list):
            def __init__(self, name, items):
                super().__init__(items)
                self.name = name

            def __iter__(self):
                READ[self.name] += 1
                return super().__iter__()


        model = "{MODEL}"
        from_version = "0"
        to_version = "1"
        operations = Counted("operations", [ops.add_field("a", 1)])
        changes = Counted("changes", ["b"])


        def upgrade(doc):
            doc["b"] = 2
        ''',
    )
    (made,) = load_migrations(tmp_path, registry=registry)
    assert made.message == "Read once."
    assert made.changes == ("b",)
    assert made.upgrade_fn.__wrapped__.__globals__["READ"] == {"operations": 1, "changes": 1}


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("operations = [lambda doc: None]\n", 5, "not an operation: <function <lambda>"),
        ("operations = ops.add_field('a', 1)\n", 5, "operations must be a list"),
        ("operations = {ops.add_field('a', 1)}\n", 5, "operations must be a list"),
        ("operations = []\nchanges = 'b'\n", 6, "changes must be a list of field paths"),
    ],
    ids=["not-an-operation", "one-operation", "a-set", "changes-a-string"],
)
def test_a_step_module_and_register_step_refuse_alike(
    tmp_path: Path, registry: MigrationRegistry, body: str, line: int, message: str
) -> None:
    head = f'from atomdb_migrate import ops\nmodel = "{MODEL}"\n'
    head += 'from_version = "1"\nto_version = "2"\n'
    write(tmp_path, "0001_bad.py", head + body)
    with pytest.raises(StepModuleError) as info:
        load_migrations(tmp_path, registry=registry)
    ((_, at, text),) = info.value.problems
    assert at == line and message in text, text
    given: dict[str, Any] = {}
    exec(head + body, given)
    with pytest.raises(TypeError) as refused:
        register_step(
            MODEL,
            1,
            2,
            operations=given.get("operations"),
            changes=given.get("changes"),
            registry=registry,
        )
    assert message in str(refused.value)
    assert len(registry.graph(MODEL)) == 0


def test_a_message_comes_from_the_first_line_of_a_docstring(registry: MigrationRegistry) -> None:
    def lift(doc: dict[str, Any]) -> None:
        """Lift the thing.

        More about it.
        """

    assert register_step(MODEL, 0, 1, lift, registry=registry).message == "Lift the thing."
    assert register_step(MODEL, 1, 2, lambda doc: None, registry=registry).message == ""
    explicit = register_step(MODEL, 2, 3, lift, message="Said.", registry=registry)
    assert explicit.message == "Said."


def test_a_model_is_found_by_its_class_name_in_one_place() -> None:
    from atomdb_migrate.steps.registry import with_class_name

    names = ["app.models.User", "app.other.Page", "legacy.Page"]
    found = {tail: with_class_name(names, tail) for tail in ("User", "Page", "Nope", "")}
    assert found == {
        "User": ["app.models.User"],
        "Page": ["app.other.Page", "legacy.Page"],
        "Nope": [],
        "": [],
    }


def test_operations_have_a_clearer_name() -> None:
    from atomdb_migrate.operations.running import StepOperations

    assert ops.Operations is StepOperations  # the old name stays
    assert ops.StepOperations is StepOperations
