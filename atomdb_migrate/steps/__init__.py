"""Rank 2: the steps of each model and their graph, with no I/O.

`versions` (version values, `Step`, `StepGraph`, running a chain)
and `registry` (models, aliases, `register_step`).

"""
