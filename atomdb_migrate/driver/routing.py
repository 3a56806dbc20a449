"""atom-db's model manager, one database per asyncio task: several databases at once.

atom-db's manager (``NoSQLModelManager.instance()``) is one object for the
process: ``Model.objects`` is the collection of its one database, and its
object cache is shared. A run over several databases at once (``upgrade
--workers N`` with several databases) has a step or a restore in one
tenant's task look its references up while another tenant's task runs: each
must see its own database and its own objects.

`wire_task` points the manager at a database for the running task (and the
tasks it starts) alone: the manager's database becomes a `TaskDatabase`, and
each model's proxy a `TaskProxy`, which hand every use to the task's own
database and to a proxy (an object cache) of the task's own. Outside a task
so wired, they hand it to what the manager held before (`ManagerState`
puts that back when the workspaces close).

"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from atomdb.nosql import NoSQLDatabaseProxy, NoSQLModel, NoSQLModelManager

__all__ = ["TaskDatabase", "TaskProxy", "wire_task"]


class _Wired:
    """A task's database and its own proxies (object caches), by model class."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self.proxies: dict[type, Any] = {}

    def proxy(self, cls: Any) -> Any:
        proxy = self.proxies.get(cls)
        if proxy is None:
            proxy = self.proxies[cls] = NoSQLDatabaseProxy(table=self.database[cls.__model__])
        return proxy


#: The database the running task works on, and its proxies; None: the manager's own.
_WIRED: ContextVar[_Wired | None] = ContextVar("atomdb_migrate_task_database", default=None)


class TaskDatabase:
    """The manager's database while tasks are wired: the running task's database,
    or the one the manager held before."""

    def __init__(self, before: Any) -> None:
        #: What the manager held before (None: no database was set).
        self.before = before

    def current(self) -> Any:
        wired = _WIRED.get()
        if wired is not None:
            return wired.database
        if self.before is None:
            raise OSError("No database has been set for this task")
        return self.before

    def __getitem__(self, name: str) -> Any:
        return self.current()[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


class TaskProxy:
    """A model's proxy while tasks are wired: the running task's own proxy (its
    collection, its object cache), or the one the manager held before."""

    def __init__(self, cls: Any, before: Any) -> None:
        self.cls: Any = cls
        #: The manager's proxy before (None: made on first use from its database).
        self.before = before

    def current(self) -> Any:
        wired = _WIRED.get()
        if wired is not None:
            return wired.proxy(self.cls)
        if self.before is None:
            manager: Any = NoSQLModelManager.instance()
            database = manager.database
            before = database.before if isinstance(database, TaskDatabase) else database
            self.before = NoSQLDatabaseProxy(table=before[self.cls.__model__])
        return self.before

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


def _models() -> list[type]:
    """Every atom-db model class loaded, subclasses of subclasses too."""
    found: list[type] = []
    todo: list[type] = [NoSQLModel]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def wire_task(database: Any) -> None:
    """Point atom-db's manager at `database` for the running task alone.

    The first call turns the manager's database into a `TaskDatabase` and
    each model class loaded into a `TaskProxy` (take a `ManagerState`
    before, to put the manager back after). Load the models first: a model
    class defined while tasks are wired is not routed (atom-db makes its
    proxy on the database of the task that uses it first).

    """
    manager: Any = NoSQLModelManager.instance()
    current = manager.get_member("database").get_slot(manager)
    if not isinstance(current, TaskDatabase):
        proxies = manager.get_member("proxies").get_slot(manager) or {}
        manager.database = TaskDatabase(current)
        manager.proxies = {
            cls: TaskProxy(cls, proxies.get(cls)) for cls in _models() if cls is not NoSQLModel
        }
    _WIRED.set(_Wired(database))
