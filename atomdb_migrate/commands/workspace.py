"""A workspace: the configuration, the models and steps it names, and the connection.

Every command runs in one::

    async with Workspace(load_config(url="mongodb://db/app", models=["app.models"])) as ws:
        result = await command.upgrade(ws)

Settings naming several databases give a workspace per database, sharing
one client::

    async with Workspace(load_config(url=URL, databases="^tenant_")) as ws:
        for name in await command.databases(ws):
            async with ws.for_database(name) as tenant:
                result = await command.upgrade(tenant)

Connecting points atom-db's model manager at the workspace's database, so
that steps and restores see it; closing puts the manager back as it was
found (the app's own database, proxies and object cache), and closes only
the client the workspace opened.

"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from types import TracebackType
from typing import Any

from ..driver.mongo import (
    MEMORY_SCHEME,
    ManagerState,
    check_database,
    memory_client,
    open_client,
    sync_database,
    wire_manager,
)
from ..driver.retry import Retry
from ..driver.routing import wire_task
from ..engine.history import History
from ..engine.lock import LeaseLock
from ..exceptions import ConfigError, UnknownModelError
from ..model.versioned import VersionedModel
from ..steps.registry import MigrationRegistry, with_class_name
from ..steps.versions import Step
from .config import Config
from .loader import load_migrations


class Workspace:
    """The configuration, the models and steps it names, and the connection.

    Models and step modules are loaded once, on first use; the connection is
    opened by ``async with workspace`` (or `connect`) and checked at once, so
    a wrong URL fails within the configured timeout.

    """

    def __init__(
        self,
        config: Config,
        registry: MigrationRegistry | None = None,
        *,
        parent: Workspace | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or MigrationRegistry.instance()
        self.steps: list[Step] = []
        self._loaded = False
        #: The workspace whose client and loaded steps this one shares (see
        #: `for_database`); it closes the client.
        self._parent = parent
        self._client: Any = None
        self._database: Any = None
        self._manager: ManagerState | None = None
        self._sync: tuple[Any, Any] | None = None
        #: Whether atom-db's manager is pointed at the database for the task
        #: alone (`for_database` with ``at_once``).
        self._at_once = False

    # ------------------------------------------------------------------
    # Models and steps
    # ------------------------------------------------------------------
    def load(self) -> None:
        """Import the configured model modules and load the step modules (once)."""
        if self._parent is not None:
            self._parent.load()
            self.steps, self._loaded = self._parent.steps, True
        if self._loaded:
            return
        root = str(self.config.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        for name in self.config.models:
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(
                    f"cannot import models module {name!r}: {type(exc).__name__}: {exc}"
                ) from exc
        if self.config.migrations is not None:
            self.steps = load_migrations(self.config.migrations, registry=self.registry)
        self._loaded = True

    def model(self, name: str) -> type[VersionedModel]:
        """A versioned model by its ``__model__`` name, a former name it was moved
        from (by ``ops.rename_model``), or, if unique, its class name."""
        self.load()
        name = self.registry.resolve(name)
        if name in self.registry.models:
            return self._checked(self.registry.models[name])
        matches = with_class_name(self.registry.models, name)
        if len(matches) == 1:
            return self._checked(self.registry.models[matches[0]])
        raise UnknownModelError(name, list(self.registry.models))

    def models(self, names: tuple[str, ...] | list[str] = ()) -> list[type[VersionedModel]]:
        """The models named, or every registered versioned model."""
        self.load()
        if names:
            return [self.model(n) for n in names]
        return [self._checked(self.registry.models[n]) for n in sorted(self.registry.models)]

    @property
    def internal_collections(self) -> tuple[str, str]:
        """The collections the toolkit keeps for itself: the lock's and the history's."""
        return (self.config.lock_collection, self.config.history_collection)

    def _checked(self, cls: type[VersionedModel]) -> type[VersionedModel]:
        """A model, refused if its collection is one the toolkit keeps for itself."""
        if cls.__model__ in self.internal_collections:
            raise ConfigError(
                f"model {cls.__model__!r} is stored in the collection the toolkit keeps "
                "for its lock or its history; rename the model, or set lock-collection "
                "and history-collection to other names"
            )
        return cls

    # ------------------------------------------------------------------
    # Connection
    # ------------------------------------------------------------------
    @property
    def database(self) -> Any:
        if self._database is None:
            raise ConfigError("not connected")
        return self._database

    async def connect(self) -> Any:
        """Connect, check the server answers, and wire atom-db's manager to it."""
        if self._database is not None:
            return self._database
        self._url()
        name = self.config.database_name()
        # An in-memory client is kept for the process: later commands see the
        # same data. A workspace for another database uses its parent's client.
        owner = self._parent or self
        self._database = database = await owner.open_database(name)
        self._manager = ManagerState()
        if self._at_once:
            wire_task(database)
        else:
            wire_manager(database)
        return database

    def _url(self) -> str:
        if not self.config.url:
            raise ConfigError(
                "no MongoDB URL: give --url, set ATOMDB_MIGRATE_URL or MONGO_URL, "
                "or set `url` in pyproject.toml"
            )
        return self.config.url

    async def client(self) -> Any:
        """The workspace's client, opened (and the server checked) on first use."""
        url = self._url()
        if self._parent is not None:
            return await self._parent.client()
        if url.startswith(MEMORY_SCHEME):
            return memory_client(url)
        if self._client is None:
            self._client = await open_client(url, self.config.timeout)
        return self._client

    async def open_database(self, name: str) -> Any:
        """A database of the workspace's client, checked (credentials scoped to it)."""
        url = self._url()
        if url.startswith(MEMORY_SCHEME):
            return memory_client(url)[name]
        return await check_database(await self.client(), url, name, self.config.timeout)

    def for_database(self, name: str, *, at_once: bool = False) -> Workspace:
        """A workspace on another database of the same server, sharing this one's
        client, models and steps; close it before opening the next.

        With `at_once`, several such workspaces may be open at once, each
        used by its own asyncio task: connecting points atom-db's manager at
        the database for the task alone (`driver.routing.wire_task`), so a
        step or a restore in one task never sees another's database.

        This workspace closes the shared client.

        """
        config = replace(self.config, database=name, databases=[], database_pattern=None)
        sub = Workspace(config, self.registry, parent=self)
        sub._at_once = at_once
        return sub

    async def close(self) -> None:
        """Close the clients the workspace opened; put atom-db's manager back as it was."""
        if self._manager is not None:
            self._manager.restore()
            self._manager = None
        if self._sync is not None:
            sync_client, self._sync = self._sync[0], None
            if sync_client is not None:
                sync_client.close()
        client, self._client, self._database = self._client, None, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> Workspace:
        if self.config.several_databases:
            await self.client()  # each database through `for_database`
        else:
            await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------
    def lock(self, command: str, wait: bool = False, retry: Retry | None = None) -> LeaseLock:
        """The migration lock, for a command; its lease is renewed from a thread."""
        return LeaseLock(
            self.database[self.config.lock_collection],
            ttl=self.config.lock_ttl,
            command=command,
            wait=wait,
            renewal=lambda: self.sync_database()[self.config.lock_collection],
            retry=retry,
        )

    def sync_database(self) -> Any:
        """A synchronous connection to the database, for threads beside the event loop."""
        if self._sync is None:
            assert self.config.url is not None
            self._sync = sync_database(
                self.config.url, self.config.database_name(), self.config.timeout
            )
        return self._sync[1]

    def history(self) -> History:
        """The record of runs."""
        return History(self.database[self.config.history_collection])
