"""Operations on the collection: indexes and the validator (nothing happens on read).

Part of the operations package (see `atomdb_migrate.ops`).

"""

from __future__ import annotations

from typing import Any

from ..core.bson_rules import INT32_MAX
from ..core.documents import Document
from ..core.storage import ID_KEY, VERSION_KEY
from ..exceptions import IrreversibleOperationError
from .base import Operation
from .paths import Fast, split_path

#: The options `create_index` passes on to the server.
INDEX_OPTIONS = (
    "name",
    "unique",
    "partialFilterExpression",
    "sparse",
    "expireAfterSeconds",
    "collation",
)

#: The directions and kinds an index key may have.
INDEX_KINDS = (1, -1, "text", "hashed", "2d", "2dsphere")

#: Index keys as PyMongo takes them: ``[(field, direction), ...]``.
IndexKeys = list[tuple[str, Any]]


def index_keys(keys: Any, what: str) -> IndexKeys:
    """Keys as PyMongo takes them: a field name, a list of ``(field, direction)``, or a dict.

    Raises
    ------
    ValueError
        For anything else: an empty list, a direction that is no index kind,
        a field path that names a reserved field.

    """
    if isinstance(keys, str):
        pairs: list[Any] = [(keys, 1)]
    elif isinstance(keys, dict):
        pairs = list(keys.items())
    elif isinstance(keys, (list, tuple)) and keys:
        pairs = [(k, 1) if isinstance(k, str) else k for k in keys]
    else:
        raise ValueError(
            f"{what}: keys must be a field name, a list of (field, direction) or a dict"
        )
    found: IndexKeys = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(f"{what}: {pair!r} is not a (field, direction) pair")
        name, kind = pair
        if isinstance(kind, bool) or kind not in INDEX_KINDS:
            raise ValueError(f"{what}: direction {kind!r} of {name!r}; one of {INDEX_KINDS}")
        if name != ID_KEY and name.split(".")[0] != VERSION_KEY:
            split_path(name, what=f"{what} key")
        found.append((name, kind))
    return found


def check_index_name(name: Any, what: str) -> None:
    """Refuse an index name the server (or a one-line report) cannot take."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: name must be a non-empty string, not {name!r}")
    if name == "*" or any(ord(c) < 32 for c in name):
        raise ValueError(f"{what}: {name!r} cannot name an index")


def _check_index_options(keys: IndexKeys, options: dict[str, Any]) -> None:
    """Refuse option values the server would refuse (or take otherwise) at upgrade."""
    for option in ("unique", "sparse"):
        if option in options and not isinstance(options[option], bool):
            raise ValueError(f"create_index: {option} must be True or False")
    if "expireAfterSeconds" in options:
        ttl = options["expireAfterSeconds"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= INT32_MAX:
            raise ValueError(
                f"create_index: expireAfterSeconds must be a whole number of seconds from 0 "
                f"to 2147483647, not {ttl!r}"
            )
        if len(keys) != 1:
            raise ValueError("create_index: expireAfterSeconds needs an index of one field")
    partial = options.get("partialFilterExpression")
    if "partialFilterExpression" in options and not isinstance(partial, dict):
        raise ValueError("create_index: partialFilterExpression must be a filter (a dict)")
    collation = options.get("collation")
    if "collation" in options and not (
        isinstance(collation, dict) and isinstance(collation.get("locale"), str)
    ):
        raise ValueError('create_index: collation must be a dict with a locale ({"locale": "fr"})')


def index_name(keys: IndexKeys) -> str:
    """The name MongoDB gives an index of these keys (``title_1_views_-1``)."""
    return "_".join(f"{name}_{kind}" for name, kind in keys)


class CollectionOperation(Operation):
    """An operation on the collection (its indexes, its validator), not on documents.

    It has no Python form: nothing happens on read, and a step made of such
    operations alone changes only the version.

    """

    __undone_by_function__ = False
    confined = True

    def apply(self, doc: Document) -> None:
        return None  # nothing happens on read

    def stages(self) -> list[dict[str, Any]]:
        return []

    def fast(self) -> Fast | None:
        return [], {}, []

    def touches(self) -> set[str]:
        return set()

    def describe(self) -> str:
        """What the operation changes, for reports ("index title_1 {title: 1}")."""
        raise NotImplementedError


class IndexOperation(CollectionOperation):
    """An operation on the collection's indexes.

    ``upgrade`` runs the creates of a model's steps before their document
    changes, and the drops after them (expand, then contract).

    """

    #: The index's name.
    name: str


class CreateIndex(IndexOperation):
    __op_name__ = "create_index"

    def __init__(self, keys: Any, **options: Any) -> None:
        self.keys = index_keys(keys, "create_index")
        unknown = sorted(set(options) - set(INDEX_OPTIONS))
        if unknown:
            raise ValueError(
                f"create_index: unknown option {unknown[0]!r}; one of {', '.join(INDEX_OPTIONS)}"
            )
        name = options.get("name", index_name(self.keys))
        check_index_name(name, "create_index")
        _check_index_options(self.keys, options)
        self.options = {**options, "name": name}
        self.name = name

    def arguments(self) -> tuple[Any, ...]:
        return (self.keys, self.options)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}"
            for k, v in self.options.items()
            if k != "name" or v != index_name(self.keys)
        )
        return f"ops.create_index({self.keys!r}{extra})"

    def describe(self) -> str:
        keys = ", ".join(f"{k}: {d!r}" for k, d in self.keys)
        extra = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "name")
        return f"index {self.name} {{{keys}}}" + (f" ({extra})" if extra else "")

    def inverse(self) -> Operation:
        return DropIndex.of(self)


class DropIndex(IndexOperation):
    __op_name__ = "drop_index"

    def __init__(self, name_or_keys: Any, *, keys: Any = None, **options: Any) -> None:
        #: The index as it was, for a downgrade to create again (None: not described).
        self.recreate: CreateIndex | None = None
        if isinstance(name_or_keys, str):
            check_index_name(name_or_keys, "drop_index")
            self.name = name_or_keys
            if keys is not None:
                if "name" in options:
                    raise ValueError("drop_index: the index is named twice")
                self.recreate = CreateIndex(keys, name=name_or_keys, **options)
            elif options:
                raise ValueError(
                    "drop_index: options describe the index to create again on downgrade; "
                    "give its keys too (keys=...)"
                )
        else:
            if keys is not None:
                raise ValueError("drop_index: keys given twice")
            self.recreate = CreateIndex(name_or_keys, **options)
            self.name = self.recreate.name
        if self.name == "_id_":
            raise ValueError("drop_index: the _id index cannot be dropped")
        #: The index's keys, when described.
        self.keys: IndexKeys | None = self.recreate.keys if self.recreate else None

    @classmethod
    def of(cls, index: CreateIndex) -> DropIndex:
        """The drop of an index, described so that its inverse creates it again."""
        options = {k: v for k, v in index.options.items() if k != "name"}
        if index.name == index_name(index.keys):
            return cls(index.keys, **options)
        return cls(index.name, keys=index.keys, **options)

    def arguments(self) -> tuple[Any, ...]:
        if self.recreate is None:
            return (self.name,)
        return (self.recreate.keys, self.recreate.options)

    def __repr__(self) -> str:
        if self.recreate is None:
            return f"ops.drop_index({self.name!r})"
        return repr(self.recreate).replace("ops.create_index(", "ops.drop_index(", 1)

    def describe(self) -> str:
        return f"index {self.name}"

    def inverse(self) -> Operation:
        if self.recreate is None:
            raise IrreversibleOperationError(
                self,
                "the index is named, not described: give drop_index its keys (and options) "
                "to create it again on downgrade, or write a downgrade step",
            )
        return self.recreate


# ----------------------------------------------------------------------
# The validator: nothing happens on read
# ----------------------------------------------------------------------
#: The levels `set_validator` takes: "moderate" while documents stored
#: before may not match (they stay updatable), "strict" once all do.
VALIDATION_LEVELS = ("moderate", "strict")

#: What the server does with a write that does not match: refuse it, or log it.
VALIDATION_ACTIONS = ("error", "warn")


class SetValidator(CollectionOperation):
    """Set the collection's validator to the model's ``$jsonSchema``, or remove it.

    The schema is not part of the operation: ``upgrade`` derives it from the
    model class in the code (`atomdb_migrate.validators.json_schema`), the
    step's model at the model's version, and sets it after the documents
    changed (see `atomdb_migrate.collection_state`). With `level` None the operation
    removes the validator.

    """

    __op_name__ = "set_validator"

    def __init__(self, level: str | None = "moderate", action: str | None = None) -> None:
        if level is None:
            if action is not None:
                raise ValueError(
                    f"set_validator(None) removes the validator: it takes no action ({action!r})"
                )
        else:
            if not isinstance(level, str) or level not in VALIDATION_LEVELS:
                raise ValueError(
                    f"set_validator: level {level!r}; one of {', '.join(VALIDATION_LEVELS)}, "
                    "or None to remove the validator"
                )
            action = "error" if action is None else action
            if not isinstance(action, str) or action not in VALIDATION_ACTIONS:
                raise ValueError(
                    f"set_validator: action {action!r}; one of {', '.join(VALIDATION_ACTIONS)}"
                )
        #: ``validationLevel``, or None: no validator.
        self.level = level
        #: ``validationAction`` (None with no validator).
        self.action = action

    def arguments(self) -> tuple[Any, ...]:
        return (None,) if self.level is None else (self.level, self.action)

    def describe(self) -> str:
        if self.level is None:
            return "no validator"
        return f"the validator ({self.level}, action {self.action})"

    def inverse(self) -> Operation:
        # What the collection had before is not known (and the code describes
        # only the model's version): a downgrade leaves no validator.
        return SetValidator(None)
