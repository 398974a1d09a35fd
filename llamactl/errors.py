"""The one error base of llamactl: every error a user can cause carries its HTTP status and code.

Each layer subclasses ``LlamactlError`` and declares ``status`` and ``code`` as
class attributes; the server answers ``error.status`` with ``error.code``
and never matches error text. ``field`` names the input at fault when there
is one, so a client can point at it. Echoed input is cut to ``ECHO_LIMIT``
characters, so a 10 MB name is not sent back whole.
"""

from __future__ import annotations

import re
import reprlib

import msgspec

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


class FieldError(LlamactlError):
    """Input that breaks a rule in one field: a 400 whose message starts with the field's name."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}", field)


class HttpError(LlamactlError):
    """An error whose status is decided where it is raised (a bad body, a route, an upstream failure)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, field)
        self.status = status
        self.code = code
        self.retry_after = retry_after


_VALIDATION_PATH = re.compile(r"(?P<message>.*) - at `\$\.?(?P<path>[^`]*)`", re.DOTALL)


def validation_field(error: msgspec.ValidationError, prefix: str = "") -> tuple[str, str | None]:
    """msgspec's ``Expected `int`, got `str` - at `$.a.b[0]``` as the message ``a.b[0]: …`` and ``a.b[0]``.

    msgspec gives the location only in its text, so it is read from there, in this one place.
    """
    text = str(error)
    located = _VALIDATION_PATH.fullmatch(text)
    if located is None or not located["path"]:
        return text, prefix.rstrip(".") or None
    path = prefix + located["path"]
    return f"{path}: {located['message']}", path
