"""The operations' Python form, their inverses, and steps made of them (no server)."""

from __future__ import annotations

import asyncio
import copy
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from atom.api import Int, Str

from atomdb_migrate import (
    ConversionError,
    IrreversibleOperationError,
    MigrationRegistry,
    MissingDowngradeError,
    StepFailedError,
    StepModuleError,
    VersionedModel,
    load_migrations,
    ops,
    register_step,
)
from atomdb_migrate.steps.versions import run_chain
from atomdb_migrate.testing import memory_database


def applied(op: ops.Operation, doc: dict[str, Any]) -> dict[str, Any]:
    op.apply(doc)
    return doc


@pytest.mark.parametrize(
    "op, before, after",
    [
        # add_field: sets, replacing; creates missing documents on the way
        (ops.add_field("a", 1), {}, {"a": 1}),
        (ops.add_field("a", 1), {"a": 5}, {"a": 1}),
        (ops.add_field("a.b.c", [1]), {}, {"a": {"b": {"c": [1]}}}),
        (ops.add_field("a.b", 1), {"a": {"x": 2}}, {"a": {"x": 2, "b": 1}}),
        # ...and leaves a document whose path runs into a value that is not one
        (ops.add_field("a.b", 1), {"a": "text"}, {"a": "text"}),
        (ops.add_field("a.b", 1), {"a": [{"b": 0}]}, {"a": [{"b": 0}]}),
        # set_default_where_missing: only where missing; a null is not missing
        (ops.set_default_where_missing("a", 1), {}, {"a": 1}),
        (ops.set_default_where_missing("a", 1), {"a": None}, {"a": None}),
        (ops.set_default_where_missing("a.b", 1), {"a": {"b": 2}}, {"a": {"b": 2}}),
        (ops.set_default_where_missing("a.b", 1), {"a": 3}, {"a": 3}),
        # remove_field
        (ops.remove_field("a"), {"a": 1, "b": 2}, {"b": 2}),
        (ops.remove_field("a.b"), {"a": {"b": 1, "c": 2}}, {"a": {"c": 2}}),
        (ops.remove_field("a.b"), {"a": 1}, {"a": 1}),
        (ops.remove_field("x"), {"a": 1}, {"a": 1}),
        # rename_field: a bare new name stays in the same embedded document
        (ops.rename_field("heading", "title"), {"heading": "H"}, {"title": "H"}),
        (ops.rename_field("meta.a", "b"), {"meta": {"a": 1}}, {"meta": {"b": 1}}),
        (ops.rename_field("a", "b"), {"b": 2}, {"b": 2}),
        # move_field: across nesting levels; the destination is replaced
        (ops.move_field("meta.status", "status"), {"meta": {"status": "x", "k": 1}},
         {"meta": {"k": 1}, "status": "x"}),
        (ops.move_field("a", "x.y"), {"a": 1, "x": {"y": 0}}, {"x": {"y": 1}}),
        # copy_field
        (ops.copy_field("a.b", "c"), {"a": {"b": [1]}}, {"a": {"b": [1]}, "c": [1]}),
        (ops.copy_field("a", "c"), {"c": 1}, {"c": 1}),
        # convert
        (ops.convert("n", int), {"n": "42"}, {"n": 42}),
        (ops.convert("n", int), {"n": -2.7}, {"n": -2}),
        (ops.convert("n", int), {"n": True}, {"n": 1}),
        (ops.convert("n", "float"), {"n": "1e3"}, {"n": 1000.0}),
        (ops.convert("n", str), {"n": 1.0}, {"n": "1"}),
        (ops.convert("n", str), {"n": False}, {"n": "false"}),
        (ops.convert("n", bool), {"n": "TRUE"}, {"n": True}),
        (ops.convert("n", bool), {"n": 0}, {"n": False}),
        (ops.convert("n", int), {"n": None}, {"n": None}),
        (ops.convert("n", int), {}, {}),
        (
            ops.convert("at", datetime),
            {"at": {"__py__": "datetime.datetime", "year": 2024, "month": 2, "day": 29,
                    "hour": 1, "minute": 2, "second": 3, "microsecond": 456789}},
            {"at": datetime(2024, 2, 29, 1, 2, 3, 456000)},
        ),
        (
            ops.convert("at", datetime),
            {"at": {"__py__": "datetime.date", "year": 2024, "month": 1, "day": 2}},
            {"at": datetime(2024, 1, 2)},
        ),
        # rename_model: the document and every reference it holds
        (
            ops.rename_model("old.M", "new.M"),
            {"__model__": "old.M", "refs": [{"_id": 1, "__ref__": 9, "__model__": "old.M"}],
             "other": {"__model__": "x.Y"}},
            {"__model__": "new.M", "refs": [{"_id": 1, "__ref__": 9, "__model__": "new.M"}],
             "other": {"__model__": "x.Y"}},
        ),
    ],
)  # fmt: skip
def test_python_form(op: ops.Operation, before: dict[str, Any], after: dict[str, Any]) -> None:
    assert applied(op, before) == after


@pytest.mark.parametrize(
    "value, to",
    [
        ("abc", "int"),
        ("1.5", "int"),
        (" 1", "int"),
        ("9223372036854775808", "int"),
        (float("nan"), "int"),
        (1e300, "int"),
        ("1e400", "float"),
        ("inf", "float"),
        ("yes", "bool"),
        ([1], "str"),
        ({"__py__": "datetime.datetime", "year": 2023, "month": 2, "day": 30}, "datetime"),
        ({"year": 2023, "month": 2, "day": 3}, "datetime"),
        ("2023-01-01", "datetime"),
    ],
)
def test_convert_refuses(value: Any, to: str) -> None:
    with pytest.raises(ConversionError, match="cannot convert"):
        ops.convert("v", to).apply({"v": value})


def test_a_copied_value_is_not_shared() -> None:
    doc: dict[str, Any] = {"a": {"x": [1]}}
    ops.copy_field("a", "b").apply(doc)
    doc["b"]["x"].append(2)
    assert doc["a"] == {"x": [1]}
    default: list[int] = []
    op = ops.add_field("l", default)
    first, second = applied(op, {}), applied(op, {})
    first["l"].append(1)
    assert second == {"l": []}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ops.add_field("", 1), "non-empty"),
        (lambda: ops.add_field("a..b", 1), "empty name"),
        (lambda: ops.add_field("$a", 1), "may not start"),
        (lambda: ops.remove_field("_id"), "managed"),
        (lambda: ops.rename_field("__version__", "v"), "managed"),
        (lambda: ops.move_field("a", "a.b"), "overlap"),
        (lambda: ops.copy_field("a.b", "a"), "overlap"),
        (lambda: ops.convert("a", list), "cannot convert to"),
        (lambda: ops.add_field("a", {1, 2}), "not stored as it is given"),
        (lambda: ops.add_field("a", 2**64), "64 bits"),
        (lambda: ops.add_field("a", {"$set": 1}), "cannot be stored"),
        (lambda: ops.rename_model("a.M", "a.M"), "itself"),
    ],
)
def test_bad_arguments_are_refused_when_the_step_is_written(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "op, inverse",
    [
        (ops.add_field("a.b", 1), ops.remove_field("a.b", 1)),
        (ops.add_field("n", 1), ops.remove_field("n", 1)),
        (ops.rename_field("m.a", "b"), ops.rename_field("m.b", "a")),
        (ops.move_field("m.a", "b"), ops.move_field("b", "m.a")),
        (ops.copy_field("a", "b"), ops.remove_field("b")),
    ],
)
def test_exact_inverses(op: ops.Operation, inverse: ops.Operation) -> None:
    assert op.inverse() == inverse
    doc = {"m": {"a": 1, "z": 2}, "a": 3}
    undone = applied(op.inverse(), applied(op, {**doc, "m": dict(doc["m"])}))
    assert undone == doc


def test_remove_field_with_a_default_downgrades_to_the_default() -> None:
    op = ops.remove_field("a", 0)
    assert op.inverse() == ops.add_field("a", 0)
    assert applied(op.inverse(), applied(op, {"a": 3, "b": 1})) == {"a": 0, "b": 1}


@pytest.mark.parametrize(
    "op, reason",
    [
        (ops.remove_field("a"), "give remove_field"),
        (ops.set_default_where_missing("a", 1), "lacked the field"),
        (ops.convert("a", int), "may lose information"),
        (ops.rename_model("a.M", "b.M"), "rename the model back"),
    ],
)
def test_no_inverse_is_guessed(op: ops.Operation, reason: str) -> None:
    with pytest.raises(IrreversibleOperationError, match=reason):
        op.inverse()


def test_repr_is_the_code_that_makes_the_operation() -> None:
    for op in (
        ops.add_field("a.b", {"x": [1, None]}),
        ops.remove_field("a"),
        ops.remove_field("a", 0),
        ops.rename_field("a", "b"),
        ops.convert("a", datetime),
        ops.rename_model("old.M", "new.M"),
    ):
        assert eval(repr(op), {"ops": ops, "datetime": datetime}) == op


class Page(VersionedModel):
    __model__ = "test_ops.Page"
    __version__ = 3

    title = Str()
    status = Str()
    views = Int()


OPERATIONS = [
    ops.rename_field("heading", "title"),
    ops.move_field("meta.status", "status"),
    ops.add_field("views", 0),
]


async def test_a_step_of_operations_restores_and_downgrades(registry: MigrationRegistry) -> None:
    memory_database()
    register_step(Page, 2, 3, operations=OPERATIONS)
    register_step(
        Page, 1, 2, lambda d: d.update(heading=d.pop("h")), lambda d: d.update(h=d.pop("heading"))
    )
    legacy = {
        "_id": 1,
        "__model__": Page.__model__,
        "__version__": "1",
        "h": "Hi",
        "meta": {"status": "draft"},
    }
    page = await Page.restore(dict(legacy))
    assert (page.title, page.status, page.views) == ("Hi", "draft", 0)

    steps = registry.plan_downgrade(Page, "3", "1")
    back = await run_chain(steps, await Page.upgrade_state(dict(legacy)), downgrade=True)
    assert back == {**legacy, "meta": {"status": "draft"}}


async def test_operations_run_before_the_upgrade_function(registry: MigrationRegistry) -> None:
    seen: list[dict[str, Any]] = []

    def upgrade(doc: dict[str, Any]) -> None:
        seen.append(dict(doc))
        doc["views"] += 1

    register_step(Page, 2, 3, upgrade, operations=[ops.add_field("views", 10)])
    doc = await Page.upgrade_state({"_id": 1, "__version__": "2"})
    assert seen == [{"_id": 1, "__version__": "2", "views": 10}]
    assert doc["views"] == 11
    # Without a downgrade function, a step with its own upgrade has none.
    with pytest.raises(MissingDowngradeError, match="no downgrade function"):
        registry.plan_downgrade(Page, "3", "2")


async def test_an_irreversible_operation_refuses_the_downgrade(registry: MigrationRegistry) -> None:
    register_step(Page, 2, 3, operations=[ops.convert("views", int)])
    assert registry.graph(Page).steps[0].server_side
    with pytest.raises(MissingDowngradeError, match="may lose information") as info:
        registry.plan_downgrade(Page, "3", "2")
    assert "cannot be taken back to 2" in str(info.value)


@pytest.mark.parametrize(
    ("operation", "hinted"),
    [
        (ops.convert("views", int), True),
        (ops.remove_field("views"), True),
        (ops.rename_model("app.OldPage", "test_ops.Page"), False),
        (ops.drop_index("by_views"), False),
    ],
)
async def test_the_downgrade_refusal_suggests_a_function_only_where_one_is_a_remedy(
    registry: MigrationRegistry, operation: Any, hinted: bool
) -> None:
    # A downgrade function changes documents only: it cannot rename the
    # collection back, nor the references, nor create an index again.
    register_step(Page, 2, 3, operations=[operation])
    with pytest.raises(MissingDowngradeError) as info:
        registry.plan_downgrade(Page, "3", "2")
    assert ("give the step a downgrade function" in str(info.value)) is hinted


async def test_the_downgrade_function_hint_says_it_leaves_the_steps_indexes(
    registry: MigrationRegistry,
) -> None:
    # With a downgrade function, the step's derived downgrade (which would
    # drop the index it created) is not used: the hint says so.
    register_step(Page, 2, 3, operations=[ops.convert("views", int), ops.create_index("views")])
    with pytest.raises(MissingDowngradeError) as info:
        registry.plan_downgrade(Page, "3", "2")
    assert "leaves the step's indexes as they are" in str(info.value)


async def test_a_step_that_moves_the_model_refuses_its_downgrade_function(
    registry: MigrationRegistry,
) -> None:
    register_step(
        Page,
        2,
        3,
        operations=[ops.rename_model("app.OldPage", "test_ops.Page")],
        downgrade=lambda doc: None,
    )
    with pytest.raises(MissingDowngradeError) as info:
        registry.plan_downgrade(Page, "3", "2")
    assert "changes documents only" in str(info.value)
    assert "rename the model back with a new step" in str(info.value)


async def test_a_failed_conversion_names_the_document_and_the_value(
    registry: MigrationRegistry,
) -> None:
    register_step(Page, 2, 3, operations=[ops.convert("views", int)])
    with pytest.raises(StepFailedError) as info:
        await Page.upgrade_state({"_id": 7, "__version__": "2", "views": "many"})
    message = str(info.value)
    assert "_id=7" in message and "views" in message and "'many'" in message
    assert isinstance(info.value.__cause__, ConversionError)


def test_rename_model_belongs_to_the_new_name(registry: MigrationRegistry) -> None:
    with pytest.raises(Exception, match=r"must be a step of 'b\.M'"):
        register_step("a.M", 0, 1, operations=[ops.rename_model("x.M", "b.M")])
    register_step("b.M", 0, 1, operations=[ops.rename_model("a.M", "b.M")])
    assert registry.former_names("b.M") == ["a.M"]


def test_a_step_needs_a_function_or_operations(registry: MigrationRegistry) -> None:
    with pytest.raises(TypeError, match="upgrade function or operations"):
        register_step(Page, 2, 3)
    with pytest.raises(TypeError, match="not an operation"):
        register_step(Page, 2, 3, operations=[lambda d: None])  # type: ignore[list-item]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_step_modules_of_operations_load(tmp_path: Path, registry: MigrationRegistry) -> None:
    write(
        tmp_path,
        "0001_ops.py",
        """\
        "Rename heading, lift the status, count views."
        from atomdb_migrate import ops

        model = "test_ops.Page"
        from_version = "2"
        to_version = "3"
        operations = [
            ops.rename_field("heading", "title"),
            ops.move_field("meta.status", "status"),
            ops.add_field("views", 0),
        ]
        schema = {"title": "Str", "status": "Str", "views": "Int"}
        """,
    )
    (step,) = load_migrations(tmp_path, registry=registry)
    assert step.server_side and step.message.startswith("Rename heading")
    assert list(step.operations.operations) == OPERATIONS
    assert step.schema == {"title": "Str", "status": "Str", "views": "Int"}


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("operations = ops.add_field('a', 1)\n", 5, "must be a list"),
        ("operations = [ops.add_field('a..b', 1)]\n", 5, "empty name"),
        ("operations = []\nschema = ['a']\n", 6, "schema must be a dict"),
        ("upgrade = 3\noperations = []\n", 5, "'upgrade' is not callable"),
    ],
)
def test_bad_step_modules_of_operations(
    tmp_path: Path, registry: MigrationRegistry, body: str, line: int, message: str
) -> None:
    head = 'from atomdb_migrate import ops\nmodel = "m.M"\nfrom_version = "1"\nto_version = "2"\n'
    write(tmp_path, "0001_bad.py", head + body)
    with pytest.raises(StepModuleError) as info:
        load_migrations(tmp_path, registry=registry)
    ((path, at, text),) = info.value.problems
    assert path.endswith("0001_bad.py") and at == line and message in text


# ----------------------------------------------------------------------
# Paths through embedded models (issue 22, item 1)
# ----------------------------------------------------------------------
ADDRESS = "shop.Address"
GEO = "shop.Geo"
#: ``address`` is an embedded model, and so is ``address.geo`` inside it.
EMBEDDED = {("address",): ADDRESS, ("address", "geo"): GEO}


def run(operations: list[ops.Operation], doc: dict[str, Any]) -> dict[str, Any]:
    ops.Operations(operations, embedded=EMBEDDED)(doc)
    return doc


@pytest.mark.parametrize(
    "op, before, after",
    [
        # a value carried into an embedded model that is null or missing creates
        # it as atom-db stores one: with its __model__
        (ops.move_field("zip", "address.zip"), {"zip": "55555", "address": None},
         {"address": {"__model__": ADDRESS, "zip": "55555"}}),
        (ops.move_field("zip", "address.zip"), {"zip": "55555"},
         {"address": {"__model__": ADDRESS, "zip": "55555"}}),
        (ops.move_field("zip", "address.zip"),
         {"zip": "1", "address": {"__model__": ADDRESS, "city": "X"}},
         {"address": {"__model__": ADDRESS, "city": "X", "zip": "1"}}),
        (ops.copy_field("lat", "address.geo.lat"), {"lat": 1.5, "address": None},
         {"lat": 1.5, "address": {"__model__": ADDRESS, "geo": {"__model__": GEO, "lat": 1.5}}}),
        (ops.copy_field("lat", "address.geo.lat"),
         {"lat": 1.5, "address": {"__model__": ADDRESS, "geo": None}},
         {"lat": 1.5, "address": {"__model__": ADDRESS, "geo": {"__model__": GEO, "lat": 1.5}}}),
        (ops.rename_field("zip", "address.zip"), {"zip": "2"},
         {"address": {"__model__": ADDRESS, "zip": "2"}}),
        # a plain document on the way is created as {}, as before
        (ops.move_field("zip", "extra.zip"), {"zip": "3"}, {"extra": {"zip": "3"}}),
        # nothing to carry: nothing is created
        (ops.move_field("zip", "address.zip"), {"address": None}, {"address": None}),
        # a default is not set inside an embedded model that is not there: the
        # object has none, and gets none
        (ops.add_field("address.zip", ""), {"address": None}, {"address": None}),
        (ops.add_field("address.zip", ""), {}, {}),
        (ops.set_default_where_missing("address.zip", ""), {"address": None}, {"address": None}),
        (ops.set_default_where_missing("address.zip", ""), {}, {}),
        (ops.set_default_where_missing("address.geo.lat", 0), {"address": {"__model__": ADDRESS}},
         {"address": {"__model__": ADDRESS}}),
        (ops.set_default_where_missing("address.zip", ""), {"address": {"__model__": ADDRESS}},
         {"address": {"__model__": ADDRESS, "zip": ""}}),
        (ops.add_field("extra.n", 0), {}, {"extra": {"n": 0}}),
    ],
)  # fmt: skip
def test_paths_through_embedded_models(
    op: ops.Operation, before: dict[str, Any], after: dict[str, Any]
) -> None:
    assert run([op], before) == after


@pytest.mark.parametrize(
    "op, doc",
    [
        (ops.move_field("zip", "address.zip"), {"zip": "1", "address": "Main St"}),
        (ops.move_field("zip", "address.zip"), {"zip": "1", "address": [{"zip": "0"}]}),
        (ops.move_field("zip", "extra.zip"), {"zip": "1", "extra": None}),
        (ops.copy_field("zip", "extra.zip"), {"zip": "1", "extra": 5}),
        (ops.rename_field("zip", "extra.zip"), {"zip": "1", "extra": None}),
        (ops.move_field("a", "x.y"), {"a": 1, "x": 5}),
    ],
)
def test_a_value_that_cannot_be_put_where_it_goes_refuses_the_document(
    op: ops.Operation, doc: dict[str, Any]
) -> None:
    """Never left where the model no longer reads it: the document fails the step."""
    before = copy.deepcopy(doc)
    with pytest.raises(ops.UnsettablePathError) as info:
        run([op], doc)
    assert info.value.path == op.dst and doc == before
    assert repr(op) in str(info.value) or op.dst in str(info.value)


def test_a_refused_document_is_not_bumped(registry: MigrationRegistry) -> None:
    class Plain(VersionedModel):
        __model__ = "test_ops.Plain"
        __version__ = 1

    register_step(Plain, 0, 1, operations=[ops.move_field("zip", "extra.zip")])
    with pytest.raises(StepFailedError, match="extra"):
        asyncio.run(Plain.upgrade_state({"_id": 1, "zip": "1", "extra": None}))
