"""Old and new code reading the same data during a rolling deploy."""

from __future__ import annotations

from typing import Any

import pytest
from atom.api import Str

from atomdb_migrate import NewerDocumentError, VersionedModel, register_step

from .conftest import record

NAME = "mixed.Account"


class NewAccount(VersionedModel):
    """The code after the deploy: version 3 adds ``email``."""

    __model__ = NAME
    __version__ = 3

    owner = Str()
    email = Str()


class OldAccount(VersionedModel):
    """The code before it (version N-1 = 2): knows nothing of ``email``."""

    __model__ = NAME
    __version__ = 2

    owner = Str()


def owner(doc: dict[str, Any]) -> None:
    doc["owner"] = doc.pop("holder")


def holder(doc: dict[str, Any]) -> None:
    doc["holder"] = doc.pop("owner")


def add_email(doc: dict[str, Any]) -> None:
    doc.setdefault("email", "")


def drop_email(doc: dict[str, Any]) -> None:
    del doc["email"]


register_step(NAME, 1, 2, owner, holder)
register_step(NAME, 2, 3, add_email, drop_email)


async def new_document(db: Any) -> Any:
    account = NewAccount(owner="ada", email="ada@example.com")
    await account.save()
    return account._id


async def stored(_id: Any) -> dict[str, Any]:
    return dict(await NewAccount.objects.find_one({"_id": _id}))


async def test_old_code_gets_a_clear_error_by_default(db: Any) -> None:
    _id = await new_document(db)
    with pytest.raises(NewerDocumentError) as info:
        await OldAccount.restore(await stored(_id))
    assert str(info.value) == (
        f"model 'mixed.Account', document _id={_id!r}: stored version 3 is newer than the "
        "code's version 2; refusing to restore it"
    )
    record("mixed", raise_message=str(info.value).split(": ", 1)[1])


@pytest.mark.parametrize("policy", ["restore", "downgrade"])
async def test_old_code_reads_and_never_destroys_new_fields(db: Any, policy: str) -> None:
    _id = await new_document(db)
    before = await stored(_id)
    OldAccount.__on_newer__ = policy
    try:
        old = await OldAccount.restore(await stored(_id))
        assert old.owner == "ada"
        old.owner = "changed by old code"
        with pytest.raises(NewerDocumentError, match="refusing to save over it"):
            await old.save()
    finally:
        OldAccount.__on_newer__ = "raise"
    assert await stored(_id) == before, "email is still there"
    assert before["email"] == "ada@example.com"
    record("mixed", **{f"{policy}_policy": "restores; save() refused; stored document unchanged"})


async def test_downgrade_policy_takes_the_document_through_the_downgrade(db: Any) -> None:
    _id = await new_document(db)
    OldAccount.__on_newer__ = "downgrade"
    try:
        state = await OldAccount.upgrade_state(await stored(_id))
    finally:
        OldAccount.__on_newer__ = "raise"
    assert state["__version__"] == "2" and "email" not in state and state["owner"] == "ada"


async def test_new_code_reads_old_documents(db: Any) -> None:
    old = OldAccount(owner="grace")
    await old.save()
    new = await NewAccount.restore(await stored(old._id))
    assert (new.owner, new.email) == ("grace", "")
    await new.save()
    assert (await stored(old._id))["__version__"] == "3"
