"""Backends for the suite: the same tests run on each.

- ``mongomock``: mongomock-motor, in process (correctness only).
- ``secantus-pymongo`` and ``secantus-motor``: a SecantusDB server started
  for the session on a free loopback port, through PyMongo's async client
  and through Motor.
- ``mongo-pymongo`` and ``mongo-motor``: the MongoDB server given by
  ``MONGO_URL``, when it is set.

``pytest --backend NAME`` (repeatable) narrows the run to some of them.

"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomdb_migrate import MigrationRegistry
from atomdb_migrate.driver.mongo import wire_manager

from .clidemo import Customer, Order
from .project import Project
from .servers import secantus_server

MONGO_URL = os.environ.get("MONGO_URL")

ALL_BACKENDS = ["mongomock", "secantus-pymongo", "secantus-motor"]
if MONGO_URL:
    ALL_BACKENDS += ["mongo-pymongo", "mongo-motor"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run the long variants of the reliability suite (more trials, more documents)",
    )
    parser.addoption(
        "--reliability-report",
        metavar="FILE",
        help="write the reliability suite's figures to FILE (Markdown)",
    )
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        choices=["mongomock", "secantus-pymongo", "secantus-motor", "mongo-pymongo", "mongo-motor"],
        help="run the database tests on these backends only (repeatable)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.getoption("--backend") or ALL_BACKENDS
    note = "" if MONGO_URL else " (set MONGO_URL to add a real MongoDB server)"
    return f"atomdb-migrate backends: {', '.join(chosen)}{note}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--backend") or ALL_BACKENDS
        metafunc.parametrize("backend", chosen, scope="session")


@pytest.fixture
def long(request: pytest.FixtureRequest) -> bool:
    """Whether the long variants were asked for (--long)."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def secantus_url() -> Iterator[str]:
    """The URL of a SecantusDB server running for the whole session."""
    with secantus_server() as url:
        yield url


#: The user of the authenticating server.
AUTH_USER = ("admin", "pa55-W0rd-xyzzy")


@pytest.fixture(scope="session")
def secantus_auth_url() -> Iterator[str]:
    """A SecantusDB server running with --auth; `AUTH_USER` may use it."""
    with secantus_server(user=AUTH_USER) as url:
        yield url


def server_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend.startswith("secantus"):
        return str(request.getfixturevalue("secantus_url"))
    if not MONGO_URL:
        pytest.skip("MONGO_URL is not set")
    return MONGO_URL


def make_client(backend: str, request: pytest.FixtureRequest) -> Any:
    """A client of the backend's kind; the caller closes it."""
    if backend == "mongomock":
        from mongomock_motor import AsyncMongoMockClient

        return AsyncMongoMockClient()
    url = server_url(backend, request)
    if backend.endswith("-motor"):
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient(url, serverSelectionTimeoutMS=10000)
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(url, serverSelectionTimeoutMS=10000)


@pytest.fixture
async def db(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh database on the backend, wired to atom-db's model manager."""
    client = make_client(backend, request)
    database = client[f"atomdb_migrate_test_{uuid.uuid4().hex[:12]}"]
    wire_manager(database)  # new collections, and a new object cache
    try:
        yield database
    finally:
        if backend != "mongomock":
            await client.drop_database(database.name)
        result = client.close()
        if hasattr(result, "__await__"):
            await result


@pytest.fixture
def registry() -> Iterator[MigrationRegistry]:
    """The process registry; steps a test registers are removed after it."""
    with MigrationRegistry.instance().isolated() as reg:
        yield reg


@pytest.fixture
def demo_registry(monkeypatch: pytest.MonkeyPatch) -> MigrationRegistry:
    """A registry holding only the demo models, as in a fresh process."""
    registry = MigrationRegistry()
    registry.register_model(Customer)
    registry.register_model(Order)
    monkeypatch.setattr(MigrationRegistry, "_instance", registry)
    return registry


@pytest.fixture
def project(
    tmp_path: Path,
    secantus_url: str,
    monkeypatch: pytest.MonkeyPatch,
    demo_registry: MigrationRegistry,
) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    p = Project(tmp_path, secantus_url)
    yield p
    p.client.drop_database(p.dbname)
    p.client.close()


@pytest.fixture
def auth_project(
    tmp_path: Path,
    secantus_auth_url: str,
    monkeypatch: pytest.MonkeyPatch,
    demo_registry: MigrationRegistry,
) -> Iterator[Project]:
    """A project on the authenticating server, with credentials in its URL."""
    monkeypatch.chdir(tmp_path)
    p = Project(tmp_path, secantus_auth_url, user=AUTH_USER)
    yield p
    p.client.drop_database(p.dbname)
    p.client.close()
