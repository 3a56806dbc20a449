"""Secrets in MongoDB URLs, masked in everything the toolkit prints, logs or records.

A URL carries secrets in two places:

- its user information, ``user:password@``: everything between the scheme
  and the last ``@`` before the host (a password may itself hold an ``@``);
- options in its query string such as ``authMechanismProperties``
  (``AWS_SESSION_TOKEN:...``) and ``tlsCertificateKeyFilePassword``.

Both are found by what a URL may hold, not by how a valid one is spelled:
the user information starts after whatever looks like a scheme, however
mistyped (``mongodb:/``, ``mongodb//``, ``mongodb:\\``, ``mongodb:``), or at
the start when there is none (``admin:pw@host/db``); an option's value may
follow ``=`` or a mistyped ``:``, and options may start with a mistyped
``&``. A URL with no ``@`` at all whose host has a "port" that is no
number (``mongodb://admin:pw/host``: the ``@`` typed as ``/``) has that
"port" masked.

Secrets are masked *by position*, in the URL itself and in every URL found
in a text: never by searching the text for the password, which would
garble ordinary words for a short password (and so reveal it). A secret at
least `MIN_FREE_SECRET` characters long is also masked where a driver's
message quotes it outside a URL: text that long does not occur by chance.

"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import unquote

from ..exceptions import ConfigError

#: What a masked secret is replaced with.
MASK = "***"

#: Query-string options whose value is a secret, lower case.
SECRET_OPTIONS = frozenset(
    (
        "authmechanismproperties",
        "tlscertificatekeyfilepassword",
        "sslpemkeypassword",
        "sslclientcertificatekeypassword",
        "proxypassword",
    )
)

#: Words that make any other option secret too.
SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "passphrase", "credential")

#: The shortest secret masked where it appears outside a URL.
MIN_FREE_SECRET = 8

#: Splits what follows the scheme into the text before the first option, and
#: then each separator (``?``, ``&``, ``;``) and option, in turn.
_OPTION_SPLIT = re.compile(r"([?&;])")

#: Splits the options as the driver does: at each ``&`` and ``;``.
_AMPERSAND_SPLIT = re.compile(r"([&;])")

#: A URL in a text: a scheme, ``://``, and everything up to a space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")

#: A word of a text, as far as a URL in it may run: up to a space or a quote.
_WORD = re.compile(r"[^\s'\"<>`]+")

#: Where the user information may start: after blanks or a quote, and after
#: anything shaped like a scheme, however mistyped: a word and ``:/``,
#: ``//`` or ``:\\`` (``mongodb:/``, ``mongodb//``, ``mongodb:\\``), or
#: MongoDB's scheme and a bare ``:`` (``mongodb:``). Another word and a bare
#: ``:`` is taken for a user name (``admin:pw@host``): the password follows.
_START = re.compile(
    r"""[\s'"]*(?:[A-Za-z][A-Za-z0-9+.\-]*(?::[/\\]+|[/\\]{2,})|mongo[A-Za-z0-9+.\-]*:)?""",
    re.IGNORECASE,
)

#: How a text may quote a URL: as given, stripped of blanks, inside a Python
#: repr, inside a JSON string.
_QUOTINGS: tuple[Callable[[str], str], ...] = (
    lambda url: url,
    str.strip,
    lambda url: repr(url)[1:-1],
    lambda url: json.dumps(url)[1:-1],
)

#: A port, as a host list gives it after a host's ``:``.
_PORT = re.compile(r"\d*")


def is_secret_option(name: str) -> bool:
    """Whether a URL option carries a secret."""
    lower = name.lower()
    return lower in SECRET_OPTIONS or any(word in lower for word in SECRET_WORDS)


def _spans(url: str) -> list[tuple[int, int]]:
    """Where a URL may hold secrets, found on the URL as given, merged.

    The user information runs from the end of the scheme (however mistyped,
    or the start) up to the last ``@`` (which a secret option's value may
    hold too); secret options' values may seem to hold a password part, and
    a password may seem to hold options. All of them count.

    """
    start = _START.match(url)
    begin = start.end() if start else 0
    at = url.rfind("@", begin)
    spans = [(begin, at)] if at >= 0 else _ports(url, begin)
    spans += _option_spans(url, begin)
    merged: list[tuple[int, int]] = []
    for first, stop in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        elif stop > first:
            merged.append((first, stop))
    return merged


def _ports(url: str, begin: int) -> list[tuple[int, int]]:
    """In a URL with no ``@``, each "port" that is no number, before the options:
    a password whose ``@`` was typed as ``/`` or left out (``admin:pw/host``).
    No host, port or database name of a valid URL holds such a thing."""
    spans: list[tuple[int, int]] = []
    offset = begin
    for part in re.split(r"([/\\,])", url[begin:].partition("?")[0]):
        bracket = part.find("]") + 1 if part.startswith("[") else 0  # an IPv6 address
        colon = part.find(":", bracket)
        if colon >= 0 and not _PORT.fullmatch(part[colon + 1 :]):
            spans.append((offset + colon + 1, offset + len(part)))
        offset += len(part)
    return spans


def _option_spans(url: str, begin: int) -> list[tuple[int, int]]:
    """The values of secret options: after ``=``, or a mistyped ``:``.

    The driver takes the options from the first ``?`` on, one up to each
    ``&`` or ``;``: a later ``?`` is part of a value. A mistyped URL may use
    ``?`` between options too, or start them with ``&``, so both readings
    count: each ``?`` a separator, or none after the first. A piece that is no
    option (no ``=`` nor ``:``) right after a secret value is taken for the
    rest of it (a password holding a raw ``&``).

    """
    text = url[begin:]
    spans = _values(_OPTION_SPLIT.split(text), begin)
    first = _OPTION_SPLIT.search(text)
    if first is not None:
        start = first.start()
        pieces = [text[:start], text[start], *_AMPERSAND_SPLIT.split(text[start + 1 :])]
        spans += _values(pieces, begin)
    return spans


def _values(pieces: list[str], offset: int) -> list[tuple[int, int]]:
    """Where secret options' values are, in a URL split into pieces at separators
    (the first piece is what comes before the options), from `offset` on."""
    spans: list[tuple[int, int]] = []
    secret = False
    for index, part in enumerate(pieces):
        if index and part not in "?&;":
            separators = [i for i in (part.find("="), part.find(":")) if i >= 0]
            if not separators:
                if secret:  # no option: the rest of the value before it
                    spans.append((offset, offset + len(part)))
            else:
                # "name=value" or "name:value", whichever comes first
                # (``password:a=b``); a name holding the other counts too.
                secret = False
                for where in separators:
                    if is_secret_option(unquote(part[:where])):
                        spans.append((offset + where + 1, offset + len(part)))
                        secret = True
        offset += len(part)
    return spans


def mask_url(url: str) -> str:
    """The URL with its user information and secret options replaced by ``***``.

    Works on any text shaped like a URL, valid or not:
    ``mongodb://admin:Sup3r@Secret99@host/db`` gives ``mongodb://***@host/db``.

    """
    out, end = [], 0
    for begin, stop in _spans(url):
        out.append(url[end:begin] + MASK)
        end = stop
    return "".join(out) + url[end:]


def secrets(url: str | None) -> list[str]:
    """The secrets of a URL, as written and percent-decoded: what `mask_url` masks,
    and the password and option values within it."""
    if not url:
        return []
    found: list[str] = []
    for begin, stop in _spans(url):
        text = url[begin:stop]
        password = text.partition(":")[2]
        found += [text, password]
        # A password may hold "@" or what looks like options, and an option
        # value may hold "@", which then ends the span: where the password
        # ends cannot be told, so each "@" may end it, and options may begin
        # after it. Every such candidate, whole and cut where options begin.
        pieces = password.split("@")
        ends = ["@".join(pieces[:k]) for k in range(1, len(pieces) + 1)]
        found += ends + [_OPTION_SPLIT.split(end)[0] for end in ends]
        for part in _OPTION_SPLIT.split(text):
            value = part.partition("=")[2]
            found.append(value)
            found.extend(pair.partition(":")[2] for pair in value.split(","))
    out: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret)):
            if form and form not in out:
                out.append(form)
    return out


def _mask_word(word: str) -> str:
    """A word of a text, masked where it is shaped like a URL's user information:
    an ``@`` with a ``:``, ``/`` or ``\\`` before it; or masked whole where it
    starts like a URL, however mistyped (``mongodb:/host?password=...``: a
    ``://`` later in it, inside an option's value, is no URL of its own)."""
    start = _START.match(word)
    if start is not None and start.end() > 0:
        return mask_url(word)
    at = word.rfind("@")
    if at < 0 or not re.search(r"[:/\\]", word[:at]):
        return word
    return mask_url(word)


def mask(text: str, url: str | None = None) -> str:
    """Text with every URL in it masked (see `mask_url`), and the secrets of `url`.

    The configured `url` is masked wherever it appears whole (as given, or
    quoted as a repr or JSON quotes it), even where it holds characters that
    end a URL in text (a space in a password). Every word of the text
    shaped like a URL, or like user information (``admin:pw@host``, however
    its scheme is mistyped), is masked. The secrets of `url` of
    `MIN_FREE_SECRET` characters or more are masked wherever they appear;
    shorter ones only inside URLs.

    """
    if not text:
        return text
    masked_forms: list[str] = []
    if url:
        masked = mask_url(url)
        for quote in _QUOTINGS:
            form = quote(url)
            masked_forms.append(quote(masked))
            if form and form in text:
                text = text.replace(form, quote(masked))
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    text = _WORD.sub(lambda m: _mask_word(m.group(0)), text)
    free = [s for s in secrets(url) if len(s) >= MIN_FREE_SECRET and s != MASK]
    if not free:
        return text
    # The URL as masked is left as it is: a secret that is also the name of
    # an option or a host would otherwise show there, by what it masks.
    kept = "|".join(re.escape(f) for f in sorted(set(masked_forms), key=len, reverse=True) if f)
    pieces = re.split(f"({kept})", text) if kept else [text]
    for index in range(0, len(pieces), 2):
        for secret in sorted(free, key=len, reverse=True):
            pieces[index] = pieces[index].replace(secret, MASK)
    return "".join(pieces)


def invalid_url(url: str, exc: BaseException) -> ConfigError:
    """The error for a URL the driver refuses, with every secret masked.

    The driver's message may quote an option's value outside any URL. A
    secret too short to be masked wherever it appears (see
    `atomdb_migrate.masking`) that the message still quotes as a word makes
    the message be left out.

    """
    detail = mask(str(exc), url)
    for secret in secrets(url):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", detail):
            detail = "the driver's message quotes a secret of the URL, so it is not shown"
            break
    return ConfigError(f"invalid MongoDB URL {mask_url(url)!r}: {detail}")
