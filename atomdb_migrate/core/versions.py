"""Version values: PEP 440 versions as a model, a step and a stored document give them.

A version is shown in its shortest form (``1.0`` and ``1`` are one version,
``"1"``); a stored ``__version__`` is one version whatever its BSON form
(`stored_version`), and is stored in the forms `version_forms` lists. No I/O.

"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from bson.decimal128 import Decimal128
from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version

from ..exceptions import ChainError, InvalidVersionError

#: Anything accepted where a version is expected.
VersionLike = str | int | Version

#: The version of a stored document that has no ``__version__`` key.
BASE_VERSION = "0"

_BASE: Version


class _Version(Version):
    """A PEP 440 version shown in its shortest form: ``1.0`` and ``1`` are one
    version, so they are one string too (``"1"``)."""

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = canonicalize_version(
                Version.__str__(self), strip_trailing_zero=True
            )
        return text


@lru_cache(maxsize=4096)
def _parse(text: str) -> Version:
    return _Version(text)


#: The longest text taken for a version: anything longer is not one (and
#: Python refuses to turn more than 4,300 digits into an int).
MAX_VERSION_LENGTH = 256


def parse_version(
    value: Any, *, model: str | None = None, doc_id: Any = None, what: str = "version"
) -> Version:
    """Parse a version given as a string, an int, or a `Version`.

    Parameters
    ----------
    value: str, int or Version
        The version. An int is treated as its string; a bool is refused.
    model: str, optional
        The model concerned, named in the error.
    doc_id: Any, optional
        The document concerned, named in the error.
    what: str
        What the value is, named in the error.

    Returns
    -------
    version: Version
        The parsed version.

    Raises
    ------
    InvalidVersionError
        If the value is not a PEP 440 version.

    """
    if isinstance(value, Version):
        return value if type(value) is _Version else _parse(Version.__str__(value))
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidVersionError(value, model=model, doc_id=doc_id, what=what)
    try:
        if isinstance(value, int):
            if abs(value) >= 10**MAX_VERSION_LENGTH:
                raise ValueError("too long")
            value = str(value)
        if len(value) > MAX_VERSION_LENGTH:
            raise ValueError("too long")
        return _parse(value)
    except (InvalidVersion, ValueError):
        raise InvalidVersionError(value, model=model, doc_id=doc_id, what=what) from None


_BASE = _parse(BASE_VERSION)


def stored_version(raw: Any, *, model: str | None = None, doc_id: Any = None) -> Version:
    """The version of a stored document, from its ``"__version__"`` value as read.

    One stored version is one version whatever its BSON form: the string
    ``"2"``, the int ``2`` and the Int64 ``2``, the double ``2.0`` (what a
    shell's ``$set: {__version__: 2}`` stores) and the Decimal128 ``2``. A
    missing value (pass None) and an explicit null are version ``"0"``, as
    MongoDB's own ``{__version__: null}`` matches both.

    Raises
    ------
    InvalidVersionError
        For anything else (a bool, NaN, a document, text that is not a
        version, more than `MAX_VERSION_LENGTH` characters).

    """
    if raw is None:
        return _BASE
    kind = type(raw)
    if kind is str or (isinstance(raw, int) and kind is not bool):
        return parse_version(raw, model=model, doc_id=doc_id, what="stored __version__")
    text: str | None = None
    if kind is float and math.isfinite(raw):
        text = repr(raw)
    elif isinstance(raw, Decimal128):
        number = raw.to_decimal()
        if number.is_finite():
            text = str(number)
    if text is not None and "e" not in text.lower():
        try:
            return parse_version(text, model=model, doc_id=doc_id)
        except InvalidVersionError:
            pass
    raise InvalidVersionError(raw, model=model, doc_id=doc_id, what="stored __version__")


def version_forms(version: Version) -> list[Any]:
    """The ``__version__`` values a version is stored as: no two match the same document.

    Its canonical string (as this package writes it), the number (an int for
    ``"2"``, matching ``2``, ``Int64(2)``, ``2.0`` and ``Decimal128("2")``
    alike; a double for ``"1.5"``), and, for version ``"0"``, None (no
    ``__version__``, or null). Other spellings written by hand (``"2.0"``)
    are not among them.

    """
    text = str(version)
    forms: list[Any] = [text]
    if text.isdigit() and len(text) < 19:
        forms.append(int(text))
    elif re.fullmatch(r"[0-9]{1,15}\.[0-9]{1,15}", text):
        forms.append(float(text))
    if text == BASE_VERSION:
        forms.append(None)
    return forms


def known_forms(versions: Iterable[Version]) -> list[Any]:
    """Every form of `versions` (`version_forms`), each once: no two match the same
    document (a number equal to one already listed is left out)."""
    forms: list[Any] = []
    for version in versions:
        for form in version_forms(version):
            if not any(_same_match(form, f) for f in forms):
                forms.append(form)
    return forms


def _same_match(a: Any, b: Any) -> bool:
    """Whether the equality queries of two forms match the same documents."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return bool(a == b)
    return type(a) is type(b) and a == b


def version_key(raw: Any) -> tuple[type, Any]:
    """A stored ``"__version__"`` value as a dict key: its type and value.

    Python holds ``1 == 1.0 == True``, so the value alone would make one key
    of three different stored values. A value that cannot be a key (a
    document, a list, a Decimal128) is keyed by its repr.

    """
    try:
        hash(raw)
    except TypeError:
        return (type(raw), repr(raw))
    return (type(raw), raw)


def canonical(value: VersionLike) -> str:
    """Return the canonical string of a version, as stored in documents.

    ``3`` and ``"3"`` give ``"3"``; ``"1.2"`` gives ``"1.2"``; ``"v01"``
    gives ``"1"``.

    """
    return str(parse_version(value))


def base_version(cls: Any) -> Version:
    """The version a model's chain starts at: its ``__base_version__``, 0 when
    it declares none.

    A model declares a base when its steps below it were squashed: no
    document below the base is stored any more, so its chain must lead from
    the base (not from 0) to ``__version__``.

    Parameters
    ----------
    cls: type
        A model class (anything with ``__model__`` and ``__version__``).

    Raises
    ------
    InvalidVersionError
        If ``__base_version__`` is no version.
    ChainError
        If it is above the model's ``__version__``.

    """
    declared = getattr(cls, "__base_version__", None)
    if declared is None:
        return _BASE
    model = getattr(cls, "__model__", None)
    base = parse_version(declared, model=model, what="__base_version__")
    head = parse_version(getattr(cls, "__version__", BASE_VERSION), model=model)
    if base > head:
        raise ChainError(
            f"__base_version__ {base} is above __version__ {head}; the base is the "
            "lowest version a stored document may have",
            model=model,
            from_version=str(base),
            to_version=str(head),
        )
    return base
