"""Rank 0: the storage format and BSON value rules, with no I/O.

`storage` (every key atom-db and the toolkit store, atom-db's JSON date),
`bson_rules` (integer ranges, dates, BSON-exact values: `bson_kind`,
`same_value`), `documents` (copying and comparing stored documents),
`writes` (conditional writes: `unchanged_filter`, `guarded_write`),
`conditions` (formulas of conditions on paths, rendered as filters), `caches`
(module-level caches, emptied by one `reset`), `versions` (version values:
parsing, a stored ``__version__`` in any BSON form, the forms it is stored
in), `literals` (Python source of values) and `masking` (hiding passwords
in URLs). Imports nothing from the
package but `exceptions`.

"""
