"""Where Python's ``re`` reads a pattern otherwise than the server's PCRE.

`matching.regex_search` decides a ``$regex`` on a value a step sets in
Python. It may only where ``re`` and PCRE (UTF-8, as MongoDB compiles
every pattern) read the pattern alike; `pcre_only` names what they read
otherwise, and the caller refuses rather than guess:

- escapes of letters and digits (``\\d`` on non-ASCII text, ``\\Z``,
  ``\\h``, ``\\Q...\\E``, ``\\x{..}``, back references, octal);
- anything written ``(?...)`` (flags, named groups, lookarounds, atomic
  groups, comments, recursion) and ``(*...)`` verbs (``(*UCP)``,
  ``(*SKIP)``, ``(*ANY)``);
- possessive quantifiers (``a++``, ``a{2}+``);
- POSIX classes and their kin inside a class: ``[[:alpha:]]``,
  ``[[=a=]]``, ``[[.a.]]`` (``re`` reads a nested set);
- a quantifier ``{,n}`` (``re`` reads it as ``{0,n}``, PCRE as the text);
- ``[[``, ``--``, ``&&``, ``~~`` and ``||`` (nested sets and set operations,
  which ``re`` warns it may one day read otherwise);
- the ``x`` option with whitespace, ``#`` or any non-ASCII character in
  the pattern (the two read classes and comments apart, and PCRE skips
  Unicode's pattern white space, such as U+200E, that ``re`` keeps), and
  the ``i`` option with non-ASCII text or pattern (their case folding
  differs);
- the ``m`` option with ``^`` on a text that ends in ``\n`` (``re``
  matches ``^`` after that final newline, PCRE does not);
- a repeat count above 65535, which PCRE refuses to compile (the server
  answers the query with an error) and ``re`` takes;
- a text holding a line break other than ``\\n`` (PCRE's newline
  conventions, where ``re`` knows ``\\n`` only).

"""

from __future__ import annotations

import re

#: The syntax ``re`` reads otherwise than PCRE, each with what it is.
PCRE_ONLY: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\\[A-Za-z0-9]"), "an escaped letter or digit"),
    (re.compile(r"\(\?"), "a (?...) group"),
    (re.compile(r"\(\*"), "a (*...) verb"),
    (re.compile(r"[*+?}]\+"), "a possessive quantifier"),
    (re.compile(r"\[[:=.]"), "a POSIX class"),
    (re.compile(r"\{,"), "a {,n} quantifier"),
    # What re warns it may read otherwise one day (once per compiled pattern only).
    (re.compile(r"\[\[|--|&&|~~|\|\|"), "a nested set or a set operation"),
)

#: The largest repeat count PCRE compiles (``{n}``, ``{n,m}``).
MAX_REPEAT = 65535

_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")

#: Line breaks PCRE may take for a newline besides ``\n``.
_OTHER_BREAKS = frozenset("\r\x0b\x0c\x85\u2028\u2029")


def pcre_only(pattern: str, options: str, text: str) -> str | None:
    """What makes ``re`` read the pattern (on the text) otherwise than PCRE, or None."""
    for syntax, what in PCRE_ONLY:
        if syntax.search(pattern):
            return what
    if "x" in options and (re.search(r"[\s#]", pattern) or not pattern.isascii()):
        return "whitespace, '#' or a non-ASCII character under the x option"
    if "m" in options and "^" in pattern and text.endswith("\n"):
        return "'^' under the m option on a text ending in a newline"
    for repeat in _REPEAT.finditer(pattern):
        if any(int(n) > MAX_REPEAT for n in repeat.groups() if n):
            return f"a repeat count above {MAX_REPEAT} (PCRE refuses the pattern)"
    if "i" in options and not (text.isascii() and pattern.isascii()):
        return "a case-insensitive match beyond ASCII"
    if any(c in _OTHER_BREAKS for c in text):
        return "a line break other than \\n in the text"
    return None


__all__ = ["MAX_REPEAT", "PCRE_ONLY", "pcre_only"]
