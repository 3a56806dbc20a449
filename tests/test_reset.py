"""The module-level caches reset in one call, and the pytest plugin resets them
before each test.

"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from atom.api import Str

from atomdb_migrate import MigrationRegistry, VersionedModel, version_filter
from atomdb_migrate.core import caches
from atomdb_migrate.driver import mongo
from atomdb_migrate.model import finders
from atomdb_migrate.queries import version_filters as queries
from atomdb_migrate.steps import registry as registry_module
from atomdb_migrate.testing import reset

ROOT = Path(__file__).resolve().parent.parent


class Note(VersionedModel):
    __model__ = "reset.Note"
    __version__ = 1

    text = Str()


def test_the_caches_are_registered() -> None:
    assert set(caches.registered()) >= {
        "atomdb_migrate.driver.mongo._SAID",
        "atomdb_migrate.model.finders._surveys",
        "atomdb_migrate.queries.version_filters._cache",
        "atomdb_migrate.steps.registry._ALIAS_LISTENERS",
    }


async def test_reset_empties_each_cache(registry: MigrationRegistry, migrate_db: Any) -> None:
    registry.register_model(Note)
    version_filter(Note, {"text": "a"})
    await finders.survey(Note)
    mongo._say_once("a message said once")
    seen: list[Any] = []

    def listener(name: str, cls: Any) -> None:
        seen.append((name, cls))

    registry_module.listen_to_aliases(listener)
    lasting = list(registry_module._LASTING_LISTENERS)
    assert queries._cache and finders._surveys and mongo._SAID
    assert listener in registry_module._ALIAS_LISTENERS

    reset()

    assert queries._cache == {}
    assert finders._surveys == {}
    assert not mongo._SAID
    assert lasting == registry_module._ALIAS_LISTENERS, "the package's own listener is kept"
    assert lasting, "model.versioned's listener is lasting"


def test_reset_is_the_cores() -> None:
    assert reset is caches.reset


def test_the_plugin_resets_before_each_test(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            from atomdb_migrate.driver import mongo

            def test_first():
                mongo._say_once("said in the first test")
                assert mongo._SAID

            def test_second():
                assert not mongo._SAID
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
