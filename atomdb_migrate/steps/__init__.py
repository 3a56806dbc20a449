"""Rank 2: the steps of each model and their graph, with no I/O.

`versions` (`Step`, `StepGraph` and its census of stored versions; it
re-exports the version values of `atomdb_migrate.core.versions`), `chain`
(running a chain of steps: the one contract of a step function),
`definition` (making a step from its arguments, checked once) and
`registry` (models, aliases, `register_step`, `step`).

"""
