"""What the callers of the commands need to tell of an error they raised.

`COMMAND_ERRORS` are the errors a command ends with: the toolkit's, and
the server's it did not expect (any other is a bug, and keeps its
traceback). `error_line` says one in one line; `is_transient` tells a server error that
may pass (an election, a dropped connection) from one that will not; `mask`
takes the URL's password out of any text that may quote the URL (a log
line, a problem found by `check`).

"""

from __future__ import annotations

from pymongo.errors import PyMongoError

from ..core.masking import mask
from ..driver.retry import fault_line, is_transient
from ..exceptions import MigrateError, shorten

__all__ = ["COMMAND_ERRORS", "error_line", "is_transient", "mask"]

#: The errors a command ends with: the toolkit's, and the server's.
COMMAND_ERRORS: tuple[type[Exception], ...] = (MigrateError, PyMongoError)

#: The longest line `error_line` gives.
LONGEST = 2000


def error_line(error: BaseException, url: str | None) -> str:
    """One line for what a command raised, the password of `url` masked.

    A toolkit error says its own message; any other error (one of the
    server the commands did not expect) what the server said.

    """
    if isinstance(error, MigrateError):
        return shorten(mask(str(error), url), LONGEST)
    return shorten(mask(f"the server failed: {fault_line(error)}", url), LONGEST)
