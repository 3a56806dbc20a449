"""Rank 8: one plain function per command, one module per command group
(`init`, `upgrade`, `stamp`, `status`, `history`, `check`, `unlock`,
`several` databases; `command` re-exports them all and holds `revision`),
the project's `config`, the `workspace` (a configured connection with the
registry loaded), the `loader` of step modules and their `checksums` (these
read files), and `errors` (what a caller needs to tell of an error).

"""
