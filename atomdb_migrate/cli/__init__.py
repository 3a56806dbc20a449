"""Rank 9: the command line. It parses, calls the commands and formats; it
imports nothing below the commands. `main` is the click group (and the
console script, ``atomdb_migrate.cli:main``) with its commands; `options`
the shared options, `exits` the exit codes, `output` what is printed,
`running` how a command runs, `progress` the progress bar. The names of
`atomdb_migrate.cli.main`, the exit codes and the option types are
re-exported here, so the old module path keeps working.

"""

from .exits import *  # noqa: F403
from .main import *  # noqa: F403
from .options import MAX_COUNT, MAX_SECONDS, Finite  # noqa: F401
