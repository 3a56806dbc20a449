"""The blog's models, as the code is today.

Each model's history is in ``migrations/``:

- User 0 -> 1 -> 2: ``active`` added; ``name`` split into ``first`` and ``last``.
- Page 1 -> 2 -> 3: ``heading`` renamed ``title``; ``meta.status`` moved up to ``status``.
- Comment 1 -> 2: ``likes`` stored as text becomes an int.
"""

from atom.api import Bool, Enum, ForwardInstance, Instance, Int, List, Str

from atomdb_migrate import VersionedModel


class User(VersionedModel):
    __model__ = "blog.User"
    __version__ = 2

    first = Str()
    last = Str()
    email = Str()
    active = Bool()


class Image(VersionedModel):
    __model__ = "blog.Image"
    __version__ = 1

    name = Str()
    path = Str()


class Page(VersionedModel):
    __model__ = "blog.Page"
    __version__ = 3

    title = Str()
    body = Str()
    status = Enum("preview", "live")
    author = Instance(User)
    images = List(Image)


class Comment(VersionedModel):
    __model__ = "blog.Comment"
    __version__ = 2

    page = Instance(Page)
    author = Instance(User)
    body = Str()
    likes = Int()
    reply_to = ForwardInstance(lambda: Comment)
