"""Declared indexes: ``__indexes__``, ``revision --autogenerate`` and ``check``.

The story runs as a user runs it: the model module is edited between
commands, each command a subprocess, on SecantusDB.

"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bson import Int64
from pymongo import MongoClient

from atomdb_migrate import VersionedModel, ops
from atomdb_migrate.autogenerate.render import written
from atomdb_migrate.cli.exits import EXIT_DUPLICATE
from atomdb_migrate.core.literals import Source
from atomdb_migrate.exceptions import ConfigError
from atomdb_migrate.ops import DropIndex
from atomdb_migrate.schema.indexes import (
    collection_drift,
    created_by_steps,
    declared,
    phases,
    planned,
    same,
    same_index,
)
from atomdb_migrate.steps.versions import Step

from .project import ROOT

PYPROJECT = """
[tool.atomdb-migrate]
models = ["pages"]
migrations = "migrations"
"""

MODEL = """
from atom.api import Str
from atomdb_migrate import VersionedModel, ops

class Page(VersionedModel):
    __model__ = "pages.Page"
    __version__ = {version}
    __indexes__ = {indexes}
    title = Str()
    slug = Str()
    author = Str()
"""

FIRST = '["title", ops.create_index("slug", unique=True, sparse=True)]'
# title's index gone, slug's no longer sparse, a compound one added.
SECOND = '[ops.create_index("slug", unique=True), [("author", 1), ("title", -1)]]'


class App:
    def __init__(self, path: Path, server: str) -> None:
        self.path = path
        self.dbname = f"idx_{uuid.uuid4().hex[:12]}"
        self.url = f"{server}/{self.dbname}"
        self.client: MongoClient[dict[str, object]] = MongoClient(server)
        self.collection = self.client[self.dbname]["pages.Page"]
        (path / "pyproject.toml").write_text(PYPROJECT)
        (path / "migrations").mkdir()

    def model(self, version: int, indexes: str) -> None:
        (self.path / "pages.py").write_text(MODEL.format(version=version, indexes=indexes))

    def cli(self, *args: str) -> tuple[int, str]:
        exe = os.path.join(os.path.dirname(sys.executable), "atomdb-migrate")
        env = {**os.environ, "PYTHONPATH": f"{self.path}{os.pathsep}{ROOT}", "MONGO_URL": self.url}
        env.pop("ATOMDB_MIGRATE_URL", None)
        proc = subprocess.run(
            [exe, *args], cwd=self.path, env=env, text=True, capture_output=True, timeout=120
        )
        return proc.returncode, proc.stdout + proc.stderr

    def indexes(self) -> dict[str, object]:
        return {
            name: {k: v for k, v in info.items() if k not in ("v", "ns")}
            for name, info in self.collection.index_information().items()
        }


@pytest.fixture
def app(tmp_path: Path, secantus_url: str) -> Iterator[App]:
    found = App(tmp_path, secantus_url)
    yield found
    found.client.drop_database(found.dbname)
    found.client.close()


def test_declare_autogenerate_upgrade_and_check_drift(app: App) -> None:
    app.model(0, FIRST)
    app.collection.insert_many([{"title": f"t{i}", "slug": f"s{i}"} for i in range(5)])
    code, out = app.cli("check")
    assert code == 1, out
    assert "__indexes__ declares index title_1 {title: 1}, which its steps do not create" in out
    assert "index slug_1 {slug: 1} (unique=True, sparse=True)" in out

    code, out = app.cli("revision", "--autogenerate", "--model", "Page", "-m", "indexes")
    assert code == 0, out
    step = (app.path / "migrations" / "0001_indexes.py").read_text()
    assert "ops.create_index('title')," in step
    assert "ops.create_index('slug', unique=True, sparse=True)," in step
    app.model(1, FIRST)
    code, out = app.cli("check")
    assert code == 0, out

    # The database has none of them yet: the gate says so.
    code, out = app.cli("check", "--indexes")
    assert code == 1, out
    assert "collection pages.Page lacks the declared index title_1 {title: 1}" in out
    code, out = app.cli("upgrade")
    assert code == 0, out
    assert "created index title_1 {title: 1}" in out
    code, out = app.cli("check", "--pending")
    assert code == 0, out
    assert set(app.indexes()) == {"_id_", "atomdb_migrate_version", "title_1", "slug_1"}

    # Drift made by hand: one extra, one missing, one with other options.
    app.collection.create_index("author", name="by_hand")
    app.collection.drop_index("title_1")
    app.collection.drop_index("slug_1")
    app.collection.create_index("slug", name="slug_1")
    code, out = app.cli("check", "--indexes")
    assert code == 1, out
    assert "has the index by_hand {author: 1}, which is not declared" in out
    assert "lacks the declared index title_1 {title: 1}" in out
    assert "has the index slug_1 as {slug: 1}, but the model declares index slug_1" in out
    app.collection.drop_index("by_hand")
    app.collection.drop_index("slug_1")
    app.collection.create_index("title", name="title_1")
    app.collection.create_index("slug", name="slug_1", unique=True, sparse=True)
    code, out = app.cli("check", "--indexes")
    assert code == 0, out

    # The model changes its indexes: check fails until a step says how.
    app.model(1, SECOND)
    code, out = app.cli("check")
    assert code == 1, out
    assert "its steps create the index title_1, which __indexes__ does not declare" in out
    assert "__indexes__ declares index slug_1 {slug: 1} (unique=True)" in out
    code, out = app.cli("revision", "--autogenerate", "--model", "Page", "-m", "reindex")
    assert code == 0, out
    step = (app.path / "migrations" / "0002_reindex.py").read_text()
    assert "ops.drop_index([('title', 1)])," in step
    # Described, so that a downgrade creates it again as it was.
    assert "ops.drop_index([('slug', 1)], unique=True, sparse=True)," in step
    assert "ops.create_index('slug', unique=True)," in step
    assert "ops.create_index([('author', 1), ('title', -1)])," in step
    app.model(2, SECOND)
    code, out = app.cli("check")
    assert code == 0, out
    code, out = app.cli("upgrade", "--dry-run")
    assert code == 0, out
    assert "would create index author_1_title_-1" in out
    code, out = app.cli("upgrade")
    assert code == 0, out
    assert set(app.indexes()) == {
        "_id_",
        "atomdb_migrate_version",
        "slug_1",
        "author_1_title_-1",
    }
    assert app.indexes()["slug_1"] == {"key": [("slug", 1)], "unique": True}
    code, out = app.cli("check", "--pending")
    assert code == 0, out
    # A rerun has nothing to do.
    code, out = app.cli("upgrade")
    assert code == 0, out
    assert "index" not in out.replace("atomdb_migrate_version", ""), out

    # And back: the downgrade recreates title's index and slug's as it was.
    code, out = app.cli("downgrade", "Page", "--to", "1")
    assert code == 0, out
    assert app.indexes()["slug_1"] == {"key": [("slug", 1)], "unique": True, "sparse": True}
    assert {"title_1", "slug_1"} <= set(app.indexes())
    assert "author_1_title_-1" not in app.indexes()
    # The older code's upgrade finds its indexes as it asks.
    app.model(1, FIRST)
    (app.path / "migrations" / "0002_reindex.py").unlink()
    code, out = app.cli("upgrade")
    assert code == 0, out
    code, out = app.cli("check", "--indexes")
    assert code == 0, out


class Declared(VersionedModel):
    __model__ = "tests.declared.Declared"
    __version__ = 2
    __indexes__ = (
        "title",
        {"a": 1, "b": -1},
        [("c", "text")],
        ops.create_index("d", name="by_d", unique=True),
    )


def test_the_shapes_of_declared_indexes() -> None:
    found = declared(Declared)
    assert found is not None
    assert list(found) == ["title_1", "a_1_b_-1", "c_text", "by_d"]
    assert found["a_1_b_-1"].keys == [("a", 1), ("b", -1)]
    assert found["by_d"].options == {"name": "by_d", "unique": True}


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ("title", "must be a list of indexes"),
        ({"title": 1}, "must be a list of indexes"),
        ([42], "keys must be a field name"),
        ([[("title", 2)]], "direction 2"),
        ([("title", 2)], "is not a (field, direction) pair"),
        (["title", [("title", 1)]], "two indexes are named title_1"),
        (["_id"], "index _id_1 {_id: 1} is not one to declare"),
        ([ops.create_index("x", name="_id_")], "index _id_ {x: 1} is not one to declare"),
        ([[("__version__", 1), ("_id", 1)]], "is not one to declare"),
        ([ops.create_index("x", name="atomdb_migrate_version")], "is not one to declare"),
        (["$where"], "$where"),
        (["a..b"], "a..b"),
        (["a\x00b"], "NUL"),
        (["a", ops.create_index("a", name="again")], "index the same keys"),
        ([[("a", "text")], [("b", "text")]], "both text indexes"),
    ],
)
def test_a_wrong_declaration_fails_at_import(indexes: object, message: str) -> None:
    with pytest.raises(ConfigError, match="__indexes__") as info:
        type(
            "Wrong",
            (VersionedModel,),
            {"__model__": f"tests.declared.Wrong{uuid.uuid4().hex}", "__indexes__": indexes},
        )
    assert message in str(info.value)


def _step(version: int, *operations: ops.Operation) -> Step:
    given = ops.Operations(list(operations))
    return Step("tests.declared.Declared", str(version - 1), str(version), given, operations=given)


def test_planned_from_the_steps_replayed() -> None:
    steps = [
        _step(1, ops.create_index("title"), ops.create_index("old")),
        _step(2, ops.drop_index("old_1"), ops.create_index("d", name="by_d")),
    ]
    created = created_by_steps(steps)
    assert list(created) == ["title_1", "by_d"]
    wanted = declared(Declared)
    assert wanted is not None
    source = Source()
    lines = [written(op, source) for op in planned(wanted, created)]
    assert lines == [
        "ops.drop_index('by_d', keys='d'),",  # its options change: dropped, then created
        "ops.create_index([('a', 1), ('b', -1)]),",
        "ops.create_index([('c', 'text')]),",
        "ops.create_index('d', name='by_d', unique=True),",
    ]
    # What the steps left is what is declared: nothing to do.
    assert planned(created, created) == []
    # Equal options: an option at its default is no option.
    same = {"t": ops.create_index("t", unique=False, name="t")}
    assert planned(same, {"t": ops.create_index("t", name="t")}) == []


def test_collection_drift_ignores_the_id_and_toolkit_indexes() -> None:
    existing = {
        "_id_": {"key": [("_id", 1)], "v": 2},
        "atomdb_migrate_version": {"key": [("__version__", 1), ("_id", 1)], "v": 2},
        "title_1": {"key": [("title", 1.0)], "v": 2},
        "a_1_b_-1": {"key": [("a", 1), ("b", -1)], "v": 2},
        "c_text": {"key": [("_fts", "text"), ("_ftsx", 1)], "v": 2, "weights": {"c": 1}},
        "by_d": {"key": [("d", 1)], "v": 2, "unique": True},
    }
    # MongoDB keeps a text index's fields as _fts/_ftsx and weights.
    assert collection_drift(Declared, existing, "declared") == []
    existing["c_text"]["weights"] = {"c": 1, "e": 1}
    existing["by_d"]["unique"] = False
    del existing["a_1_b_-1"]
    existing["extra_1"] = {"key": [("extra", 1)], "v": 2, "sparse": True}
    assert collection_drift(Declared, existing, "declared") == [
        "model 'tests.declared.Declared': collection declared lacks the declared index "
        "a_1_b_-1 {a: 1, b: -1}",
        "model 'tests.declared.Declared': collection declared has the index c_text as "
        "{c: 'text', e: 'text'}, but the model declares index c_text {c: 'text'}",
        "model 'tests.declared.Declared': collection declared has the index by_d as "
        "{d: 1} (unique=False), but the model declares index by_d {d: 1} (unique=True)",
        "model 'tests.declared.Declared': collection declared has the index extra_1 "
        "{extra: 1} (sparse=True), which is not declared",
    ]


def test_text_keys_compare_as_declared() -> None:
    found = {"key": [("a", 1), ("_fts", "text"), ("_ftsx", 1)], "weights": {"c": 1, "b": 1}}
    assert same_index(found, ops.create_index([("a", 1), ("b", "text"), ("c", "text")]))
    assert same_index(found, ops.create_index([("a", 1), ("c", "text"), ("b", "text")]))
    assert not same_index(found, ops.create_index([("a", 1), ("c", "text")]))
    assert not same_index(found, ops.create_index([("a", -1), ("b", "text"), ("c", "text")]))


def test_a_run_takes_the_net_effect_of_its_index_operations() -> None:
    chain = [
        ops.create_index("a"),  # created, then dropped: only dropped
        ops.create_index("b", unique=True, sparse=True),
        ops.drop_index([("a", 1)]),
        ops.drop_index([("b", 1)]),  # changed: dropped ahead of its create
        ops.create_index("b", unique=True),
        ops.create_index("c"),
    ]
    before, after = phases(chain)
    assert [repr(op) for op in before] == [
        "ops.drop_index('b_1')",
        "ops.create_index([('b', 1)], unique=True)",
        "ops.create_index([('c', 1)])",
    ]
    assert [repr(op) for op in after] == ["ops.drop_index([('a', 1)])"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique": "yes"}, "unique must be True or False"),
        ({"sparse": 1}, "sparse must be True or False"),
        ({"expireAfterSeconds": "10"}, "expireAfterSeconds must be a whole number"),
        ({"expireAfterSeconds": -5}, "expireAfterSeconds must be a whole number"),
        ({"expireAfterSeconds": True}, "expireAfterSeconds must be a whole number"),
        ({"expireAfterSeconds": 2**31}, "expireAfterSeconds must be a whole number"),
        ({"partialFilterExpression": [1]}, "partialFilterExpression must be a filter"),
        ({"collation": "fr"}, "collation must be a dict with a locale"),
        ({"collation": {"strength": 1}}, "collation must be a dict with a locale"),
        ({"name": "*"}, "cannot name an index"),
        ({"name": "two\nlines"}, "cannot name an index"),
    ],
)
def test_option_values_are_checked_where_the_index_is_written(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ops.create_index("a", **options)
    with pytest.raises(ValueError, match="expireAfterSeconds needs an index of one field"):
        ops.create_index([("a", 1), ("b", 1)], expireAfterSeconds=60)


def test_values_python_thinks_equal_are_not_one_option() -> None:
    plain = ops.create_index("t")
    # expireAfterSeconds=0 is a TTL index (documents expire at the date), not no option.
    assert not same(ops.create_index("t", expireAfterSeconds=0), plain)
    assert not same_index({"key": [("t", 1)]}, ops.create_index("t", expireAfterSeconds=0))
    assert not same_index({"key": [("t", 1)], "expireAfterSeconds": 0}, plain)
    # A partial filter on 0 matches no stored false.
    zero = ops.create_index("s", partialFilterExpression={"deleted": 0})
    false = ops.create_index("s", partialFilterExpression={"deleted": False})
    assert not same(zero, false)
    assert not same_index({"key": [("s", 1)], "partialFilterExpression": {"deleted": 0}}, false)
    # Numbers are numbers, whatever their BSON type.
    assert same_index(
        {"key": [("t", 1.0)], "expireAfterSeconds": Int64(60)},
        ops.create_index("t", expireAfterSeconds=60),
    )
    assert same_index(
        {"key": [("s", 1)], "partialFilterExpression": {"n": 1.0}},
        ops.create_index("s", partialFilterExpression={"n": 1}),
    )
    # unique=False is no option.
    assert same_index({"key": [("t", 1)], "unique": False}, plain)
    assert same(ops.create_index("t", unique=False), plain)


def test_a_renamed_index_is_dropped_ahead_of_its_new_name() -> None:
    before, after = phases(
        [
            ops.create_index("title"),
            ops.drop_index([("title", 1)]),
            ops.create_index("title", name="by_title"),
        ]
    )
    assert [repr(op) for op in before] == [
        "ops.drop_index([('title', 1)])",
        "ops.create_index([('title', 1)], name='by_title')",
    ]
    assert after == []


def test_drops_are_written_so_that_a_downgrade_creates_them_again() -> None:
    source = Source()
    for index in (
        ops.create_index("slug", unique=True, sparse=True),
        ops.create_index(
            [("a", 1), ("b", -1)], name="by_ab", partialFilterExpression={"x": {"$gt": 1}}
        ),
        ops.create_index("t", expireAfterSeconds=0, collation={"locale": "fr"}),
    ):
        line = written(DropIndex.of(index), source)
        again = eval(line.rstrip(","), {"ops": ops})
        assert again.inverse() == index, line
        assert same(again.inverse(), index)
    with pytest.raises(ValueError, match="give its keys too"):
        ops.drop_index("by_ab", unique=True)
    with pytest.raises(ValueError, match="keys given twice"):
        ops.drop_index([("a", 1)], keys="a")


def test_rename_and_ttl_changes_reach_the_server(app: App) -> None:
    app.model(0, '["title", ops.create_index("made", name="by_made")]')
    code, out = app.cli("revision", "--autogenerate", "--model", "Page", "-m", "first")
    assert code == 0, out
    assert "create index title_1 {title: 1} (__indexes__)" in out
    app.model(1, '["title", ops.create_index("made", name="by_made")]')
    assert app.cli("upgrade")[0] == 0
    # Renamed (same keys, another name), and a TTL of 0, which is no "no option".
    second = (
        '[ops.create_index("title", name="by_title"), '
        'ops.create_index("made", name="by_made", expireAfterSeconds=0)]'
    )
    app.model(1, second)
    code, out = app.cli("check")
    assert code == 1 and "expireAfterSeconds=0" in out, out
    code, out = app.cli("revision", "--autogenerate", "--model", "Page", "-m", "second")
    assert code == 0, out
    step = (app.path / "migrations" / "0002_second.py").read_text()
    assert "ops.drop_index('by_made', keys='made')," in step
    assert "ops.create_index('made', name='by_made', expireAfterSeconds=0)," in step
    app.model(2, second)
    code, out = app.cli("upgrade")
    assert code == 0, out
    found = app.indexes()
    assert set(found) == {"_id_", "atomdb_migrate_version", "by_title", "by_made"}
    assert found["by_made"]["expireAfterSeconds"] == 0
    code, out = app.cli("check", "--pending")
    assert code == 0, out
    # A rerun keeps both as they are.
    code, out = app.cli("upgrade")
    assert code == 0 and "index" not in out.replace("atomdb_migrate_version", ""), out
    # Back: title's index under its old name, by_made without its TTL.
    code, out = app.cli("downgrade", "Page", "--to", "1")
    assert code == 0, out
    found = app.indexes()
    assert {"title_1", "by_made"} <= set(found) and "by_title" not in found
    assert "expireAfterSeconds" not in found["by_made"]


def test_collations_compare_setting_by_setting() -> None:
    asked = ops.create_index("t", collation={"locale": "en"})
    # As MongoDB keeps it: every setting filled in.
    filled = {
        "locale": "en",
        "caseLevel": False,
        "caseFirst": "off",
        "strength": 3,
        "numericOrdering": False,
        "alternate": "non-ignorable",
        "maxVariable": "punct",
        "normalization": False,
        "backwards": False,
        "version": "57.1",
    }
    assert same_index({"key": [("t", 1)], "collation": filled}, asked)
    # A case-insensitive index is not the case-sensitive one declared.
    insensitive = {**filled, "strength": 1}
    assert not same_index({"key": [("t", 1)], "collation": insensitive}, asked)
    assert not same_index({"key": [("t", 1)], "collation": {"locale": "en", "strength": 1}}, asked)
    # The order of the settings does not count, nor a setting given as its default.
    a = ops.create_index("t", collation={"strength": 2, "locale": "en"})
    b = ops.create_index("t", collation={"locale": "en", "strength": 2, "caseLevel": False})
    assert same(a, b) and same(b, a)
    assert not same(a, asked)
    # The simple collation is kept as none.
    assert same_index({"key": [("t", 1)]}, ops.create_index("t", collation={"locale": "simple"}))
    # A partial filter's fields are a conjunction: their order does not count.
    x = ops.create_index("t", partialFilterExpression={"n": {"$gt": 1}, "s": "a"})
    y = ops.create_index("t", partialFilterExpression={"s": "a", "n": {"$gt": 1}})
    assert same(x, y)
    assert not same(x, ops.create_index("t", partialFilterExpression={"n": {"$gt": 1}}))


def test_an_index_made_unique_over_shared_values_keeps_the_old_one(app: App) -> None:
    """Exit 9 (dry run too), naming the value and two documents; the old index stays."""
    app.model(0, '["slug"]')
    app.collection.insert_many(
        [
            {"_id": 1, "title": "a", "slug": "same", "author": "x"},
            {"_id": 2, "title": "b", "slug": "same", "author": "x"},
            {"_id": 3, "title": "c", "slug": "other", "author": "x"},
        ]
    )
    assert app.cli("revision", "--autogenerate", "--model", "Page", "-m", "slug")[0] == 0
    app.model(1, '["slug"]')
    code, out = app.cli("upgrade")
    assert code == 0 and "created index slug_1 {slug: 1}" in out, out
    unique = '[ops.create_index("slug", unique=True)]'
    app.model(1, unique)
    code, out = app.cli("revision", "--autogenerate", "--model", "Page", "-m", "unique")
    assert code == 0, out
    step = (app.path / "migrations" / "0002_unique.py").read_text()
    assert "ops.drop_index([('slug', 1)])," in step
    assert "ops.create_index('slug', unique=True)," in step
    app.model(2, unique)

    code, out = app.cli("upgrade", "--dry-run")
    assert code == EXIT_DUPLICATE, out
    assert (
        "would create index slug_1 {slug: 1} (unique=True), but it cannot be built: "
        "documents _id=1 and _id=2 share slug='same'"
    ) in out
    code, out = app.cli("upgrade")
    assert code == EXIT_DUPLICATE, out
    assert "documents _id=1 and _id=2 share slug='same'" in out
    assert "the index slug_1 {slug: 1} it replaces was left as it is" in out
    assert app.indexes()["slug_1"] == {"key": [("slug", 1)]}
    code, out = app.cli("check", "--pending")
    assert code == 1 and "but the model declares index slug_1 {slug: 1} (unique=True)" in out

    app.collection.update_one({"_id": 2}, {"$set": {"slug": "third"}})
    code, out = app.cli("upgrade")
    assert code == 0, out
    assert "dropped index slug_1" in out and "created index slug_1 {slug: 1} (unique=True)" in out
    assert app.indexes()["slug_1"] == {"key": [("slug", 1)], "unique": True}
    assert app.cli("check", "--pending")[0] == 0
