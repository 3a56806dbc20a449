"""The blog's story: legacy documents of every version become current.

    python examples/blog/story.py                          # in memory, no server
    python examples/blog/story.py --url mongodb://localhost:27017/blog_story

1. seeds users, pages and comments as each older version of the code stored
   them (the blog.* collections of the database are replaced);
2. ``atomdb-migrate status``;
3. restores a legacy page lazily, with its legacy author;
4. queries across versions: ``Page.count``, ``Page.find_one``, the query
   guard, and a query a Python step stands in the way of;
5. ``atomdb-migrate upgrade``, with its progress bar on a terminal;
6. ``atomdb-migrate status`` again, and the same query, now as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import warnings
from pathlib import Path
from typing import Any

import click

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from blog_models import Comment, Image, Page, User  # noqa: E402

from atomdb_migrate import UntranslatableQueryError, guard_queries  # noqa: E402
from atomdb_migrate.cli import main as cli  # noqa: E402
from atomdb_migrate.config import load_config  # noqa: E402
from atomdb_migrate.workspace import Workspace  # noqa: E402

MIGRATIONS = HERE / "migrations"


def legacy_user(i: int, version: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"Writer {i}", "email": f"writer{i}@example.com"}
    if version >= 1:
        doc["active"] = i % 5 != 0
        doc["__version__"] = str(version)
    if version >= 2:
        doc["first"], _, doc["last"] = doc.pop("name").partition(" ")
    return doc | {"__model__": User.__model__}


def legacy_page(i: int, version: int, author: Any, image: Any) -> dict[str, Any]:
    status = "live" if i % 3 else "preview"
    ref = {"_id": author, "__ref__": 1, "__model__": User.__model__}
    doc: dict[str, Any] = {
        "body": f"Body of page {i}.",
        "author": ref,
        "images": [{"_id": image, "__ref__": 2, "__model__": Image.__model__}],
        "__version__": str(version),
        "__model__": Page.__model__,
    }
    doc["heading" if version == 1 else "title"] = f"Page {i}"
    if version < 3:
        doc["meta"] = {"status": status, "pinned": i % 7 == 0}
    else:
        doc["status"] = status
    return doc


def legacy_comment(i: int, version: int, page: Any, author: Any) -> dict[str, Any]:
    likes = i % 40
    return {
        "page": {"_id": page, "__ref__": 3, "__model__": Page.__model__},
        "author": {"_id": author, "__ref__": 4, "__model__": User.__model__},
        "body": f"Comment {i}",
        "likes": str(likes) if version == 1 else likes,
        "__version__": str(version),
        "__model__": Comment.__model__,
    }


async def seed(url: str, n: int) -> Any:
    """Store n documents of each model, at random older versions; return a legacy page's id."""
    rng = random.Random(7)
    async with Workspace(load_config(url=url)) as ws:
        db = ws.database
        for model in (User, Image, Page, Comment):
            await db[model.__model__].drop()
        for name in ("atomdb_migrate_lock", "atomdb_migrate_history"):
            await db[name].drop()
        images = (
            await db[Image.__model__].insert_many(
                [
                    {
                        "name": f"image {i}",
                        "path": f"/img/{i}.png",
                        "__version__": "1",
                        "__model__": Image.__model__,
                    }
                    for i in range(10)
                ]
            )
        ).inserted_ids
        users = (
            await db[User.__model__].insert_many(
                [legacy_user(i, rng.choice([0, 1, 2])) for i in range(n)]
            )
        ).inserted_ids
        pages = (
            await db[Page.__model__].insert_many(
                [
                    legacy_page(i, rng.choice([1, 2, 3]), rng.choice(users), rng.choice(images))
                    for i in range(n)
                ]
            )
        ).inserted_ids
        await db[Comment.__model__].insert_many(
            [
                legacy_comment(i, rng.choice([1, 2]), rng.choice(pages), rng.choice(users))
                for i in range(n)
            ]
        )
        # The page the story reads: version 1, by an author saved before versioning.
        author = (await db[User.__model__].insert_one(legacy_user(n, 0))).inserted_id
        page = legacy_page(n, 1, author, images[0])
        return (await db[Page.__model__].insert_one(page)).inserted_id


async def read_page(url: str, page_id: Any) -> None:
    async with Workspace(load_config(url=url, migrations=MIGRATIONS)) as ws:
        ws.load()
        stored = await Page.objects.find_one({"_id": page_id})
        print(
            f"  stored: version {stored['__version__']}, heading={stored['heading']!r}, "
            f"meta={stored['meta']!r}"
        )
        page = await Page.restore(stored)
        author = page.author
        print(
            f"  restored: title={page.title!r}, status={page.status!r}, "
            f"images={[i.path for i in page.images]}"
        )
        print(
            f"  author (stored without a version): first={author.first!r}, "
            f"last={author.last!r}, active={author.active}"
        )


async def query_across_versions(url: str) -> None:
    """What a query finds while legacy documents are stored, and what it misses."""
    async with Workspace(load_config(url=url, migrations=MIGRATIONS)) as ws:
        ws.load()
        live = {"status": "live"}
        plain = await Page.objects.count_documents(live)
        print(f"  Page.objects.count_documents({live}): {plain} (version 3 only)")
        print(f"  Page.count({live}): {await Page.count(live)} (every version)")
        page = await Page.find_one({"title": "Page 300"})
        print(f"  Page.find_one({{'title': 'Page 300'}}), stored with heading: {page.title!r}")
        active = await User.count({"active": True, "email": {"$regex": "^writer1"}})
        print(f"  User.count(active, email ^writer1): {active} (through a Python step)")
        try:
            await Comment.count({"likes": {"$gte": 20}})
        except UntranslatableQueryError as exc:
            print(f"  Comment.count({{'likes': {{'$gte': 20}}}}) refused: {exc}")
        guard_queries("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await Page.objects.count_documents(live)
            print(f"  with guard_queries('warn'): {caught[0].message}")
        finally:
            guard_queries("off")


async def query_after_upgrade(url: str) -> None:
    async with Workspace(load_config(url=url, migrations=MIGRATIONS)) as ws:
        ws.load()
        live = {"status": "live"}
        plain = await Page.objects.count_documents(live)
        print(f"  Page.objects.count_documents({live}): {plain}")
        translated = await Page.count(live, stored=True)
        print(f"  Page.count({live}, stored=True): {translated} (the same query, as it is)")


def run_cli(url: str, *args: str) -> None:
    print(f"\n$ atomdb-migrate {' '.join(args)}")
    options = ["--url", url, "--models", "blog_models", "--migrations", str(MIGRATIONS)]
    try:
        cli.main([*options, *args], prog_name="atomdb-migrate", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default="mongomock://memory/blog",
        help="a MongoDB URL with the database (default: in memory)",
    )
    parser.add_argument("-n", type=int, default=500, help="documents of each model")
    args = parser.parse_args(argv)

    print(f"1. Seeding {args.n} users, pages and comments at older versions")
    page_id = asyncio.run(seed(args.url, args.n))
    print("\n2. Where the stored documents are")
    run_cli(args.url, "status")
    print("\n3. The app reads a version-1 page by an author saved before versioning:")
    asyncio.run(read_page(args.url, page_id))
    print("\n4. Queries during the rollout, on today's fields:")
    asyncio.run(query_across_versions(args.url))
    print("\n5. The eager upgrade")
    run_cli(args.url, "upgrade")
    print("\n6. Every document is current")
    run_cli(args.url, "status")
    asyncio.run(query_after_upgrade(args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
