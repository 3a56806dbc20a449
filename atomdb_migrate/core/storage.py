"""The keys the toolkit stores: one place for the storage format's names.

Imports nothing: every subpackage may use it.

"""

from __future__ import annotations

#: The key holding a document's version.
VERSION_KEY = "__version__"

#: The name of the toolkit's index on ``{__version__: 1, _id: 1}``.
VERSION_INDEX = "atomdb_migrate_version"

#: Its keys: the documents at a version, in ``_id`` order.
VERSION_INDEX_KEYS = [(VERSION_KEY, 1), ("_id", 1)]
