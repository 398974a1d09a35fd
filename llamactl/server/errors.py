"""One place that maps errors to HTTP statuses and bodies.

Management routes answer ``{"error": code, "details": message}``; the
OpenAI-compatible routes answer OpenAI's ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import msgspec

from llamactl.backends import BackendInputError
from llamactl.instance.errors import (
    InstanceConflict,
    InstanceError,
    InstanceNotFound,
    LimitReached,
    NotStartable,
    StartFailed,
    StartTimedOut,
)
from llamactl.server.api_keys import AuthError


class HttpError(Exception):
    """An error with its status already decided (bad body, auth, unknown route, upstream failure)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str], ...] = (
    (BackendInputError, 400, "invalid_request"),
    (AuthError, 401, "invalid_api_key"),
    (InstanceNotFound, 404, "not_found"),
    (InstanceConflict, 409, "conflict"),
    (LimitReached, 503, "capacity_full"),
    (NotStartable, 503, "instance_unavailable"),
    (StartFailed, 503, "instance_start_failed"),
    (StartTimedOut, 504, "instance_start_timeout"),
)

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
}


def classify(error: Exception) -> HttpError:
    """The status, code and message for an error raised by the layers below."""
    if isinstance(error, HttpError):
        return error
    for error_type, status, code in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            message = (
                error.message
                if isinstance(error, (BackendInputError, InstanceError, AuthError))
                else str(error)
            )
            return HttpError(status, code, message)
    raise error


class ManagementError(msgspec.Struct):
    error: str
    details: str


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str


class OpenAIError(msgspec.Struct):
    error: OpenAIErrorDetail


RETRY_AFTER_SECONDS = "5"


def retry_after(error: HttpError) -> dict[str, str]:
    """Unavailable and timed out are worth a retry: say when (R19)."""
    return {"retry-after": RETRY_AFTER_SECONDS} if error.status in (503, 504) else {}


def management_body(error: HttpError) -> bytes:
    return msgspec.json.encode(ManagementError(error=error.code, details=error.message))


def openai_body(error: HttpError) -> bytes:
    kind = OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    return msgspec.json.encode(
        OpenAIError(OpenAIErrorDetail(message=error.message, type=kind, code=error.code))
    )
