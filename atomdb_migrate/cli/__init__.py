"""Rank 9: the command line. `main` is the click group (and the console script,
``atomdb_migrate.cli:main``); `progress` draws progress. The names of
`atomdb_migrate.cli.main` are re-exported here, so the old module path keeps
working.

"""

from .main import *  # noqa: F403
