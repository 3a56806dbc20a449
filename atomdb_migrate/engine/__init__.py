"""Rank 6: the eager engine: `runner` (survey, expand, migrate, contract),
`collection_state`, `renames`, `lock`, `history` and `pace`.

"""
