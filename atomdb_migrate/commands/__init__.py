"""Rank 8: one plain function per command (`command`), the project's `config`,
the `workspace` (a configured connection with the registry loaded) and the
`loader` of step modules.

"""
