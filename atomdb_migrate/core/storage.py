"""The storage format: the keys atom-db and the toolkit store, in one place.

A stored document holds the model's fields and, beside them, keys that are
not fields (`IMPLICIT`): its ``_id``, the model's name (``__model__``), the
version the toolkit adds (``__version__``), and, in a reference, atom-db's
``__ref__``. Values an embedded ``JSONModel`` writes that JSON cannot hold
(dates, times, bytes, tuples...) take atom-db's JSON form: a document
tagged with their Python type under ``__py__`` (`JSON_TYPE_KEY`).

Imports nothing: every subpackage may use it.

"""

from __future__ import annotations

from typing import Any, NamedTuple

#: The key of a document's primary key (MongoDB's).
ID_KEY = "_id"

#: The key holding a document's version (the toolkit's).
VERSION_KEY = "__version__"

#: The key atom-db stores a model's name under, in documents and references.
MODEL_KEY = "__model__"

#: The key atom-db stores, in a reference, the ``id()`` of the object saved.
REF_KEY = "__ref__"

#: The keys of a stored document that are not the model's fields.
IMPLICIT = frozenset((ID_KEY, MODEL_KEY, REF_KEY, VERSION_KEY))

#: The keys of the reference atom-db stores for a saved object held by
#: another one: ``{"_id": ..., "__ref__": ..., "__model__": ...}`` (or
#: ``{"__ref__", "__model__"}`` alone, for an object met twice).
REFERENCE_KEYS = frozenset((ID_KEY, REF_KEY, MODEL_KEY))

#: The top-level keys a path may not touch: atom-db and the toolkit manage them.
MANAGED_KEYS = (ID_KEY, VERSION_KEY, MODEL_KEY)

#: The name of the toolkit's index on ``{__version__: 1, _id: 1}``.
VERSION_INDEX = "atomdb_migrate_version"

#: Its keys: the documents at a version, in ``_id`` order.
VERSION_INDEX_KEYS = [(VERSION_KEY, 1), (ID_KEY, 1)]


# ----------------------------------------------------------------------
# atom-db's JSON form of a value
# ----------------------------------------------------------------------
#: The key naming a value's Python type in atom-db's JSON form
#: (``{"__py__": "datetime.date", "year": ..., ...}``).
JSON_TYPE_KEY = "__py__"

#: The ``__py__`` tags of atom-db's JSON form of dates and datetimes
#: (module and class name: a subclass writes its own).
JSON_DATE_TAGS = ("datetime.datetime", "datetime.date")


class ClockPart(NamedTuple):
    """One part of atom-db's JSON form of a date, a time or a datetime."""

    #: Its key (``"year"``, ``"microsecond"``...).
    name: str
    #: The smallest value it takes.
    lowest: int
    #: The largest value it takes.
    highest: int
    #: What it is when missing, converting to a datetime (None: required).
    default: Any


#: The parts of a date (a datetime has them too).
JSON_DATE_PARTS = (
    ClockPart("year", 1, 9999, None),
    ClockPart("month", 1, 12, None),
    ClockPart("day", 1, 31, None),
)

#: The parts of a time (a datetime has them too). atom-db writes no time zone.
JSON_TIME_PARTS = (
    ClockPart("hour", 0, 23, 0),
    ClockPart("minute", 0, 59, 0),
    ClockPart("second", 0, 59, 0),
    ClockPart("microsecond", 0, 999999, 0),
)
