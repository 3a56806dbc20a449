"""Declared indexes: a model's ``__indexes__``, what its steps create, what a collection has.

A model declares the indexes its collection should have, in the shapes
`ops.create_index` takes::

    class Page(VersionedModel):
        __version__ = 3
        __indexes__ = [
            "title",                                   # {title: 1}
            [("author", 1), ("created", -1)],          # a compound index
            ops.create_index("slug", unique=True),     # with options
        ]

Three comparisons use it, all by index name (MongoDB's own, ``title_1``,
unless an option names it):

- `planned`: against the indexes the model's steps create and drop, replayed
  in order (`created_by_steps`); ``revision --autogenerate`` writes the
  difference as ``ops.create_index`` and ``ops.drop_index``;
- `step_drift`: the same, for ``check``: a declared index no step creates is
  a change without a migration;
- `collection_drift`: against a collection's indexes (``check --indexes``):
  missing, extra, or with other keys or options.

The ``_id`` index and the toolkit's own (`mongo.VERSION_INDEX`) are never
declared and never extra. A model without ``__indexes__`` (None) has its
indexes left alone: nothing is compared.

"""

from __future__ import annotations

from typing import Any

from ..core.storage import VERSION_INDEX, VERSION_INDEX_KEYS
from ..exceptions import ConfigError, short_repr
from ..operations.collection import INDEX_OPTIONS, CreateIndex, DropIndex, IndexKeys, IndexOperation
from ..operations.running import StepOperations
from ..queries.matching import equal
from ..steps.versions import Step

#: A versioned model class (`atomdb_migrate.VersionedModel`, which imports
#: this module to check its ``__indexes__``).
ModelClass = type[Any]

#: Indexes that are never declared nor extra.
UNDECLARED = frozenset({"_id_", VERSION_INDEX})
_UNDECLARED_KEYS = ([("_id", 1)], VERSION_INDEX_KEYS)


def declared(cls: ModelClass) -> dict[str, CreateIndex] | None:
    """A model's ``__indexes__`` by name, or None when it declares none.

    Raises
    ------
    ConfigError
        For an entry that is no index (as `ops.create_index` says), two with
        one name, or the ``_id`` or the toolkit's index.

    """
    given = cls.__indexes__
    if given is None:
        return None
    what = f"model {cls.__model__!r}: __indexes__"
    if isinstance(given, (str, dict)) or not isinstance(given, (list, tuple)):
        raise ConfigError(f"{what} must be a list of indexes, not {short_repr(given)}")
    found: dict[str, CreateIndex] = {}
    for entry in given:
        try:
            index = entry if isinstance(entry, CreateIndex) else CreateIndex(entry)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
        if index.name in UNDECLARED or index.keys in _UNDECLARED_KEYS:
            raise ConfigError(
                f"{what}: {index.describe()} is not one to declare: the server keeps the _id "
                "index, and the toolkit its own"
            )
        if index.name in found:
            raise ConfigError(f"{what}: two indexes are named {index.name}")
        for other in found.values():
            if other.keys == index.keys and all(
                equal(index.options.get(o), other.options.get(o))
                for o in ("partialFilterExpression", "collation")
            ):
                raise ConfigError(
                    f"{what}: {other.name} and {index.name} index the same keys; the "
                    "server keeps one index of the same keys, filter and collation"
                )
            if _text(other) and _text(index):
                raise ConfigError(
                    f"{what}: {other.name} and {index.name} are both text indexes; a "
                    "collection has one (give it every field)"
                )
        found[index.name] = index
    return found


def _text(index: CreateIndex) -> bool:
    return any(kind == "text" for _, kind in index.keys)


def created_by_steps(steps: list[Step]) -> dict[str, CreateIndex]:
    """The indexes a chain of steps leaves: their creates and drops replayed in order."""
    found: dict[str, CreateIndex] = {}
    for step in steps:
        if isinstance(step.operations, StepOperations):
            for op in step.operations.indexes():
                if isinstance(op, CreateIndex):
                    found[op.name] = op
                else:
                    found.pop(op.name, None)
    return found


def same_index(found: dict[str, Any], op: CreateIndex) -> bool:
    """Whether an existing index (as ``index_information`` gives it) is the one asked for."""
    if _canonical(stored_keys(found)) != _canonical(op.keys):
        return False
    return all(
        same_option(o, _option(found, o), _option(op.options, o), filled=True)
        for o in INDEX_OPTIONS
        if o != "name"
    )


#: A collation's settings when not given, as the server fills them in.
COLLATION_DEFAULTS = {
    "strength": 3,
    "caseLevel": False,
    "caseFirst": "off",
    "numericOrdering": False,
    "alternate": "non-ignorable",
    "maxVariable": "punct",
    "normalization": False,
    "backwards": False,
}


def same_option(option: str, there: Any, value: Any, *, filled: bool = False) -> bool:
    """Whether two values of an index option are one to the server.

    Values compare as the server compares them (`matching.equal`: ``0`` is not
    ``False``). A partial filter's fields are a conjunction: their order does
    not count. A collation's settings compare one by one, a setting not given
    as its default; with `filled`, `there` is as the server keeps it (every
    setting filled in, and ``{"locale": "simple"}`` kept as no collation).

    """
    if option == "collation":
        # What the server keeps may hold settings the declaration leaves out.
        return _same_collation(there, value) and (filled or _same_collation(value, there))
    if option == "partialFilterExpression" and isinstance(there, dict) and isinstance(value, dict):
        return there.keys() == value.keys() and all(equal(there[k], value[k]) for k in there)
    return equal(there, value)


def _collation(value: Any) -> Any:
    """A collation as its settings, defaults filled in (None: the simple one)."""
    if not isinstance(value, dict) or value.get("locale") == "simple":
        return None
    return {**COLLATION_DEFAULTS, **{k: v for k, v in value.items() if k != "version"}}


def _same_collation(there: Any, value: Any) -> bool:
    asked, kept = _collation(value), _collation(there)
    if asked is None or kept is None:
        return asked is None and kept is None
    return all(equal(kept.get(k), v) for k, v in asked.items())


#: Options whose absence means a value: an index is not unique unless it says so.
_OPTION_DEFAULTS = {"unique": False, "sparse": False}


def _option(options: dict[str, Any], name: str) -> Any:
    value = options.get(name)
    return _OPTION_DEFAULTS.get(name) if value is None else value


def stored_keys(found: dict[str, Any]) -> IndexKeys:
    """An existing index's keys as they were asked for: whole numbers as ints, and a
    text index's fields, which MongoDB keeps as ``_fts``/``_ftsx`` and ``weights``,
    as ``(field, "text")``."""
    keys = [(k, int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in found["key"]]
    if ("_fts", "text") not in keys:
        return keys
    out: IndexKeys = []
    for name, kind in keys:
        if name == "_fts":
            out += [(field, "text") for field in found.get("weights", {})]
        elif name != "_ftsx":
            out.append((name, kind))
    return out


def _canonical(keys: IndexKeys) -> IndexKeys:
    """Keys with each run of text fields in one order: MongoDB keeps them by weight."""
    out: IndexKeys = []
    run: list[tuple[str, Any]] = []
    for pair in [*keys, ("", None)]:
        if pair[1] == "text":
            run.append(pair)
            continue
        out += sorted(run)
        run = []
        if pair[1] is not None:
            out.append(pair)
    return out


def phases(
    operations: list[IndexOperation],
) -> tuple[list[IndexOperation], list[IndexOperation]]:
    """What a run's index operations come to, split into what goes before the
    documents change (creates) and what goes after (drops).

    The operations of every step up to the target are replayed, so only the
    last operation on each index name counts: an index a step creates and a
    later step drops is only dropped, and a run that repeats the chain does
    not meet the indexes its earlier steps asked for. An index dropped and
    created again under its name with other keys or options, or created
    under another name with the same keys (renamed), is dropped before,
    ahead of the creates: the server refuses the new one beside it. The
    runner keeps an index already as its create asks.

    """
    last: dict[str, IndexOperation] = {}
    replaced: set[str] = set()
    keys: dict[str, IndexKeys] = {}  # what the operations say each name indexes
    for op in operations:
        if isinstance(op, CreateIndex) and isinstance(last.get(op.name), DropIndex):
            replaced.add(op.name)
        last[op.name] = op
        if isinstance(op, (CreateIndex, DropIndex)) and op.keys is not None:
            keys[op.name] = op.keys
    creates = [op for op in last.values() if isinstance(op, CreateIndex)]
    before: list[IndexOperation] = []
    after: list[IndexOperation] = []
    for name, op in last.items():
        if isinstance(op, DropIndex):
            renamed = name in keys and any(c.keys == keys[name] for c in creates)
            (before if renamed else after).append(op)
    for op in creates:
        if op.name in replaced:
            before.append(DropIndex(op.name))
        before.append(op)
    return before, after


def replaces(create: CreateIndex, name: str, info: dict[str, Any]) -> bool:
    """Whether a create takes the place of an existing index (as ``index_information``
    gives it) that a run drops: under its name, or on its keys (renamed)."""
    return create.name == name or _canonical(create.keys) == _canonical(stored_keys(info))


def found_described(name: str, info: dict[str, Any]) -> str:
    """An existing index as the run's lines describe one (``index email_1 {email: 1}``)."""
    return f"index {name} {_shown(info)}"


def as_created(info: dict[str, Any]) -> tuple[IndexKeys, dict[str, Any]]:
    """The keys and options that create an existing index again as it is."""
    options = {k: v for k, v in info.items() if k not in ("key", "v", "ns")}
    collation = options.get("collation")
    if isinstance(collation, dict):  # the server's ICU version is its own to fill in
        options["collation"] = {k: v for k, v in collation.items() if k != "version"}
    return stored_keys(info), options


def duplicates_pipeline(index: CreateIndex) -> list[dict[str, Any]] | None:
    """An aggregation that finds a key two documents share, in the unique `index`.

    It gives at most one row, ``{"_id": {"k0": value, ...}, "n": documents,
    "first": _id, "last": _id}``, the key's values by position in the index's
    keys. Documents are taken as the index takes them: those its partial
    filter selects, those holding one of its fields when sparse, a missing
    field as null, and each item of an array as a key of its own (a document
    repeating an item shares nothing with itself). What it cannot see (a
    collation's equal strings, a path through an array of documents) the
    build still refuses; it never says two documents share a key the index
    would not give them. None where the index is of a kind no check is
    written for (a text or hashed key).

    """
    fields = [field for field, kind in index.keys]
    if any(kind not in (1, -1) for _, kind in index.keys):
        return None
    conditions: list[dict[str, Any]] = []
    partial = index.options.get("partialFilterExpression")
    if partial:
        conditions.append(partial)
    if index.options.get("sparse"):
        conditions.append({"$or": [{f: {"$exists": True}} for f in fields]})
    # A path through an array of documents is read otherwise by servers'
    # aggregations ("$m.x" is [1, 2] on MongoDB, missing on others): such
    # documents are left to the build, never taken for a null key.
    conditions += [
        {prefix: {"$not": {"$type": "array"}}}
        for prefix in dict.fromkeys(
            ".".join(f.split(".")[:i]) for f in fields for i in range(1, f.count(".") + 1)
        )
    ]
    stages: list[dict[str, Any]] = []
    if conditions:
        stages.append({"$match": conditions[0] if len(conditions) == 1 else {"$and": conditions}})
    names = [f"k{i}" for i in range(len(fields))]
    stages.append(
        {"$project": {n: {"$ifNull": [f"${f}", None]} for n, f in zip(names, fields, strict=True)}}
    )
    stages += [{"$unwind": {"path": f"${n}", "preserveNullAndEmptyArrays": True}} for n in names]
    key = {n: f"${n}" for n in names}
    return [
        *stages,
        {"$group": {"_id": {"k": key, "id": "$_id"}}},  # each document once per key
        {
            "$group": {
                "_id": "$_id.k",
                "n": {"$sum": 1},
                "first": {"$min": "$_id.id"},
                "last": {"$max": "$_id.id"},
            }
        },
        {"$match": {"n": {"$gt": 1}}},
        {"$limit": 1},
    ]


def shared_key(index: CreateIndex, row: dict[str, Any]) -> dict[str, Any]:
    """The key a `duplicates_pipeline` row found, by field (a missing field as None)."""
    found = row.get("_id") or {}
    return {field: found.get(f"k{i}") for i, (field, _) in enumerate(index.keys)}


def same(a: CreateIndex, b: CreateIndex) -> bool:
    """Whether two declared indexes are one: same keys, same options (see `same_value`;
    ``unique=False`` is no option)."""
    return (
        a.keys == b.keys
        and a.name == b.name
        and all(
            same_option(o, _option(a.options, o), _option(b.options, o))
            for o in INDEX_OPTIONS
            if o != "name"
        )
    )


def planned(
    wanted: dict[str, CreateIndex], created: dict[str, CreateIndex]
) -> list[IndexOperation]:
    """The operations that take the `created` indexes to the `wanted` ones: drops of
    those no longer wanted or changed, each described so that a downgrade can
    create it again as it was, then creates."""
    drops: list[IndexOperation] = [
        DropIndex.of(old)
        for name, old in created.items()
        if name not in wanted or not same(old, wanted[name])
    ]
    creates: list[IndexOperation] = [
        new for name, new in wanted.items() if name not in created or not same(created[name], new)
    ]
    return drops + creates


def step_drift(cls: ModelClass, steps: list[Step]) -> list[str]:
    """How the model's ``__indexes__`` differ from what its steps create, a line each."""
    wanted = declared(cls)
    if wanted is None:
        return []
    found = []
    for op in planned(wanted, created_by_steps(steps)):
        if isinstance(op, CreateIndex):
            found.append(f"__indexes__ declares {op.describe()}, which its steps do not create")
        elif op.name not in wanted:
            found.append(
                f"its steps create the index {op.name}, which __indexes__ does not declare"
            )
    return [
        f"model {cls.__model__!r}: {line}. A change without a migration? Run "
        f"`atomdb-migrate revision --autogenerate --model {cls.__model__} -m ...`"
        for line in found
    ]


def collection_drift(
    cls: ModelClass, existing: dict[str, dict[str, Any]], collection: str
) -> list[str]:
    """How a collection's indexes (as ``index_information`` gives them) differ from
    the model's ``__indexes__``, a line each: missing, extra, or different."""
    wanted = declared(cls)
    if wanted is None:
        return []
    found = []
    where = f"model {cls.__model__!r}: collection {collection}"
    for name, index in wanted.items():
        there = existing.get(name)
        if there is None:
            found.append(f"{where} lacks the declared {index.describe()}")
        elif not same_index(there, index):
            found.append(
                f"{where} has the index {name} as {_shown(there)}, but the model declares "
                f"{index.describe()}"
            )
    for name, there in existing.items():
        if name not in wanted and name not in UNDECLARED:
            found.append(f"{where} has the index {name} {_shown(there)}, which is not declared")
    return found


def _shown(info: dict[str, Any]) -> str:
    keys = ", ".join(f"{k}: {v!r}" for k, v in stored_keys(info))
    extra = ", ".join(f"{k}={v!r}" for k, v in info.items() if k not in _INTERNAL)
    return f"{{{keys}}}" + (f" ({extra})" if extra else "")


#: What ``index_information`` tells that no declaration says.
_INTERNAL = frozenset(
    {
        "key",
        "v",
        "ns",
        "weights",
        "default_language",
        "language_override",
        "textIndexVersion",
        "2dsphereIndexVersion",
    }
)
