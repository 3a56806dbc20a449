"""A ``RENAME?`` hint of ``revision --autogenerate``, followed to the letter,
gives a step that passes ``check`` and renames.

The hint is the line an author follows: for fields removed and added in one
revision (generated names and kinds), a follower that does exactly what each
hint it takes says (delete the comment it names, replace the two lines with
the operation it gives), and confirms the deletes it takes no hint for, must
get a module with no problem left, whose upgrade carries each value over.

"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from atom.api import Int, Str
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry, VersionedModel
from atomdb_migrate.commands.command import revision
from atomdb_migrate.commands.config import Config
from atomdb_migrate.commands.workspace import Workspace

from .test_autogenerate import first_step, reload, versioned

#: Examples of the property test; raise it with RENAME_HINT_EXAMPLES.
RENAME_HINT_EXAMPLES = int(os.environ.get("RENAME_HINT_EXAMPLES", "25"))

KINDS = {"Str": (Str, "text"), "Int": (Int, 7)}

HINT = re.compile(r"# RENAME\? '(\w+)' was removed and '(\w+)' added, both \w+: if .*?, (.*)$")
DELETE = re.compile(r"delete the comment (DELETES DATA: remove_field\('\w+'\))")
REPLACE = re.compile(r"replace their two lines with (ops\.rename_field\('\w+', '\w+'\))$")


def follow(text: str) -> tuple[str, dict[str, str]]:
    """The module after following one hint per removed field (the first whose
    added field is still free), to the letter; the renames made."""
    lines = text.splitlines()
    renamed: dict[str, str] = {}
    for line in list(lines):
        found = HINT.search(line.strip())
        if not found or found[1] in renamed or found[2] in renamed.values():
            continue
        old, new, asked = found[1], found[2], found[3]
        for comment in DELETE.findall(asked):
            lines = [x for x in lines if not x.strip().startswith(f"# {comment}")]
        replace = REPLACE.search(asked)
        assert replace, asked
        two = (f"ops.set_default_where_missing({new!r}", f"ops.remove_field({old!r})")
        at = next(i for i, x in enumerate(lines) if x.strip().startswith(two))
        lines = [x for x in lines if not x.strip().startswith(two)]
        lines.insert(at, f"    {replace[1]},")
        renamed[old] = new
    return "\n".join(lines) + "\n", renamed


def confirm_deletes(text: str, renamed: dict[str, str]) -> str:
    """The author confirms the deletes of the fields not renamed."""
    keep = []
    for line in text.splitlines():
        deleted = re.match(r"\s*# DELETES DATA: remove_field\('(\w+)'\)", line)
        if deleted and deleted[1] not in renamed:
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


names = st.lists(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=1, max_size=3, unique=True
)


@settings(
    max_examples=RENAME_HINT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    removed=names,
    added=st.lists(st.sampled_from(["p", "q", "r", "s"]), min_size=1, max_size=3, unique=True),
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=7, max_size=7),
)
def test_a_rename_hint_followed_passes_check(
    removed: list[str], added: list[str], kinds: list[str]
) -> None:
    before = {name: kinds[i] for i, name in enumerate(removed)}
    after = {name: kinds[3 + i] for i, name in enumerate(added)}
    previous = MigrationRegistry._instance
    registry = MigrationRegistry()
    MigrationRegistry._instance = registry
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "migrations"
            folder.mkdir()
            ws = Workspace(Config(migrations=folder), registry=registry)
            ws._loaded = True
            first_step(ws, versioned("hint.M", 1, keep=Str(), **_members(before)))
            cls = versioned("hint.M", 2, keep=Str(), **_members(after))
            path = revision(ws, "rename", "hint.M", autogenerate=True).path
            text, renamed = follow(path.read_text())
            path.write_text(confirm_deletes(text, renamed))
            assert reload(ws) == [], path.read_text()
            stored = {"_id": 1, "__version__": "1", "keep": "k"}
            stored.update({name: KINDS[kind][1] for name, kind in before.items()})
            upgraded = asyncio.run(_upgrade(cls, stored))
            for old, new in renamed.items():
                assert upgraded[new] == stored[old] and old not in upgraded, upgraded
    finally:
        MigrationRegistry._instance = previous


def _members(fields: dict[str, str]) -> dict[str, Any]:
    return {name: KINDS[kind][0]() for name, kind in fields.items()}


async def _upgrade(cls: type[VersionedModel], stored: dict[str, Any]) -> dict[str, Any]:
    return await cls.upgrade_state(stored)
