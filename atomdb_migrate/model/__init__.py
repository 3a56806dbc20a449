"""Rank 5: the lazy path: `VersionedModel` and its write-back (`versioned`), and
the reads through atom-db that need the server: `finders` and the
`query_guard`. The names of `atomdb_migrate.model.versioned` are re-exported
here, so the old module path ``atomdb_migrate.model`` keeps working.

"""

from .versioned import *  # noqa: F403
