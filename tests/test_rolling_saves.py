"""A rolling deploy with nothing refused: code one version behind saves newer documents.

`Old` is the code at version 1 with ``__on_newer__ = "downgrade"`` and the
newer release's steps shipped; `New` is the code at version 3. Both use the
same collection. A save by `Old` of an object read from a document stored
at 2 or 3 writes what it changed, through the steps; what cannot be
carried forward is refused, naming the field and the step.

"""

from __future__ import annotations

from typing import Any

import pytest
from atom.api import Int, Str

from atomdb_migrate import MigrationRegistry, VersionedModel, ops, register_step
from atomdb_migrate.engine.runner import Runner
from atomdb_migrate.exceptions import ConflictError, NewerDocumentError

NAME = "rolling.Person"


class Old(VersionedModel):
    """The code one release behind."""

    __model__ = NAME
    __version__ = 1
    __on_newer__ = "downgrade"

    name = Str()
    age = Int()


class OldNewest(VersionedModel):
    """The same code, inserting new objects at the newest version known."""

    __model__ = NAME
    __version__ = 1
    __on_newer__ = "downgrade"
    __insert_at__ = "newest"

    name = Str()
    age = Int()


class New(VersionedModel):
    """The newer release: ``name`` is ``full_name``, and ``email`` is new."""

    __model__ = NAME
    __version__ = 3

    full_name = Str()
    age = Int()
    email = Str()


@pytest.fixture
def steps(registry: MigrationRegistry) -> MigrationRegistry:
    register_step(NAME, 1, 2, operations=[ops.rename_field("name", "full_name")])
    register_step(NAME, 2, 3, operations=[ops.add_field("email", "")])
    return registry


async def stored(_id: Any) -> dict[str, Any]:
    doc = await Old.objects.find_one({"_id": _id})
    assert doc is not None
    return dict(doc)


async def newer(**fields: Any) -> Any:
    doc = {"__model__": NAME, "__version__": "3", "full_name": "Ada", "age": 36}
    doc["email"] = "ada@example.com"
    doc.update(fields)
    return (await Old.objects.insert_one(doc)).inserted_id


async def read_old(_id: Any, model: type[VersionedModel] = Old) -> Any:
    return await model.restore(await stored(_id), force=True)


async def test_a_renamed_field_is_written_under_its_new_name(
    db: Any, steps: MigrationRegistry
) -> None:
    _id = await newer()
    person = await read_old(_id)
    assert (person.name, person.age) == ("Ada", 36)
    person.name = "Ada Lovelace"
    await person.save()
    doc = await stored(_id)
    assert doc["full_name"] == "Ada Lovelace" and "name" not in doc
    assert doc["__version__"] == "3", "the version stored is kept"
    assert doc["email"] == "ada@example.com", "a field the old code does not know is untouched"
    person.age = 37
    await person.save()
    assert (await stored(_id))["age"] == 37 and (await stored(_id))["full_name"] == "Ada Lovelace"


async def test_a_concurrent_change_to_another_field_survives(
    db: Any, steps: MigrationRegistry
) -> None:
    _id = await newer()
    person = await read_old(_id)
    fresh = await New.restore(await stored(_id), force=True)
    fresh.email = "ada@lovelace.org"
    fresh.age = 40
    await fresh.save()
    person.name = "Ada L."
    await person.save()
    doc = await stored(_id)
    assert (doc["full_name"], doc["age"], doc["email"]) == ("Ada L.", 40, "ada@lovelace.org")


async def test_a_concurrent_change_to_the_same_field_is_a_conflict(
    db: Any, steps: MigrationRegistry
) -> None:
    _id = await newer()
    person = await read_old(_id)
    fresh = await New.restore(await stored(_id), force=True)
    fresh.full_name = "Augusta"
    await fresh.save()
    person.name = "Ada L."
    with pytest.raises(ConflictError) as caught:
        await person.save()
    assert caught.value.fields == ["name"] and "'name' changed since it was read" in str(
        caught.value
    )
    assert (await stored(_id))["full_name"] == "Augusta"


async def test_an_upgrade_between_read_and_save_is_followed(
    db: Any, steps: MigrationRegistry
) -> None:
    _id = (
        await Old.objects.insert_one(
            {"__model__": NAME, "__version__": "2", "full_name": "Ada", "age": 36}
        )
    ).inserted_id
    person = await read_old(_id)
    report = await Runner(db).upgrade(New)
    assert report.migrated == 1
    person.name = "Ada L."
    await person.save()
    doc = await stored(_id)
    assert (doc["__version__"], doc["full_name"], doc["email"]) == ("3", "Ada L.", "")


async def test_a_document_at_the_code_s_version_saves_as_before(
    db: Any, steps: MigrationRegistry
) -> None:
    person = Old(name="Ada", age=1)
    await person.save()
    doc = await stored(person._id)
    assert doc["__version__"] == "1" and doc["name"] == "Ada", "new objects: at the own version"
    person.age = 2
    await person.save()
    assert (await stored(person._id))["age"] == 2


async def test_new_objects_at_the_newest_version_by_the_model_s_option(
    db: Any, steps: MigrationRegistry
) -> None:
    person = OldNewest(name="Ada", age=1)
    await person.save()
    doc = await stored(person._id)
    assert (doc["__version__"], doc["full_name"], doc["email"]) == ("3", "Ada", "")
    assert "name" not in doc
    person.age = 2
    await person.save()
    assert (await stored(person._id))["age"] == 2


async def test_a_delete_of_a_newer_document_works(db: Any, steps: MigrationRegistry) -> None:
    _id = await newer()
    person = await read_old(_id)
    await person.delete()
    assert await Old.objects.find_one({"_id": _id}) is None


# ---------------------------------------------------------------------------
# Refusals: each names the field and the step
# ---------------------------------------------------------------------------
async def test_a_change_to_a_field_the_newer_version_removed_is_refused(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(NAME, 1, 2, operations=[ops.rename_field("name", "full_name")])
    register_step(NAME, 2, 3, operations=[ops.remove_field("age", 0)])
    _id = await newer()
    person = await read_old(_id)
    assert person.age == 0
    person.age = 5
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    error = caught.value
    assert error.field == "age" and error.step is not None and "2 -> 3" in error.step
    assert "ops.remove_field('age', 0)" in error.reason
    assert "'age'" in str(error) and "2 -> 3" in str(error)
    person.age = 0
    person.name = "Ada L."
    await person.save()
    assert (await stored(_id))["full_name"] == "Ada L."


async def test_a_conversion_that_cannot_be_inverted_for_the_value_is_refused(
    db: Any, registry: MigrationRegistry
) -> None:
    def back(doc: dict[str, Any]) -> None:
        doc["name"] = str(doc["name"])

    register_step(NAME, 1, 2, downgrade=back, operations=[ops.convert("name", "int")])
    register_step(NAME, 2, 3, operations=[ops.add_field("email", "")])
    _id = (
        await Old.objects.insert_one(
            {"__model__": NAME, "__version__": "3", "name": 7, "age": 1, "email": "e"}
        )
    ).inserted_id
    person = await read_old(_id)
    assert person.name == "7"
    person.name = "8"
    await person.save()
    assert (await stored(_id))["name"] == 8, "converted on the way"
    person.name = "08"
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "name" and "1 -> 2" in str(caught.value.step)
    person.name = "eight"
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "name" and "1 -> 2" in str(caught.value.step)
    assert (await stored(_id))["name"] == 8


async def test_a_python_step_without_declared_changes_is_refused(
    db: Any, registry: MigrationRegistry
) -> None:
    def up(doc: dict[str, Any]) -> None:
        doc["full_name"] = doc.pop("name")

    def down(doc: dict[str, Any]) -> None:
        doc["name"] = doc.pop("full_name")

    register_step(NAME, 1, 3, up, down)
    _id = await newer()
    person = await read_old(_id)
    person.age = 40
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "age" and "1 -> 3" in str(caught.value.step)
    assert "declare the fields it changes" in caught.value.reason


async def test_a_python_step_lets_through_the_fields_it_leaves_alone(
    db: Any, registry: MigrationRegistry
) -> None:
    def up(doc: dict[str, Any]) -> None:
        doc["full_name"] = doc.pop("name")

    def down(doc: dict[str, Any]) -> None:
        doc["name"] = doc.pop("full_name")

    register_step(NAME, 1, 3, up, down, changes=["name", "full_name"])
    _id = await newer()
    person = await read_old(_id)
    person.age = 40
    await person.save()
    assert (await stored(_id))["age"] == 40
    person.name = "Ada L."
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "name" and "changes 'name'" in caught.value.reason
    assert (await stored(_id))["full_name"] == "Ada"


async def test_a_restore_policy_still_refuses(db: Any, steps: MigrationRegistry) -> None:
    class Restoring(VersionedModel):
        __model__ = "rolling.Restoring"
        __version__ = 1
        __on_newer__ = "restore"

        name = Str()

    _id = (
        await Restoring.objects.insert_one({"__version__": "3", "__model__": Restoring.__model__})
    ).inserted_id
    obj = await Restoring.restore(await Restoring.objects.find_one({"_id": _id}))
    obj.name = "x"
    with pytest.raises(NewerDocumentError) as caught:
        await obj.save()
    assert caught.value.field is None


async def test_an_object_read_at_its_version_and_saved_newer_since_is_mapped(
    db: Any, steps: MigrationRegistry
) -> None:
    person = Old(name="Ada", age=1)
    await person.save()
    person.age = 2
    await person.save()
    fresh = await New.restore(await stored(person._id), force=True)
    fresh.email = "ada@lovelace.org"
    await fresh.save()
    assert (await stored(person._id))["__version__"] == "3"
    person.name = "Ada L."
    await person.save()
    doc = await stored(person._id)
    assert (doc["full_name"], doc["age"], doc["email"]) == ("Ada L.", 2, "ada@lovelace.org")
    assert doc["__version__"] == "3"


async def test_an_object_read_at_its_version_conflicts_on_the_same_field(
    db: Any, steps: MigrationRegistry
) -> None:
    person = Old(name="Ada", age=1)
    await person.save()
    reread = await read_old(person._id)
    fresh = await New.restore(await stored(person._id), force=True)
    fresh.age = 5
    await fresh.save()
    reread.age = 6
    with pytest.raises(ConflictError) as caught:
        await reread.save()
    assert caught.value.fields == ["age"]
    assert (await stored(person._id))["age"] == 5


async def test_a_python_step_declaring_where_it_carries_a_field_takes_part(
    db: Any, registry: MigrationRegistry
) -> None:
    def up(doc: dict[str, Any]) -> None:
        doc["full_name"] = doc.pop("name")

    def down(doc: dict[str, Any]) -> None:
        doc["name"] = doc.pop("full_name")

    step = register_step(NAME, 1, 3, up, down, changes={"name": "full_name"})
    assert step.changes == ("name", "full_name") and step.maps == (("name", "full_name"),)
    _id = await newer()
    person = await read_old(_id)
    person.name = "Ada L."
    person.age = 40
    await person.save()
    doc = await stored(_id)
    assert (doc["full_name"], doc["age"], doc["email"]) == ("Ada L.", 40, "ada@example.com")


async def test_a_declared_carry_the_downgrade_does_not_give_back_is_refused(
    db: Any, registry: MigrationRegistry
) -> None:
    def up(doc: dict[str, Any]) -> None:
        doc["full_name"] = doc.pop("name").upper()

    def down(doc: dict[str, Any]) -> None:
        doc["name"] = doc.pop("full_name")

    register_step(NAME, 1, 3, up, down, changes={"name": "full_name"})
    _id = await newer(full_name="ADA")
    person = await read_old(_id)
    person.name = "Ada L."
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "name" and "1 -> 3" in str(caught.value.step)
    assert (await stored(_id))["full_name"] == "ADA"


def test_changes_as_a_mapping_is_checked(registry: MigrationRegistry) -> None:
    from atomdb_migrate.exceptions import StepDefinitionError

    with pytest.raises(StepDefinitionError, match="map field paths to field paths"):
        register_step(NAME, 1, 3, lambda d: None, changes={"name": 3})


async def test_an_object_read_from_an_older_document_and_saved_newer_since_is_mapped(
    db: Any, steps: MigrationRegistry
) -> None:
    register_step(NAME, 0, 1, operations=[ops.add_field("age", 0)])
    _id = (await Old.objects.insert_one({"__model__": NAME, "name": "Ada"})).inserted_id
    person = await read_old(_id)
    assert person.age == 0
    fresh = await New.restore(await stored(_id), force=True)
    fresh.email = "ada@lovelace.org"
    await fresh.save()
    person.age = 3
    await person.save()
    doc = await stored(_id)
    assert (doc["__version__"], doc["full_name"], doc["age"], doc["email"]) == (
        "3",
        "Ada",
        3,
        "ada@lovelace.org",
    )


async def test_a_step_with_no_way_back_refuses_the_save_of_an_object_inserted_past_it(
    db: Any, registry: MigrationRegistry
) -> None:
    register_step(NAME, 1, 2, operations=[ops.set_default_where_missing("email", "")])
    person = OldNewest(name="Ada", age=1)
    await person.save()
    doc = await stored(person._id)
    assert (doc["__version__"], doc["name"], doc["email"]) == ("2", "Ada", "")
    person.age = 2
    with pytest.raises(NewerDocumentError) as caught:
        await person.save()
    assert caught.value.field == "age" and "1 -> 2" in str(caught.value.step)
    assert (await stored(person._id))["age"] == 1
