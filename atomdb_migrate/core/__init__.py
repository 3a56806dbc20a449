"""Rank 0: the storage format and BSON value rules, with no I/O.

`documents` (copying and comparing stored documents), `writes` (conditional
writes and BSON-exact values: `bson_kind`, `same_value`), `conditions`
(formulas of conditions on paths, rendered as filters), `literals` (Python
source of values) and `masking` (hiding passwords in URLs). Imports nothing
from the package but `exceptions`.

"""
