"""The operations a step may list: each with a Python form and a server form.

One module per kind: `paths` (the path helpers in their four forms),
`conversions` (values and `convert`), `base` (`Operation`), `fields`,
`rename_model`, `collection` (indexes and the validator), `factories` (the
functions step modules call) and `running` (a step's list of operations).
Step modules use the facade, `atomdb_migrate.ops`, which re-exports the
public names; the package's own modules import from the module that defines
a name.

"""
