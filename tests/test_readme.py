"""The README's example runs as written, against the SecantusDB server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymongo
import pytest
from atomdb.nosql import NoSQLModelManager

from atomdb_migrate import MigrationRegistry

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


async def test_readme_example(secantus_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = python_blocks(README)
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
