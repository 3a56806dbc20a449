"""Rank 3: translating a query written for one version to every stored version,
with no I/O: `formulas` (a filter as a formula), `matching`, `expressions`,
`regexes`, `sources` (where a value comes from through each operation,
registered by type), `translation` (a formula through operations and
steps), `renamed_models` (model names through ``rename_model``) and
`version_filters` (`version_filter`). `queries`, the former module of the
last three, keeps its names.

"""

from .sources import sources
from .translation import through_step
from .version_filters import version_filter

__all__ = ["sources", "through_step", "version_filter"]
