"""atom-db's own NoSQL scenarios, with versioned models and legacy documents.

The scenarios of atom-db's test suite (users, pages with authors and images,
comments replying to comments, circular references, load) with each model
made versioned. Documents are saved by the current code, then rewritten in
the database to a random older version through the steps' downgrades, as
older code would have stored them, and the scenarios restore them.

"""

from __future__ import annotations

import random
from typing import Any

import pytest
from atom.api import Atom, Bool, Dict, Enum, ForwardInstance, Instance, List, Str
from atomdb.nosql import NoSQLModelManager

from atomdb_migrate import MigrationRegistry, VersionedModel, step
from atomdb_migrate.steps.versions import run_chain

rng = random.Random(20261127)


class User(VersionedModel):
    __version__ = 2

    name = Str()
    email = Str()
    active = Bool()
    settings = Dict()

    def _default_settings(self) -> dict[str, Any]:
        return {"font-size": 16, "theme": "maroon"}


@step(User, 0, 1)
def username_to_name(doc: dict[str, Any]) -> None:
    doc["name"] = doc.pop("username")


@username_to_name.downgrade
def name_to_username(doc: dict[str, Any]) -> None:
    doc["username"] = doc.pop("name")


@step(User, 1, 2)
def active_to_bool(doc: dict[str, Any]) -> None:
    doc["active"] = doc.pop("is_active") == "yes"


@active_to_bool.downgrade
def active_to_text(doc: dict[str, Any]) -> None:
    doc["is_active"] = "yes" if doc.pop("active") else "no"


class Image(VersionedModel):
    __version__ = 1

    name = Str()
    path = Str()


@step(Image, 0, 1, downgrade=lambda doc: doc.update(url=doc.pop("path")))
def url_to_path(doc: dict[str, Any]) -> None:
    doc["path"] = doc.pop("url")


class Page(VersionedModel):
    __version__ = 2

    title = Str()
    status = Enum("preview", "live")
    body = Str()
    author = Instance(User)
    images = List(Image)
    related = List(ForwardInstance(lambda: Page))


@step(Page, 0, 1)
def heading_to_title(doc: dict[str, Any]) -> None:
    doc["title"] = doc.pop("heading")


@heading_to_title.downgrade
def title_to_heading(doc: dict[str, Any]) -> None:
    doc["heading"] = doc.pop("title")


STATES = {"draft": "preview", "published": "live"}


@step(Page, 1, 2)
def state_to_status(doc: dict[str, Any]) -> None:
    doc["status"] = STATES[doc.pop("state")]


@state_to_status.downgrade
def status_to_state(doc: dict[str, Any]) -> None:
    doc["state"] = {v: k for k, v in STATES.items()}[doc.pop("status")]


class Comment(VersionedModel):
    __version__ = 1

    page = Instance(Page)
    author = Instance(User)
    status = Enum("pending", "approved")
    body = Str()
    reply_to = ForwardInstance(lambda: Comment)


@step(Comment, 0, 1)
def text_to_body(doc: dict[str, Any]) -> None:
    doc["body"] = doc.pop("text")


@text_to_body.downgrade
def body_to_text(doc: dict[str, Any]) -> None:
    doc["text"] = doc.pop("body")


MODELS: list[type[VersionedModel]] = [User, Image, Page, Comment]


async def make_legacy(model: type[VersionedModel]) -> Counter:
    """Rewrite every stored document of a model to a random older version.

    Embedded (unsaved) objects inside a document are taken back too. Returns
    how many documents ended at each version.
    """
    registry = MigrationRegistry.instance()
    counts: Counter = Counter()
    async for doc in model.objects.find():
        target = rng.choice(["0", *[s.to_version for s in registry.graph(model).steps]])
        steps = registry.plan_downgrade(model, doc["__version__"], target)
        old = await run_chain(steps, doc, downgrade=True)
        if target == "0":
            del old["__version__"]  # code before versioning stored no version
        await model.objects.replace_one({"_id": doc["_id"]}, old)
        counts[target] += 1
    model.objects.cache.clear()
    return counts


class Counter(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def name(i: int) -> str:
    return f"Person {i} {rng.randrange(10**6)}"


async def test_db_manager(db: Any) -> None:
    mgr = NoSQLModelManager.instance()

    class NotModel(Atom):
        objects = mgr

    assert NotModel.objects == mgr
    del mgr.database
    with pytest.raises(EnvironmentError):
        await User.objects.find().to_list(length=10)
    mgr.database = db
    await User.objects.find().to_list(length=10)


async def test_simple_save_restore_delete(db: Any) -> None:
    user = User(name=name(1), email="one@example.com", active=True)
    await user.save()
    assert user._id is not None

    state = await User.objects.find_one({"name": user.name})
    u = await User.restore(state)
    assert u is user
    assert (u.name, u.email, u.active) == (user.name, user.email, True)

    user.active = False
    await user.save()
    u = await User.restore(await User.objects.find_one({"name": user.name}))
    assert not u.active

    another = User(name=name(2), email="two@example.com", active=True)
    await another.save()

    await user.delete()
    assert not await User.objects.find_one({"_id": user._id})
    assert await User.objects.find_one({"_id": another._id})

    # The remaining document as older code stored it
    while (await make_legacy(User))["2"]:
        pass
    fresh = await User.restore(await User.objects.find_one({"_id": another._id}))
    assert fresh is not another
    assert (fresh.name, fresh.email, fresh.settings) == (
        another.name,
        another.email,
        another.settings,
    )
    assert fresh.active


async def test_nested_save_restore(db: Any) -> None:
    authors = [User(name=name(i), active=True) for i in range(2)]
    for a in authors:
        await a.save()
    images = [Image(name=f"image {i}", path=f"/img/{i}.png") for i in range(10)]
    for i in range(3):  # the others are embedded in the pages that hold them
        await images[i].save()

    pages = [
        Page(
            title=f"Page {i} by {author.name}",
            body=f"body {i}",
            author=author,
            images=[rng.choice(images) for _ in range(rng.randint(0, 2))],
            status=rng.choice(Page.status.items),
        )
        for i in range(4)
        for author in authors
    ]
    comments: dict[Any, list[Comment]] = {}
    for p in pages:
        await p.save()
        thread: list[Comment] = []
        for i in range(rng.randint(1, 10)):
            commenter = User(name=name(100 + i))
            await commenter.save()
            c = Comment(
                author=commenter,
                page=p,
                status=rng.choice(Comment.status.items),
                reply_to=rng.choice([None, *thread]),
                body=f"comment {i}",
            )
            thread.append(c)
            await c.save()
        comments[p._id] = thread

    counts = {m.__model__: await make_legacy(m) for m in MODELS}
    assert sum(counts[Page.__model__].values()) == len(pages)
    assert sum(v for k, v in counts[User.__model__].items() if k != "2") > 0

    for p in pages:
        state = await Page.objects.find_one({"author._id": p.author._id, "_id": p._id})
        assert state, f"could not find page {p.title}"
        r = await Page.restore(state)
        assert r is not p
        assert (r._id, r.title, r.body, r.status) == (p._id, p.title, p.body, p.status)
        assert r.author._id == p.author._id and r.author.name == p.author.name
        assert [i.path for i in r.images] == [i.path for i in p.images]

        restored = []
        async for state in Comment.objects.find({"page._id": p._id}):
            comment = await Comment.restore(state)
            assert comment.page is r
            restored.append(comment)
            async for reply_state in Comment.objects.find({"reply_to._id": comment._id}):
                reply = await Comment.restore(reply_state)
                assert reply.page is r and reply.reply_to is comment
        expected = {(c._id, c.body, c.author.name) for c in comments[p._id]}
        assert {(c._id, c.body, c.author.name) for c in restored} == expected


async def test_circular(db: Any) -> None:
    p = Page(title="first", body="a")
    related_page = Page(title="second", body="b", related=[p])
    p.related = [related_page]
    await p.save()
    await make_legacy(Page)
    r = await Page.restore(await Page.objects.find_one({"_id": p._id}))
    assert r.title == p.title
    assert r.related[0].title == related_page.title
    assert r.related[0].related[0] is r


async def test_load(db: Any) -> None:
    authors = [User(name=name(i), active=True) for i in range(2)]
    for a in authors:
        await a.save()
    while (await make_legacy(User))["2"]:
        pass  # until both are legacy

    user = User(_id=authors[0]._id)
    assert not user.name and not user.__restored__
    user.__restored__ = True
    await user.load()
    assert not user.name, "load does nothing once restored"
    user.__restored__ = False
    await user.load()
    assert (user.name, user.active) == (authors[0].name, True)
