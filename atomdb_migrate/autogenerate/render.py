"""Operations written out as Python source: the lines of a step module's ``operations``.

The one renderer. Each form is registered by type with
`functools.singledispatch`, as Alembic's ``autogenerate/render.py`` registers
its renderers:

- `expression` writes an operation as the call of `atomdb_migrate.ops` that
  makes it. Every operation has the plain form, ``ops.<name>(<arguments>)``
  from its ``__op_name__`` and ``arguments()``; an operation written
  otherwise registers its own form here (the index operations do: a field
  name alone for a one-field key, no ``name=`` when it is the default one);
- `written` writes an entry of the list as its line: an operation, an
  operation with a comment after it (`Noted`), a comment for the author
  (`Comment`), or a `Call` no operation takes as it is.

Values are written by `Source.literal`, which collects the imports they need,
in the order they are first needed. Each line is one line: a comment's text
(the model's own names and types) has its line breaks replaced by spaces.

"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch
from typing import Any, TypeAlias

from ..core.literals import Source
from ..operations.base import Operation
from ..operations.collection import CreateIndex, DropIndex, IndexKeys


@dataclass(frozen=True)
class Comment:
    """A comment line for the author (its text without the ``#``)."""

    text: str


@dataclass(frozen=True)
class Call:
    """A call of `atomdb_migrate.ops` written as it is given.

    For arguments its operation refuses (a field name only a hand-written
    snapshot can hold, such as ``"$x"``): the line is written all the same,
    and loading the step says what is wrong with it, as it does for a line
    written by hand.

    """

    #: The function of `atomdb_migrate.ops`.
    name: str
    arguments: tuple[Any, ...]


@dataclass(frozen=True)
class Noted:
    """An operation with a comment after it, on its line."""

    operation: Operation | Call
    #: The comment's text, without the ``#``.
    note: str


#: What a step module's ``operations`` list holds, a line each.
Entry: TypeAlias = Operation | Call | Noted | Comment


def lines(entries: list[Entry], source: Source) -> list[str]:
    """The lines of an ``operations`` list, without their indent."""
    return [written(entry, source) for entry in entries]


def one_line(text: str) -> str:
    """`text` on one line: its line breaks as spaces."""
    return " ".join(text.splitlines())


def call(name: str, arguments: tuple[Any, ...], source: Source | None = None) -> str:
    """The call ``ops.<name>(...)`` with `arguments` as literals.

    Raises
    ------
    ValueError
        For an argument with no literal (see `Source.literal`).

    """
    source = source or Source()
    return f"ops.{name}({', '.join(source.literal(a) for a in arguments)})"


# ----------------------------------------------------------------------
# An operation as an expression
# ----------------------------------------------------------------------
@singledispatch
def expression(op: Operation | Call, source: Source) -> str:
    """An operation as the call of `atomdb_migrate.ops` that makes it."""
    raise TypeError(f"no Python source is written for a {type(op).__name__}")


@expression.register
def _operation(op: Operation, source: Source) -> str:
    return call(op.__op_name__, op.arguments(), source)


@expression.register
def _call(op: Call, source: Source) -> str:
    return call(op.name, op.arguments, source)


@expression.register
def _create_index(op: CreateIndex, source: Source) -> str:
    named = "" if op.name == _default_name(op) else f", name={source.literal(op.name)}"
    return f"ops.create_index({_keys(op.keys, source)}{named}{_options(op, source)})"


@expression.register
def _drop_index(op: DropIndex, source: Source) -> str:
    if op.recreate is None:
        return f"ops.drop_index({source.literal(op.name)})"
    index = op.recreate
    if index.name == _default_name(index):
        first = _keys(index.keys, source, name_ok=False)
    else:
        first = f"{source.literal(index.name)}, keys={_keys(index.keys, source)}"
    return f"ops.drop_index({first}{_options(index, source)})"


def _default_name(index: CreateIndex) -> str:
    return CreateIndex(index.keys).name


def _options(index: CreateIndex, source: Source) -> str:
    return "".join(f", {k}={source.literal(v)}" for k, v in index.options.items() if k != "name")


def _keys(keys: IndexKeys, source: Source, name_ok: bool = True) -> str:
    """Keys as written: a field name alone where it cannot be taken for an index's
    name (`ops.drop_index` takes a name)."""
    if name_ok and len(keys) == 1 and keys[0][1] == 1:
        return source.literal(keys[0][0])
    pairs = ", ".join(f"({source.literal(k)}, {source.literal(d)})" for k, d in keys)
    return f"[{pairs}]"


# ----------------------------------------------------------------------
# An entry as its line
# ----------------------------------------------------------------------
@singledispatch
def written(entry: Entry, source: Source) -> str:
    """An entry of a step module's ``operations`` as its line."""
    raise TypeError(f"no line is written for a {type(entry).__name__}")


@written.register(Operation)
@written.register(Call)
def _written_call(entry: Operation | Call, source: Source) -> str:
    return f"{expression(entry, source)},"


@written.register
def _noted(entry: Noted, source: Source) -> str:
    return f"{expression(entry.operation, source)},  # {one_line(entry.note)}"


@written.register
def _comment(entry: Comment, source: Source) -> str:
    return f"# {one_line(entry.text)}"
