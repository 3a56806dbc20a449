"""Python source for the values written into generated step modules.

A generated module must always compile, whatever the message and the
defaults it holds: a Windows path (``C:\\Users``), quotes, newlines,
control characters, infinities, ObjectIds. Each value is written as an
expression that evaluates back to it, with the imports it needs.

"""

from __future__ import annotations

import datetime
import math
from typing import Any

from bson import Int64, ObjectId


class Source:
    """Expressions for values, and the imports they need."""

    def __init__(self) -> None:
        #: Import lines, in the order first needed.
        self.imports: dict[str, None] = {}

    def literal(self, value: Any) -> str:
        """A Python expression that evaluates to `value`.

        Raises
        ------
        ValueError
            For a value with no expression here (the caller writes a comment
            asking for one instead).

        """
        kind = type(value)
        if value is None or kind in (bool, str, bytes):
            return repr(value)
        if kind is Int64:
            self.imports["from bson import Int64"] = None
            return f"Int64({int(value)})"
        if kind is int:
            return repr(value)
        if kind is float:
            if math.isnan(value):
                return 'float("nan")'
            if math.isinf(value):
                return 'float("inf")' if value > 0 else 'float("-inf")'
            return repr(value)
        if kind is ObjectId:
            self.imports["from bson import ObjectId"] = None
            return f"ObjectId({str(value)!r})"
        if kind is datetime.datetime or kind is datetime.date:
            if getattr(value, "tzinfo", None) not in (None, datetime.UTC):
                raise ValueError(f"no literal for a datetime in {value.tzinfo!r}")
            self.imports["import datetime"] = None
            return repr(value)
        if isinstance(value, (list, tuple)):  # atom's lists too; BSON stores tuples as arrays
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        if isinstance(value, dict):
            items = (f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + ", ".join(items) + "}"
        raise ValueError(f"no literal for a {kind.__name__}")


def quoted(text: str) -> str:
    """A string literal holding `text`: in double quotes where that is plain, else its repr."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return repr(text)


def docstring(text: str) -> str:
    """A module docstring literal holding `text` exactly.

    Triple quotes where they keep the text as written; otherwise the
    string's repr, which escapes whatever a triple-quoted string could not
    hold (backslashes, quotes at the end, control characters).

    """
    plain = (
        bool(text)
        and all(c.isprintable() or c == "\n" for c in text)
        and "\\" not in text
        and '"""' not in text
        and not text.endswith('"')
    )
    return f'"""{text}"""' if plain else repr(text)
