"""Rank 6: the eager engine: `runner` (plan, expand, migrate, verify, contract),
`options`, `report`, `leg`, `survey`, `former_names`, `server_steps`, `server_passes`, `stream`,
`verify`, `lease`, `collection_state`, `collection_indexes`, `renames`, `lock`,
`history` and `pace`.

"""
