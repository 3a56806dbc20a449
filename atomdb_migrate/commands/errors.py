"""What the callers of the commands need to tell of an error they raised.

`error_line` says it in one line; `is_transient` tells a server error that
may pass (an election, a dropped connection) from one that will not; `mask`
takes the URL's password out of any text that may quote the URL (a log
line, a problem found by `check`).

"""

from __future__ import annotations

from ..core.masking import mask
from ..driver.retry import describe, is_transient
from ..exceptions import MigrateError, shorten

__all__ = ["error_line", "is_transient", "mask"]

#: The longest line `error_line` gives.
LONGEST = 2000


def error_line(error: BaseException, url: str | None) -> str:
    """One line for what a command raised, the password of `url` masked.

    A toolkit error says its own message; any other error (one of the
    server the commands did not expect) what the server said.

    """
    if isinstance(error, MigrateError):
        return shorten(mask(str(error), url), LONGEST)
    return shorten(mask(f"the server failed: {describe(error)}", url), LONGEST)
