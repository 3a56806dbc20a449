"""Every combination of a model's policies, with full and projected reads.

However a model says to treat newer documents (``__on_newer__``) and
whether it writes upgrades back (``__write_back__``), and whatever
projection the app reads through, a read leaves the stored document either
as it was or fully upgraded: it never moves to a lower version, and it never
loses a field that the full upgrade would keep.

"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
from atom.api import Str
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrateError, MigrationRegistry, VersionedModel, register_step
from atomdb_migrate.steps.versions import stored_version


def rename_in(doc: dict[str, Any]) -> None:
    if "name" in doc:
        doc["full"] = doc.pop("name")


def rename_out(doc: dict[str, Any]) -> None:
    if "full" in doc:
        doc["name"] = doc.pop("full")


def split(doc: dict[str, Any]) -> None:
    doc["first"], _, doc["last"] = str(doc.pop("full", "")).partition(" ")


def join(doc: dict[str, Any]) -> None:
    doc["full"] = f"{doc.pop('first', '')} {doc.pop('last', '')}".strip()


def add_email(doc: dict[str, Any]) -> None:
    doc["email"] = str(doc.get("first", "")).lower() + "@example.com"


def drop_email(doc: dict[str, Any]) -> None:
    doc.pop("email", None)


def make_model(on_newer: str, write_back: bool) -> type[VersionedModel]:
    name = f"policies.{on_newer}_{int(write_back)}"
    return type(  # type: ignore[return-value]
        f"P_{on_newer}_{int(write_back)}",
        (VersionedModel,),
        {
            "__model__": name,
            "__version__": 2,
            "__on_newer__": on_newer,
            "__write_back__": write_back,
            "first": Str(),
            "last": Str(),
            "other": Str(),
        },
    )


MODELS = [make_model(p, w) for p, w in itertools.product(("raise", "restore", "downgrade"), (0, 1))]
FIELDS = ["name", "full", "first", "last", "email", "other"]

stored_doc = st.fixed_dictionaries(
    {},
    optional={
        **{f: st.sampled_from(["Ada Lovelace", "Grace", "", "x y z"]) for f in FIELDS},
        "__version__": st.sampled_from(["0", "1", "2", "3", 1, 2.0, None]),
    },
)
# A projection may leave out the version too: every document then reads as
# version 0, and that must be safe as well.
projection = st.one_of(
    st.none(),
    st.lists(st.sampled_from([*FIELDS, "__version__"]), min_size=1, unique=True).flatmap(
        lambda keys: st.sampled_from([dict.fromkeys(keys, 1), dict.fromkeys(keys, 0)])
    ),
)


@pytest.fixture
def chains(registry: MigrationRegistry) -> MigrationRegistry:
    for model in MODELS:
        register_step(model, 0, 1, rename_in, rename_out)
        register_step(model, 1, 2, split, join)
        register_step(model, 2, 3, add_email, drop_email)
    return registry


async def full_upgrade(model: type[VersionedModel], doc: dict[str, Any]) -> dict[str, Any] | None:
    """What the stored document would be after a complete upgrade (None: no upgrade)."""
    try:
        if stored_version(doc.get("__version__")) >= model.__parsed_version__:
            return None
        return await model.upgrade_state(doc)
    except MigrateError:
        return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    model=st.sampled_from(MODELS),
    docs=st.lists(stored_doc, min_size=1, max_size=4),
    reads=st.lists(projection, min_size=1, max_size=3),
)
async def test_a_read_leaves_the_document_as_it_was_or_fully_upgraded(
    db: Any,
    chains: MigrationRegistry,
    model: type[VersionedModel],
    docs: list[dict[str, Any]],
    reads: list[dict[str, int] | None],
) -> None:
    collection = model.objects
    await collection.delete_many({})
    model.objects.cache.clear()
    ids = (await collection.insert_many([dict(d) for d in docs])).inserted_ids
    for _id in ids:
        before = await collection.find_one({"_id": _id})
        upgraded = await full_upgrade(model, before)
        for fields in reads:
            model.objects.cache.clear()
            read = await collection.find_one({"_id": _id}, fields)
            with contextlib.suppress(MigrateError):  # refused: nothing may be written either
                await model.restore(read)
            after = await collection.find_one({"_id": _id})
            assert after == before or (upgraded is not None and after == upgraded), (
                f"{model.__model__} read through {fields}: stored {before!r}, "
                f"now {after!r}, full upgrade {upgraded!r}"
            )
            before_version = stored_version(before.get("__version__"))
            assert stored_version(after.get("__version__")) >= before_version
            before = after
            upgraded = await full_upgrade(model, before)
