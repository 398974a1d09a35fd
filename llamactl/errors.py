"""The one error base of llamactl: every error a user can cause carries its HTTP status and code.

Each layer subclasses ``LlamactlError`` and declares ``status`` and ``code`` as
class attributes; the server answers ``error.status`` with ``error.code``
and never matches error text. ``field`` names the input at fault when there
is one, so a client can point at it. Echoed input is cut to ``ECHO_LIMIT``
characters, so a 10 MB name is not sent back whole.
"""

from __future__ import annotations

import reprlib

ECHO_LIMIT = 80

_echo = reprlib.Repr()
_echo.maxstring = ECHO_LIMIT
_echo.maxother = ECHO_LIMIT


def echo(value: object) -> str:
    """``repr(value)``, shortened for error messages that quote user input."""
    return _echo.repr(value)


class LlamactlError(Exception):
    status: int = 500
    code: str = "internal_error"
    retry_after: int | None = None
    """Seconds after which a retry may succeed (sent as ``Retry-After``), for 429, 503 and 504."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class HttpError(LlamactlError):
    """An error whose status is decided where it is raised (a bad body, a route, an upstream failure)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, field)
        self.status = status
        self.code = code
        self.retry_after = retry_after
