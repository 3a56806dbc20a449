"""Collection validators: a model's ``$jsonSchema`` as atom-db stores it, and setting it.

`json_schema` derives the schema from the model class, member by member,
from what atom-db 0.8.5 writes (``Model.__getstate__`` and its serializers,
read in ``atomdb/base.py`` and ``atomdb/nosql.py``, and checked by saving
models through atom-db on a server):

- a model's document holds ``_id``, ``__model__``, ``__ref__`` (the id of
  the Python object), each field of ``__fields__`` (public members, not
  ``Property``, not tagged ``store=False``), and ``__version__`` (a string)
  for a `VersionedModel`. Every field atom-db writes is required; members it
  does not store are not mentioned;
- a NoSQL model's values go to PyMongo as they are (a datetime is a BSON
  date, a tuple or a set a list, bytes binary data), while an embedded
  ``JSONModel`` writes dates, times, bytes, tuples, sets, decimals and UUIDs
  as ``{"__py__": ..., ...}`` documents (`JSON`);
- a value that is a model is a reference (``{"_id", "__ref__",
  "__model__"}``, or ``{"__ref__", "__model__"}`` for an object met twice)
  or, for an object never saved on its own, its whole document;
- what cannot be told (``Value()``, ``Instance(object)``, a custom
  ``flatten``, validation or access hooks, a type PyMongo needs a codec
  for) gets no constraint rather than a wrong one; other fields are allowed
  (``additionalProperties`` is left open), so documents may keep older
  fields during a rollout.

The server half: `Validator` (a validator, its level and action, as the
server holds them), `read_validator` and `write_validator`, which creates
a collection that does not exist yet with the validator (``collMod`` fails
on a missing collection). When ``upgrade`` sets or removes a validator is
decided in `atomdb_migrate.collection_state`.

"""

from __future__ import annotations

import contextlib
import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from atom.api import GetAttr, Member, PostGetAttr, PostValidate
from atomdb.base import JSONSerializer, Model, ModelSerializer, is_primitive_member
from atomdb.nosql import NoSQLModel, NoSQLModelSerializer
from bson import Decimal128, Int64, ObjectId, Regex

from ..core.bson_rules import INT64_MAX, INT64_MIN
from ..core.storage import (
    ID_KEY,
    IMPLICIT,
    JSON_DATE_PARTS,
    JSON_TIME_PARTS,
    JSON_TYPE_KEY,
    MODEL_KEY,
    REF_KEY,
    VERSION_KEY,
)
from ..operations.collection import VALIDATION_ACTIONS, VALIDATION_LEVELS

#: A ``$jsonSchema`` (or one of its subschemas), as the server takes it.
Schema = dict[str, Any]

#: How a value reaches the server: as PyMongo encodes it, or in atom-db's
#: JSON forms (the serializer of an embedded ``JSONModel``).
RAW, JSON = "raw", "json"


#: ``id(obj)`` of the object saved: a 64-bit integer, a 32-bit one where it fits.
_REF: Schema = {"bsonType": ["int", "long"]}
_STRING: Schema = {"bsonType": "string"}
#: atom's ``Int`` (and ``Range``, ``Instance(int)``) takes a bool: a Python int.
_INT: Schema = {"bsonType": ["int", "long", "bool"]}
#: atom's ``Float`` makes a float of an int it is given: only doubles are stored.
_DOUBLE: Schema = {"bsonType": "double"}
_OBJECT: Schema = {"bsonType": "object"}
_ARRAY: Schema = {"bsonType": "array"}

#: The parts of atom-db's JSON form of a date and of a time.
_DATE_PARTS = tuple(part.name for part in JSON_DATE_PARTS)
_TIME_PARTS = tuple(part.name for part in JSON_TIME_PARTS)

#: The ``__getstate__`` functions whose output this module knows: atom-db's,
#: and those of the bases `versioned_base` announces.
_KNOWN_GETSTATE: list[Any] = [Model.__getstate__]

#: The model bases whose documents also hold ``__version__``. The model
#: subpackage announces `VersionedModel` here (it sits above this one).
_VERSIONED: list[type[Model]] = []


def versioned_base(cls: type[Model]) -> None:
    """Announce a model base whose documents hold ``__version__`` (written by
    its own ``__getstate__``)."""
    _VERSIONED.append(cls)
    _KNOWN_GETSTATE.append(cls.__getstate__)


class _Unknown(Exception):
    """A value whose stored form cannot be told: it gets no constraint."""


# ----------------------------------------------------------------------
# The schema of a model
# ----------------------------------------------------------------------
def json_schema(cls: type[NoSQLModel]) -> Schema:
    """The ``$jsonSchema`` of the documents atom-db stores for a model.

    Parameters
    ----------
    cls: type[NoSQLModel]
        The model (a `VersionedModel` adds ``__version__``, a string).

    Returns
    -------
    schema: dict
        The schema, to give the server as ``{"$jsonSchema": schema}``: every
        stored field required and typed where its type can be told, the
        model's ``__model__``, ``_id``, and any other field allowed.

    Raises
    ------
    TypeError
        If `cls` is not a NoSQL model: only those are stored in collections.

    Examples
    --------
    >>> class Page(VersionedModel):
    ...     title = Str()
    >>> json_schema(Page)["properties"]["title"]
    {'bsonType': 'string'}

    """
    if not (isinstance(cls, type) and issubclass(cls, NoSQLModel)):
        raise TypeError(f"json_schema takes a NoSQLModel subclass, not {cls!r}")
    schema = _document(cls, frozenset({cls}))
    identity = _id_schema(cls)
    properties = {**({ID_KEY: identity} if identity else {}), **schema.get("properties", {})}
    if MODEL_KEY in properties:  # in the model's own collection: its own name
        properties[MODEL_KEY] = {"enum": [cls.__model__]}
    return {**schema, "required": [ID_KEY, *schema.get("required", ())], "properties": properties}


def _document(cls: type[Model], seen: frozenset[type]) -> Schema:
    """A model's state as its ``__getstate__`` writes it (without ``_id``)."""
    if cls.__getstate__ not in _KNOWN_GETSTATE:
        return _OBJECT  # an overridden __getstate__ may write anything
    required = [MODEL_KEY]
    properties: Schema = {MODEL_KEY: _STRING, REF_KEY: _REF}
    if issubclass(cls, tuple(_VERSIONED)):
        required.append(VERSION_KEY)
        properties[VERSION_KEY] = _STRING
    context = _context(cls)
    members = cls.members()
    for name in cls.__fields__:
        if name in IMPLICIT:
            continue  # written over by atom-db's own keys
        required.append(name)
        member = members[name]
        with contextlib.suppress(_Unknown):  # no constraint, still required
            properties[name] = _member(member, _field_context(member, context), seen)
    return {"bsonType": "object", "required": required, "properties": properties}


def _context(cls: type[Model]) -> str | None:
    """How the model's serializer writes values (None: a serializer of its own)."""
    flatten = type(cls.serializer).flatten
    if flatten is JSONSerializer.flatten:
        return JSON
    if flatten is ModelSerializer.flatten:  # NoSQLModelSerializer's too
        return RAW
    return None


def _field_context(member: Member[Any, Any], context: str | None) -> str | None:
    """atom-db hands a primitive member's value (``List(Tuple(int))`` too) to the
    driver as it is, without its serializer: no JSON forms there."""
    if context == JSON:
        try:
            if is_primitive_member(member):
                return RAW
        except Exception:
            return context
    return context


def _id_schema(cls: type[Model]) -> Schema:
    """``_id``: the ``_id`` member's value when it is truthy, or the ObjectId the
    driver generates in its place (atom-db leaves a false one out); ``{}``
    (anything) where the member's values cannot be told."""
    member = cls.members().get("_id")
    if member is None:
        return {}
    try:
        kinds = _type_list(_member(member, RAW, frozenset()))
    except _Unknown:
        return {}
    if kinds is None:
        return {}
    return _types([*(k for k in kinds if k != "null"), "objectId"])


# ----------------------------------------------------------------------
# Members
# ----------------------------------------------------------------------
def _member(member: Member[Any, Any], context: str | None, seen: frozenset[type]) -> Schema:
    """The schema of the values a member stores.

    Raises
    ------
    _Unknown
        Where they cannot be told.

    """
    if context is None or not _plain_access(member):
        raise _Unknown
    if "flatten" in (member.metadata or {}):
        raise _Unknown  # atom-db calls the member's own flatten
    mode, arg = member.validate_mode
    # By name: atom's Validate gains modes between versions (FloatRangePromote).
    kind = mode.name
    if kind == "Bool":
        return {"bsonType": "bool"}
    if kind in ("Int", "IntPromote", "Range"):
        return _INT
    if kind in ("Float", "FloatPromote", "FloatRange", "FloatRangePromote"):
        return _DOUBLE
    if kind in ("Str", "StrPromote"):
        return _STRING
    if kind in ("Bytes", "BytesPromote"):
        return _kind(bytes, context, seen)
    if kind in ("List", "ContainerList"):
        return _array(_item(arg, context, seen))
    if kind in ("Tuple", "Set"):
        return _sequence(_array(_item(arg, context, seen)), context)
    if kind == "FixedTuple":
        items = [_item(m, context, seen) for m in arg]
        fixed = {"bsonType": "array", "minItems": len(items), "maxItems": len(items)}
        return _sequence({**fixed, "items": items}, context)
    if kind in ("Dict", "DefaultDict"):
        value = _item(arg[1], context, seen)
        return {"bsonType": "object", "additionalProperties": value} if value else _OBJECT
    if kind in ("Typed", "Instance", "Coerced"):
        kinds = arg[0] if kind == "Coerced" else arg
        return _kinds(kinds if isinstance(kinds, tuple) else (kinds,), context, seen)
    if kind in ("OptionalTyped", "OptionalInstance"):
        return _or_null(_kinds(arg if isinstance(arg, tuple) else (arg,), context, seen))
    if kind == "Enum":
        return _enum(arg)
    resolve = getattr(member, "resolve", None)
    if kind == "MemberMethod_ObjectOldNew" and resolve is not None:
        # ForwardTyped, ForwardInstance: the types are known once resolved.
        try:
            kinds = resolve()
        except Exception:
            raise _Unknown from None
        found = _kinds(kinds if isinstance(kinds, tuple) else (kinds,), context, seen)
        return _or_null(found) if getattr(member, "optional", True) else found
    raise _Unknown  # Value(), Callable(), Subclass(), a custom validate method...


def _plain_access(member: Member[Any, Any]) -> bool:
    """Whether reading the member gives what was validated (no hook in between)."""
    return (
        member.getattr_mode[0] == GetAttr.Slot
        and member.post_getattr_mode[0] == PostGetAttr.NoOp
        and member.post_validate_mode[0] == PostValidate.NoOp
    )


def _item(member: Any, context: str | None, seen: frozenset[type]) -> Schema:
    """A container's item schema, or ``{}`` (anything) where it has none or it is unknown."""
    if not isinstance(member, Member):
        return {}
    try:
        return _member(member, context, seen)
    except _Unknown:
        return {}


def _array(items: Schema) -> Schema:
    return {"bsonType": "array", "items": items} if items else _ARRAY


def _sequence(array: Schema, context: str) -> Schema:
    """A tuple or a set: a list, or in atom-db's JSON form ``{"__py__": type name,
    "values": [...]}``."""
    if context != JSON:
        return array
    return {
        "bsonType": "object",
        "required": [JSON_TYPE_KEY, "values"],
        # The tag is the class's name ("tuple", "set", atom's "atomset", a
        # namedtuple's): any string.
        "properties": {JSON_TYPE_KEY: _STRING, "values": array},
    }


def _json_form(tag: str, **parts: Schema) -> Schema:
    """atom-db's JSON form of a value: ``{"__py__": tag, ...parts}``."""
    return {
        "bsonType": "object",
        "required": [JSON_TYPE_KEY, *parts],
        "properties": {JSON_TYPE_KEY: {"enum": [tag]}, **parts},
    }


def _clock(kind: type) -> Schema:
    """atom-db's JSON form of a datetime, a date (or a datetime, which is one), a time."""
    int32 = {"bsonType": "int"}
    has_date = issubclass(kind, date)
    required = [JSON_TYPE_KEY, *(_DATE_PARTS if has_date else ())]
    if not has_date or issubclass(kind, datetime):
        required += _TIME_PARTS
    parts = (*(_DATE_PARTS if has_date else ()), *_TIME_PARTS)
    return {
        "bsonType": "object",
        "required": required,
        # The tag is module and class name: a subclass writes its own.
        "properties": {JSON_TYPE_KEY: _STRING, **{p: int32 for p in parts}},
    }


# ----------------------------------------------------------------------
# Python types
# ----------------------------------------------------------------------
def _kinds(kinds: Iterable[Any], context: str, seen: frozenset[type]) -> Schema:
    """The schema of a value that is an instance of one of `kinds`."""
    return _union([_kind(kind, context, seen) for kind in kinds])


def _kind(kind: Any, context: str, seen: frozenset[type]) -> Schema:
    """How an instance of one Python type is stored (the order matters: bool is an
    int, datetime a date, IntEnum an int, bson.Binary bytes)."""
    if not isinstance(kind, type):
        raise _Unknown
    if issubclass(kind, Model):
        return _model_value(kind, seen)
    if issubclass(kind, enum.Enum):
        if not list(kind):
            raise _Unknown  # no member: only None could be stored
        if issubclass(kind, enum.Flag):  # combined flags are no listed member
            return _union([_constant_type(m.value) for m in kind])
        return _enum(list(kind))
    if issubclass(kind, bool):
        return {"bsonType": "bool"}
    if issubclass(kind, Int64):
        return {"bsonType": "long"}
    if issubclass(kind, int):
        return _INT
    if issubclass(kind, float):
        return _DOUBLE
    if issubclass(kind, str):
        return _STRING
    if issubclass(kind, ObjectId):
        return {"bsonType": "objectId"}
    if issubclass(kind, Decimal128):
        return {"bsonType": "decimal"}
    if issubclass(kind, (Regex, re.Pattern)):
        return {"bsonType": "regex"}
    if issubclass(kind, bytes):
        if context == JSON:
            return _json_form("bytes", bytes=_STRING)
        return {"bsonType": "binData"}
    if issubclass(kind, (datetime, date, time)):
        if context == JSON:
            return _clock(kind)
        if issubclass(kind, datetime):
            return {"bsonType": "date"}
        raise _Unknown  # PyMongo stores no date or time without a codec
    if issubclass(kind, Decimal):
        if context == JSON:
            return _json_form("decimal", value=_STRING)
        raise _Unknown  # nor a Decimal
    if issubclass(kind, UUID):
        if context == JSON:
            return _json_form("uuid", id=_STRING)
        raise _Unknown  # a UUID depends on the client's uuidRepresentation
    if issubclass(kind, (tuple, set)):
        return _sequence(_ARRAY, context)
    if issubclass(kind, list):
        return _ARRAY
    if issubclass(kind, Mapping):
        return _OBJECT
    raise _Unknown  # object, or a type only a codec can store


def _model_value(kind: type[Model], seen: frozenset[type]) -> Schema:
    """A model held by another: a reference to it, or its whole document.

    atom-db writes a saved NoSQL object as ``{"_id", "__ref__", "__model__"}``,
    an object met a second time while saving one document as ``{"__ref__",
    "__model__"}``, and any other object as its own state. The value may be
    an instance of a subclass, which names itself in ``__model__``.

    """
    flatten_object = type(kind.serializer).flatten_object
    if flatten_object not in (NoSQLModelSerializer.flatten_object, JSONSerializer.flatten_object):
        raise _Unknown
    reference = {
        "bsonType": "object",
        "required": [MODEL_KEY],
        "properties": {ID_KEY: _id_schema(kind), REF_KEY: _REF, MODEL_KEY: _STRING},
        "additionalProperties": False,
    }
    if kind in seen:
        # A model holding itself: $jsonSchema has no references to recurse with.
        document: Schema = {"bsonType": "object", "required": [MODEL_KEY]}
    else:
        document = _document(kind, seen | {kind})
    return {"anyOf": [reference, document]}


# ----------------------------------------------------------------------
# Constants and enums
# ----------------------------------------------------------------------
def _enum(items: Iterable[Any]) -> Schema:
    """An ``enum`` of the stored values, with the values equal to them in Python.

    atom's ``Enum`` checks ``value in items``, so ``Enum("a", 1)`` takes
    ``True`` and ``1.0``; the server compares numbers across types (1 and
    1.0 match) but not with a bool.

    """
    values: list[Any] = []
    for item in items:
        value = _constant(item.value if isinstance(item, enum.Enum) else item)
        variants = [value]
        if isinstance(value, bool):
            variants.append(int(value))
        elif isinstance(value, (int, float)) and value in (0, 1):
            variants.append(bool(value))
        for v in variants:
            if not any(_same_stored(v, seen) for seen in values):
                values.append(v)
    if not values:
        raise _Unknown  # the server takes no empty enum
    return {"enum": values}


def _constant(value: Any) -> Any:
    """A constant as it is stored, if the server compares it as Python does."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float) and not math.isnan(value):
        return value
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return int(value)
    raise _Unknown


def _constant_type(value: Any) -> Schema:
    if isinstance(value, bool):
        return {"bsonType": "bool"}
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _DOUBLE
    if isinstance(value, str):
        return _STRING
    raise _Unknown


def _same_stored(a: Any, b: Any) -> bool:
    """Whether the server takes two constants as one (numbers of any type alike)."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------
# Combining schemas
# ----------------------------------------------------------------------
def _types(kinds: list[str]) -> Schema:
    unique = list(dict.fromkeys(kinds))
    return {"bsonType": unique[0] if len(unique) == 1 else unique}


def _type_list(schema: Schema) -> list[str] | None:
    """The types of a schema that says nothing but its types."""
    if schema.keys() != {"bsonType"}:
        return None
    kinds = schema["bsonType"]
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _union(schemas: list[Schema]) -> Schema:
    """A value matching any of `schemas`: one list of types where they are only types."""
    if any(not s for s in schemas):
        raise _Unknown  # one of them takes anything
    lists = [_type_list(s) for s in schemas]
    if all(kinds is not None for kinds in lists):
        return _types([k for kinds in lists if kinds for k in kinds])
    if len(schemas) == 1:
        return schemas[0]
    return {"anyOf": schemas}


def _or_null(schema: Schema) -> Schema:
    """The schema, or null (an optional member's None)."""
    kinds = _type_list(schema)
    if kinds is not None:
        return _types([*kinds, "null"])
    if schema.keys() == {"enum"}:
        values = schema["enum"]
        return schema if None in values else {"enum": [*values, None]}
    if schema.keys() == {"anyOf"}:
        return {"anyOf": [*schema["anyOf"], {"bsonType": "null"}]}
    return {"anyOf": [schema, {"bsonType": "null"}]}


# ----------------------------------------------------------------------
# On the server
# ----------------------------------------------------------------------
@dataclass(frozen=True)
class Validator:
    """A collection's validator, as ``collMod`` sets it and ``listCollections`` shows it."""

    #: The validator document (``{"$jsonSchema": ...}``); None: no validator.
    rules: dict[str, Any] | None = None
    #: ``validationLevel``: "strict" (the server's default) or "moderate".
    level: str = "strict"
    #: ``validationAction``: "error" (the server's default) or "warn".
    action: str = "error"

    def __post_init__(self) -> None:
        if self.level not in (*VALIDATION_LEVELS, "off"):
            raise ValueError(f"validation level {self.level!r}; one of {VALIDATION_LEVELS}")
        if self.action not in (*VALIDATION_ACTIONS, "errorAndLog"):
            raise ValueError(f"validation action {self.action!r}; one of {VALIDATION_ACTIONS}")

    def __bool__(self) -> bool:
        return bool(self.rules)

    def same(self, other: Validator) -> bool:
        """Whether the two validate alike (no validator is one, whatever its level)."""
        return self == other or (not self and not other)

    def options(self) -> dict[str, Any]:
        """The options of ``collMod`` and ``create`` that set it (``{}`` removes one)."""
        return {
            "validator": self.rules or {},
            "validationLevel": self.level,
            "validationAction": self.action,
        }

    def describe(self) -> str:
        if not self:
            return "no validator"
        return f"the validator ({self.level}, action {self.action})"


#: No validator at all.
NO_VALIDATOR = Validator()


def validator_of(cls: type[NoSQLModel], level: str, action: str) -> Validator:
    """The validator of a model's documents (see `json_schema`)."""
    return Validator({"$jsonSchema": json_schema(cls)}, level, action)


__all__ = [
    "JSON",
    "NO_VALIDATOR",
    "RAW",
    "Schema",
    "Validator",
    "json_schema",
    "validator_of",
]
