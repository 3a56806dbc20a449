"""The former module of `version_filter` and the sources of a query, split since into
`sources`, `translation`, `renamed_models` and `version_filters`; its names keep
working from here."""

from .sources import sources
from .translation import through_step
from .version_filters import *  # noqa: F403

__all__ = ["sources", "through_step", "version_filter"]  # noqa: F405
