"""The README's example runs as written, against the SecantusDB server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymongo
import pytest
from atomdb.nosql import NoSQLModelManager

from atomdb_migrate import LegacyQueryWarning, MigrationRegistry, guard_queries, load_migrations
from atomdb_migrate.driver.mongo import wire_manager

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


async def test_readme_example(secantus_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example, _, _ = python_blocks(README)
    assert len(example.strip().splitlines()) <= 25
    real_client = pymongo.AsyncMongoClient
    clients: list[Any] = []

    def client(*args: Any, **kwargs: Any) -> Any:
        # The example connects to the default localhost:27017; point it at
        # the test server instead.
        clients.append(real_client(secantus_url, **kwargs))
        return clients[-1]

    monkeypatch.setattr(pymongo, "AsyncMongoClient", client)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    with MigrationRegistry.instance().isolated():
        exec(compile(example, str(README), "exec"), namespace)
        await namespace["main"]()
        (stored,) = await namespace["User"].objects.find({}, {"_id": 0, "__ref__": 0}).to_list()
    assert stored == {
        "first": "Ada",
        "last": "Lovelace",
        "__model__": "readme_example.User",
        "__version__": "2",
    }
    await clients[0].drop_database("app")
    await clients[0].close()
    NoSQLModelManager.instance().proxies = {}


def test_readme_step_module_loads(tmp_path: Path, registry: MigrationRegistry) -> None:
    _, module, _ = python_blocks(README)
    (tmp_path / "0001_page.py").write_text(module)
    (step,) = load_migrations(tmp_path, registry=registry)
    assert step.server_side and len(step.operations.operations) == 3


async def test_readme_queries(secantus_url: str, registry: MigrationRegistry) -> None:
    _, _, example = python_blocks(README)
    client = pymongo.AsyncMongoClient(secantus_url)
    wire_manager(client["readme_queries"])
    namespace: dict[str, Any] = {"__name__": "readme_queries"}
    try:
        exec(compile(example, str(README), "exec"), namespace)
        await namespace["queries"]()
        with pytest.warns(LegacyQueryWarning, match="misses 1 document"):
            assert await namespace["Page"].objects.count_documents({"title": "Intro"}) == 0
    finally:
        guard_queries("off")
        await client.drop_database("readme_queries")
        await client.close()
        NoSQLModelManager.instance().proxies = {}
