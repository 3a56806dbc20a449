"""Secrets in MongoDB URLs, masked in everything the toolkit prints, logs or records.

A URL carries secrets in two places:

- its user information, ``user:password@``: everything between ``://`` and
  the last ``@`` before the host (a password may itself hold an ``@``);
- options in its query string such as ``authMechanismProperties``
  (``AWS_SESSION_TOKEN:...``) and ``tlsCertificateKeyFilePassword``.

Both are masked *by position*, in the URL itself and in every URL found in
a text: never by searching the text for the password, which would garble
ordinary words for a short password (and so reveal it). A secret at least
`MIN_FREE_SECRET` characters long is also masked where a driver's message
quotes it outside a URL: text that long does not occur by chance.

"""

from __future__ import annotations

import re
from urllib.parse import unquote

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

#: Splits what follows ``://`` into the text before the first option, and then
#: each separator (``?``, ``&``, ``;``) and option, in turn.
_OPTION_SPLIT = re.compile(r"([?&;])")

#: A URL in a text: a scheme, ``://``, and everything up to a space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")


def is_secret_option(name: str) -> bool:
    """Whether a URL option carries a secret."""
    lower = name.lower()
    return lower in SECRET_OPTIONS or any(word in lower for word in SECRET_WORDS)


def _spans(url: str) -> list[tuple[int, int]]:
    """Where a URL may hold secrets, found on the URL as given, merged.

    The user information runs up to the last ``@`` (which a secret option's
    value may hold too); secret options' values may seem to hold a password
    part, and a password may seem to hold options. All of them count.

    """
    scheme = url.find("://")
    if scheme < 0:
        return []
    start = scheme + 3
    spans: list[tuple[int, int]] = []
    at = url.rfind("@", start)
    if at >= 0:
        spans.append((start, at))
    offset = start
    for part in _OPTION_SPLIT.split(url[start:]):
        name, equals, _ = part.partition("=")
        if equals and part not in "?&;" and is_secret_option(unquote(name)):
            spans.append((offset + len(name) + 1, offset + len(part)))
        offset += len(part)
    merged: list[tuple[int, int]] = []
    for begin, stop in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        elif stop > begin:
            merged.append((begin, stop))
    return merged


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


def mask(text: str, url: str | None = None) -> str:
    """Text with every URL in it masked (see `mask_url`), and the secrets of `url`.

    The configured `url` is masked wherever it appears whole, even where it
    holds characters that end a URL in text (a space in a password). Its
    secrets of `MIN_FREE_SECRET` characters or more are masked wherever they
    appear; shorter ones only inside URLs.

    """
    if not text:
        return text
    if url and url in text:
        text = text.replace(url, mask_url(url))
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    for secret in sorted(secrets(url), key=len, reverse=True):
        if len(secret) >= MIN_FREE_SECRET and secret != MASK:
            text = text.replace(secret, MASK)
    return text
