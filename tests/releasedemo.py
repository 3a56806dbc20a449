"""Models of the release tests (imported as ``tests.releasedemo``).

Each has steps 1 -> 2 -> ... -> 5 (written by the tests, each adding the
field ``vN`` and its downgrade removing it); a test sets the code's version
of each model release by release.

"""

from atom.api import Int

from atomdb_migrate import VersionedModel


class Account(VersionedModel):
    __model__ = "releasedemo.Account"
    __version__ = 5

    n = Int()


class Invoice(VersionedModel):
    __model__ = "releasedemo.Invoice"
    __version__ = 5

    n = Int()


class Note(VersionedModel):
    __model__ = "releasedemo.Note"
    __version__ = 5

    n = Int()
