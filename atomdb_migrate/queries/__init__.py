"""Rank 3: translating a query written for one version to every stored version,
with no I/O: `formulas` (a filter as a formula), `matching`, `expressions`, `regexes` and
`queries` (`version_filter`, `sources`). The names of
`atomdb_migrate.queries.queries` are re-exported here, so the old module path
keeps working.

"""

from .queries import *  # noqa: F403
