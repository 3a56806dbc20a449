"""Secrets in URLs: masked by position, in every form a driver accepts.

Hypothesis generates URLs with user information (passwords holding ``@``,
``:``, ``/``, percent-encoding, one character, repeated), query-string
options that carry secrets, and messages around them; no secret may come
out, and no ordinary word may be garbled.

"""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from atomdb_migrate import MigrationRegistry
from atomdb_migrate.cli.main import main
from atomdb_migrate.commands.config import invalid_url
from atomdb_migrate.core.masking import MASK, MIN_FREE_SECRET, mask, mask_url, secrets

SECRET_CHARS = st.characters(
    codec="ascii", exclude_characters="\x00\n\r\t ", categories=("L", "N", "P", "S")
)
secret_text = st.text(SECRET_CHARS, min_size=1, max_size=24)
user = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=10)
host = st.sampled_from(["db.example.com", "127.0.0.1:27017", "h1:1,h2:2", "[::1]:27017"])
words = st.sampled_from(
    ["cannot reach", "failed", "connection refused", "authentication failed", "e", "reach"]
)


@st.composite
def urls(draw: st.DrawFn, at_in_options: bool = False) -> tuple[str, str, list[str]]:
    """A URL, the same URL masked as it must be, and the secrets it holds.

    An option's value holding an "@" makes the end of the user information
    ambiguous: everything up to it is masked then, host included, so only
    with `at_in_options` False is the masked URL's exact form known.

    """
    scheme = draw(st.sampled_from(["mongodb://", "mongodb+srv://"]))
    hidden: list[str] = []
    userinfo = masked_userinfo = ""
    if draw(st.booleans()):
        password = draw(secret_text)
        if draw(st.booleans()):
            password = quote(password, safe="")
        userinfo, masked_userinfo = f"{draw(user)}:{password}@", f"{MASK}@"
        hidden.append(password)
    options, masked_options = [], []
    banned = set("&;?=,:") | (set() if at_in_options else {"@"})
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["token", "tls", "plain"]))
        value = draw(secret_text.filter(lambda t: not set(t) & banned))
        if kind == "token":
            options.append(f"authMechanismProperties=AWS_SESSION_TOKEN:{value}")
            masked_options.append(f"authMechanismProperties={MASK}")
            hidden.append(value)
        elif kind == "tls":
            options.append(f"tlsCertificateKeyFilePassword={value}")
            masked_options.append(f"tlsCertificateKeyFilePassword={MASK}")
            hidden.append(value)
        else:
            options.append("retryWrites=true")
            masked_options.append("retryWrites=true")
    where = draw(host)
    query = ("?" + "&".join(options)) if options else ""
    masked_query = ("?" + "&".join(masked_options)) if options else ""
    return (
        f"{scheme}{userinfo}{where}/app{query}",
        f"{scheme}{masked_userinfo}{where}/app{masked_query}",
        hidden,
    )


@settings(max_examples=500, deadline=None)
@given(urls(), words, words)
def test_a_url_in_a_message_is_masked_and_the_words_around_it_kept(
    case: tuple[str, str, list[str]], before: str, after: str
) -> None:
    url, expected, _ = case
    assert mask_url(url) == expected
    assert mask(f"{before} {url} {after}", url) == f"{before} {expected} {after}"
    assert mask(f"{before} {expected} {after}", url) == f"{before} {expected} {after}"


@settings(max_examples=300, deadline=None)
@given(
    urls(at_in_options=True), st.sampled_from(["{s}", "bad value {s} for option", "quoted '{s}'"])
)
# Found by this test in CI: an "@" in an option value ends the span, and the
# password, cut where options begin ("?"), was left 7 characters long.
@example(
    (
        "mongodb://0:0000000?@db.example.com/app?authMechanismProperties=AWS_SESSION_TOKEN:@",
        "mongodb://***@db.example.com/app?authMechanismProperties=***",
        ["0000000?", "@"],
    ),
    "{s}",
)
@example(
    (
        "mongodb://0:0000000@@db.example.com/app?authMechanismProperties=AWS_SESSION_TOKEN:@",
        "mongodb://***@db.example.com/app?authMechanismProperties=***",
        ["0000000@", "@"],
    ),
    "{s}",
)
def test_a_long_secret_quoted_outside_the_url_is_masked(
    case: tuple[str, str, list[str]], template: str
) -> None:
    url, _, hidden = case
    for secret in hidden:
        text = template.format(s=secret)
        masked = mask(text, url)
        if len(secret) >= MIN_FREE_SECRET:
            assert secret not in masked.replace(MASK, "\0")


@settings(max_examples=300, deadline=None)
@given(urls(at_in_options=True))
def test_no_secret_survives_in_its_place(case: tuple[str, str, list[str]]) -> None:
    url, _, hidden = case
    masked = mask_url(url)
    start = url.index("://") + 3
    for secret in hidden:
        # Where the secret stood, the masked URL holds the mask.
        assert url[start:].count(secret) > masked[start:].count(secret) or secret in MASK


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://admin:Hunter2Pass;secret=x@127.0.0.1:1/app",
        "mongodb://admin:Hunter2Pass?pwd=1@127.0.0.1:1/app",
        "mongodb://admin:Hunter2Pass&token=1@127.0.0.1:1/app",
    ],
)
def test_a_password_that_looks_like_options(url: str) -> None:
    assert "Hunter2Pass" not in mask_url(url)
    assert "Hunter2Pass" not in mask(f"driver says: bad password Hunter2Pass for {url}", url)


def test_a_password_holding_an_at_sign() -> None:
    url = "mongodb://admin:Sup3r@Secret99@host/db"
    assert mask_url(url) == "mongodb://***@host/db"
    assert mask(f"cannot reach {url}", url) == "cannot reach mongodb://***@host/db"


def test_a_short_password_garbles_nothing() -> None:
    url = "mongodb://u:e@host/db"
    text = f"cannot reach {url}: failed"
    assert mask(text, url) == "cannot reach mongodb://***@host/db: failed"


def test_query_string_secrets() -> None:
    url = (
        "mongodb://host/db?authMechanism=MONGODB-AWS&authMechanismProperties="
        "AWS_SESSION_TOKEN:FwoGZXIvYXdzEJr//tok&tlsCertificateKeyFilePassword=hunter2hunter2"
        "&appName=x"
    )
    masked = mask_url(url)
    assert "FwoGZXIvYXdzEJr" not in masked and "hunter2" not in masked
    assert "authMechanism=MONGODB-AWS" in masked and "appName=x" in masked
    assert masked.count(MASK) == 2


def test_percent_encoded_and_decoded_forms_are_both_secrets() -> None:
    url = "mongodb://u:p%40ss%2Fword@host/db"
    assert {"p%40ss%2Fword", "p@ss/word"} <= set(secrets(url))
    assert "p@ss/word" not in mask("driver said: bad password p@ss/word", url)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://u:pw@host:1:2/db",
        "mongodb://u:p/w@host/db",
        "mongodb://u:p@w@host/db",
        "mongodb://u:e@h/db?authMechanism=GSSAPI&authMechanismProperties=CANONICALIZE_HOST_NAME:e",
        "mongodb://u:e@h/db?authMechanism=GSSAPI&authMechanismProperties=SERVICE_NAME:x,"
        "CANONICALIZE_HOST_NAME:sekrit-token-value",
    ],
)
def test_invalid_urls_quote_no_secret(url: str) -> None:
    from pymongo import MongoClient

    with pytest.raises(Exception) as info:
        MongoClient(url, connect=False)
    message = str(invalid_url(url, info.value))
    for secret in secrets(url):
        assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", message), (
            secret,
            message,
        )


# ----------------------------------------------------------------------
# A URL whose "://" is mistyped (issue 22, item 6)
# ----------------------------------------------------------------------
MISTYPED = [
    "mongodb:/admin:{s}@db.example:27017/p1",
    "mongodb//admin:{s}@db.example:27017/p1",
    "admin:{s}@db.example:27017/p1",
    "mongodb:admin:{s}@db.example:27017/p1",
    "mongodb:\\\\admin:{s}@db.example:27017/p1",
    "mongodb:///admin:{s}@db.example:27017/p1",
    "mongodb+srv:/admin:{s}@db.example/p1",
    " mongodb://admin:{s}@db.example:27017/p1",
    "'mongodb://admin:{s}@db.example:27017/p1'",
    "{s}@db.example:27017/p1",
    "mongodb:/{s}@db.example/p1",
    "mongodb://admin:{s}/db.example:27017/p1",
    "mongodb://admin:{s}db.example:27017/p1",
    "mongodb:/db.example/p1?authMechanismProperties=AWS_SESSION_TOKEN:{s}",
    "mongodb://db.example/p1&tlsCertificateKeyFilePassword={s}",
    "mongodb://db.example/p1?tlsCertificateKeyFilePassword:{s}",
]


@pytest.mark.parametrize("template", MISTYPED)
@pytest.mark.parametrize("secret", ["LongS3cretPassw0rd", "pw", "e"])
def test_a_mistyped_url_is_masked_by_what_it_may_hold(template: str, secret: str) -> None:
    url = template.format(s=secret)
    masked = mask_url(url)
    # Whatever the secret, the masked URL is the same: nothing of it is shown.
    assert masked == mask_url(template.format(s="x" * len(secret))) != url, masked
    assert masked == mask_url(template.format(s="Other-Secret-99")), masked
    assert any(secret in found for found in secrets(url)), secrets(url)
    other = template.format(s="Other-Secret-99")
    message = "invalid MongoDB URL {!r}: bad; driver said {}"
    assert mask(message.format(url, url), url) == mask(message.format(other, other), other)
    refused = ValueError("Invalid URI scheme")
    assert str(invalid_url(url, refused)) == str(invalid_url(other, refused))


# ----------------------------------------------------------------------
# The class: mistyped URLs through every entry point, --json included
# ----------------------------------------------------------------------
#: Examples of the property test through the command; raise it with the
#: environment variable MASKING_EXAMPLES.
MASKING_EXAMPLES = int(os.environ.get("MASKING_EXAMPLES", "60"))

#: How a user may spell the start of the URL: right, or mistyped.
SCHEMES = [
    "mongodb://",
    "mongodb:/",
    "mongodb//",
    "mongodb:",
    "mongodb:\\",
    "mongodb:\\\\",
    "mongodb:///",
    "mongodb+srv:/",
    "mongodb+srv//",
    "MONGODB:/",
    "mongdb://",
    "mongodb/",
    "",
]

#: Where the secret ({s}) goes, and what surrounds it. "{h}" is the host.
PLACES = [
    "admin:{s}@{h}/p1",
    "{s}@{h}/p1",
    "admin:{s}@@{h}/p1",
    "admin@{s}@{h}/p1",
    "admin:p@{s}@{h}/p1",
    "admin:{s}/{h}/p1",
    "admin:{s}\\{h}/p1",
    "{h}/p1?authMechanismProperties=AWS_SESSION_TOKEN:{s}",
    "{h}/p1?authSource=admin&tlsCertificateKeyFilePassword={s}",
    "{h}/p1&password={s}",
    "{h}/p1?proxyPassword:{s}",
    "admin:{s}@{h}/p1?authSource=admin&token={s}",
]

#: Places where the secret stands with no "@" after it: there, a secret made
#: of digits alone is a port, as far as anyone can tell.
NO_AT = {"admin:{s}/{h}/p1", "admin:{s}\\{h}/p1"}

#: The characters of a secret, in classes: letters and digits, which the second
#: secret changes, and punctuation, which it keeps (the driver reads a "+" or
#: a "%" otherwise than a letter, and may refuse the URL for another reason).
SECRET_CLASSES = [string.ascii_lowercase, string.ascii_uppercase, string.digits]
PUNCTUATION = "-_.~!$*+%"

COMMANDS = [["status"], ["status", "--json"], ["upgrade", "--dry-run"], ["check", "--pending"]]


def _other(secret: str) -> str:
    """A secret of the same shape as `secret`, with every letter and digit changed."""
    out = []
    for c in secret:
        chars = next((k for k in SECRET_CLASSES if c in k), c)
        out.append(chars[(chars.index(c) + 1) % len(chars)])
    return "".join(out)


@st.composite
def mistyped_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A URL template holding "{s}" where the secret goes, and the secret."""
    place = draw(st.sampled_from(PLACES))
    secret = draw(
        st.text(st.sampled_from("".join(SECRET_CLASSES) + PUNCTUATION), min_size=1, max_size=20)
    )
    if not any(c.isalnum() for c in secret):
        secret += "a"
    if place in NO_AT and secret.isdigit():
        secret += "x"
    wrap = draw(st.sampled_from(["{}", " {}", "{} ", "'{}'", '"{}"']))
    template = wrap.format(draw(st.sampled_from(SCHEMES)) + place.replace("{h}", "127.0.0.1:1"))
    return template, secret


def _run(folder: Path, url: str, where: str, args: list[str]) -> tuple[int, str, str]:
    env = {"MONGO_URL": "", "ATOMDB_MIGRATE_URL": ""}
    table = "[tool.atomdb-migrate]\ntimeout = 0.2\n"
    if where == "--url":
        args = ["--url", url, *args]
    elif where == "pyproject":
        table += f"url = {json.dumps(url)}\n"
    else:
        env[where] = url
    (folder / "pyproject.toml").write_text(table)
    saved, MigrationRegistry._instance = MigrationRegistry._instance, MigrationRegistry()
    try:
        with contextlib.chdir(folder):
            result = CliRunner().invoke(main, args, env=env)
    finally:
        MigrationRegistry._instance = saved
    return result.exit_code, result.stdout, result.stderr


#: What `config.invalid_url` says instead of a driver's message that holds a
#: secret of the URL as a word: a short secret ("in") may be a word of the
#: message by chance, so the message says less for it than for another.
WITHHELD = "the driver's message quotes a secret of the URL, so it is not shown"


def _same_but_withheld(first: tuple[int, str, str], second: tuple[int, str, str]) -> bool:
    """Whether two runs printed the same, but for a driver's message withheld in one."""
    if first == second:
        return True
    (code, out, err), (code2, out2, err2) = first, second
    if code != code2 or out != out2:
        return False
    if WITHHELD in err2:
        err, err2 = err2, err
    return WITHHELD in err and err2.startswith(err[: err.index(WITHHELD)])


@settings(max_examples=MASKING_EXAMPLES, deadline=None)
@given(
    mistyped_urls(),
    st.sampled_from(["--url", "ATOMDB_MIGRATE_URL", "MONGO_URL", "pyproject"]),
    st.sampled_from(COMMANDS),
)
@example(("mongodb:/admin:{s}@db.example:27017/p1", "LongS3cretPassw0rd"), "--url", ["status"])
@example(("mongodb//admin:{s}@db.example:27017/p1", "pw"), "MONGO_URL", ["status", "--json"])
@example(("admin:{s}@db.example/db", "e"), "ATOMDB_MIGRATE_URL", ["status", "--json"])
@example(("admin:{s}@db.example/db", "LongS3cretPassw0rd"), "pyproject", ["status"])
@example(("mongodb:///admin:{s}@127.0.0.1:1/p1", "in"), "--url", ["status"])
@example(("mongodb:/admin:{s}@127.0.0.1:1/p1", "Inva"), "--url", ["status"])
@example(("mongodb:/admin:{s}@127.0.0.1:1/p1", "inva"), "--url", ["status"])
def test_no_mistyped_url_shows_its_secret(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[str, str],
    where: str,
    args: list[str],
) -> None:
    """Whatever the secret, the command prints the same (so prints nothing of it),
    on stdout and stderr, log lines included, as plain text or as JSON."""
    template, secret = case
    folder = tmp_path_factory.mktemp("masking", numbered=True)
    first = _run(folder, template.format(s=secret), where, args)
    second = _run(folder, template.format(s=_other(secret)), where, args)
    assert _same_but_withheld(first, second), (first, second)
    code, out, err = first
    assert code != 0
    if len(secret) >= 4:
        # A secret may be part of the tool's own words ("inva" of "invalid"):
        # then the run with another secret prints it as well.
        assert secret not in out + err or secret in second[1] + second[2]
    if "--json" in args:
        assert out == "" or isinstance(json.loads(out), list)
        for line in err.splitlines():
            assert set(json.loads(line)) in ({"error", "exit"}, {"log", "message"}), line
        assert json.loads(err.splitlines()[-1])["exit"] == code


@settings(max_examples=MASKING_EXAMPLES * 5, deadline=None)
@given(mistyped_urls(), st.sampled_from(["{}", "{!r}", "driver said: {} (url={!r})", '"{}"']))
@example(("mongodb://127.0.0.1:1/p1&password={s}", "password"), "{}")
def test_no_log_line_shows_a_mistyped_urls_secret(case: tuple[str, str], shape: str) -> None:
    """The command's log filter masks a log line quoting the URL, plainly or as a repr."""
    import logging

    from atomdb_migrate.cli.main import State
    from atomdb_migrate.cli.output import Masking as _Masking

    template, secret = case

    def logged(url: str) -> str:
        state = State(url=url, database=None, models=(), migrations=None, timeout=None)
        line = shape.format(url, url)
        record = logging.LogRecord("atomdb_migrate", logging.WARNING, __file__, 1, line, (), None)
        assert _Masking(state).filter(record)
        return record.getMessage()

    assert logged(template.format(s=secret)) == logged(template.format(s=_other(secret)))


# ----------------------------------------------------------------------
# A secret option's value holding URL punctuation
# ----------------------------------------------------------------------
#: Examples of the property test below; raise it with OPTION_VALUE_EXAMPLES.
OPTION_VALUE_EXAMPLES = int(os.environ.get("OPTION_VALUE_EXAMPLES", "300"))

#: How a secret option may be written: as it should be, or with ":" for "=".
SECRET_OPTIONS = [
    "authMechanismProperties=AWS_SESSION_TOKEN:{s}",
    "tlsCertificateKeyFilePassword={s}",
    "password={s}",
    "password:{s}",
    "proxyPassword:{s}",
]


def _reads_as_own_options(value: str) -> bool:
    """Whether a value's text after an "&" or ";" reads as an option of its own
    (``name=value``, or ``name:value`` mistyped): the driver takes it so, and so
    does the masking, which cannot tell it from one."""
    return any(set(part) & set("=:") for part in re.split(r"[&;]", value)[1:])


@st.composite
def option_values(draw: st.DrawFn) -> tuple[str, str]:
    """A URL template with a secret option ("{s}" where its value goes), and the value:
    letters and digits around the punctuation a URL gives meaning to."""
    value = draw(
        st.text(
            st.sampled_from(string.ascii_letters + string.digits + "?&;=:@/,#%"),
            min_size=1,
            max_size=16,
        ).filter(lambda v: not _reads_as_own_options(v))
    )
    option = draw(st.sampled_from(SECRET_OPTIONS))
    after = draw(st.sampled_from(["", "&authSource=admin", ";appName=x"]))
    start = draw(st.sampled_from(["mongodb://db.example:27017/p1?", "mongodb:/db.example/p1&"]))
    return start + option + after, value


@settings(max_examples=OPTION_VALUE_EXAMPLES, deadline=None)
@given(option_values())
@example(("mongodb://db.example/p1?authMechanismProperties=AWS_SESSION_TOKEN:{s}", "Zq9?wx7k"))
@example(("mongodb://db.example/p1?tlsCertificateKeyFilePassword={s}&authSource=admin", "Zq9?wx7k"))
@example(("mongodb://db.example/p1?password:{s}", "Zq9=wx7k"))
@example(("mongodb://db.example/p1?password={s}", "Zq9&wx7k"))
@example(("mongodb:/db.example/p1&authMechanismProperties=AWS_SESSION_TOKEN:{s}", "//0"))
def test_a_secret_options_value_is_masked_whatever_punctuation_it_holds(
    case: tuple[str, str],
) -> None:
    """The driver takes everything after the first "?" up to an "&" or ";" as one
    option, a "?" or "=" inside its value included; the masking shows the same
    whatever the value's letters and digits are."""
    template, value = case
    url, other = template.format(s=value), template.format(s=_other(value))
    assert mask_url(url) == mask_url(other), (url, mask_url(url))
    shape = "cannot reach {} within 1s"
    assert mask(shape.format(url), url) == mask(shape.format(other), other)
    if "://" in url:  # a URL a text is known to hold without the configured one
        assert mask(shape.format(url)) == mask(shape.format(other))
