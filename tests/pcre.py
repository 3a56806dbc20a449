"""PCRE2, the server's regex engine, read through ctypes: what a pattern matches there.

For the tests only: `matching.regex_search` decides a regex in Python where
``re`` reads it as PCRE does, and these tests hold it to PCRE's own answer.
`search` raises `PcreMissing` where libpcre2-8 is not on the machine (the
tests then skip, saying so) and `PcreError` for a pattern PCRE refuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

#: Compile options, as MongoDB sets them: UTF-8 always, and the $options letters.
UTF = 0x00080000
OPTIONS = {"i": 0x00000008, "m": 0x00000400, "s": 0x00000020, "x": 0x00000080}
NO_MATCH = -1


class PcreMissing(Exception):
    """libpcre2-8 cannot be loaded."""


class PcreError(Exception):
    """PCRE refuses the pattern (the server would refuse the query)."""


@cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise PcreMissing(f"libpcre2-8 is not available ({exc})") from None
    lib.pcre2_compile_8.restype = ctypes.c_void_p
    lib.pcre2_compile_8.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_void_p,
    ]
    lib.pcre2_match_data_create_from_pattern_8.restype = ctypes.c_void_p
    lib.pcre2_match_data_create_from_pattern_8.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.pcre2_match_8.restype = ctypes.c_int
    lib.pcre2_match_8.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.pcre2_match_data_free_8.argtypes = [ctypes.c_void_p]
    lib.pcre2_code_free_8.argtypes = [ctypes.c_void_p]
    return lib


def available() -> str | None:
    """None where PCRE can be used; otherwise why not."""
    try:
        _library()
    except PcreMissing as exc:
        return str(exc)
    return None


def search(pattern: str, options: str, text: str) -> bool:
    """Whether PCRE2 (UTF-8, with the option letters) finds the pattern in the text."""
    lib = _library()
    flags = UTF
    for letter in options:
        flags |= OPTIONS[letter]
    data = pattern.encode()
    error, offset = ctypes.c_int(), ctypes.c_size_t()
    code = lib.pcre2_compile_8(data, len(data), flags, error, offset, None)
    if not code:
        raise PcreError(f"PCRE refuses {pattern!r} (error {error.value} at {offset.value})")
    try:
        match = lib.pcre2_match_data_create_from_pattern_8(code, None)
        try:
            subject = text.encode()
            found = lib.pcre2_match_8(code, subject, len(subject), 0, 0, match, None)
        finally:
            lib.pcre2_match_data_free_8(match)
    finally:
        lib.pcre2_code_free_8(code)
    if found == NO_MATCH:
        return False
    if found < 0:
        raise PcreError(f"PCRE fails matching {pattern!r} on {text!r} (error {found})")
    return True
