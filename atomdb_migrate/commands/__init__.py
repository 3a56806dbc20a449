"""Rank 8: one plain function per command (`command`), the project's `config`,
the `workspace` (a configured connection with the registry loaded), the
`loader` of step modules and their `checksums` (these read files).

"""
