"""The base of the exception tree (`MigrateError`), and how messages show values.

Part of `atomdb_migrate.exceptions`, which re-exports every name.

"""

from __future__ import annotations

from typing import Any

#: The longest a value or a quoted error is shown in a message: a step may
#: fail on a 16 MB document, and its message must still be one line.
MAX_SHOWN = 300


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to `limit` characters; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # an int of 5,000 digits, a broken __repr__
        text = f"<{type(value).__name__}: {type(exc).__name__}>"
    return shorten(text, limit)


def _describe(model: str | None, doc_id: Any) -> str:
    """Name the model and, where known, the document."""
    where = f"model {short_repr(model)}" if model else "a model"
    if doc_id is not None:
        where += f", document _id={short_repr(doc_id)}"
    return where


class MigrateError(Exception):
    """Base class of every error atomdb-migrate raises.

    Parameters
    ----------
    message: str
        What went wrong; the model and document are named before it.
    model: str, optional
        The ``__model__`` name of the model concerned.
    doc_id: Any, optional
        The ``_id`` of the document concerned.
    **facts:
        Further facts, kept as attributes of the same names.

    """

    #: The ``__model__`` name of the model concerned, where there is one.
    model: str | None = None

    #: The ``_id`` of the document concerned, where there is one.
    doc_id: Any = None

    def __init__(
        self, message: str, *, model: str | None = None, doc_id: Any = None, **facts: Any
    ) -> None:
        self.model = model
        self.doc_id = doc_id
        for name, value in facts.items():
            setattr(self, name, value)
        if model is not None or doc_id is not None:
            message = f"{_describe(model, doc_id)}: {message}"
        super().__init__(message)
