"""Models of the command-line tests (imported as ``tests.clidemo``).

Their steps live in ``tests/clidemo_migrations``; each test copies them
into its own project directory.

"""

from atom.api import Float, Int, Str

from atomdb_migrate import VersionedModel


class Customer(VersionedModel):
    __model__ = "clidemo.Customer"
    __version__ = 3
    #: Its steps start at 1: documents saved before it was versioned are not
    #: expected (the tests that store some see them refused)
    __base_version__ = 1

    first = Str()
    last = Str()
    tier = Str()
    #: How many times the 1 -> 2 step ran on this document
    applied = Int()
    #: The last sequence number an app writer stored
    seq = Int()


class Order(VersionedModel):
    __model__ = "clidemo.Order"
    __version__ = 1

    total = Float()
