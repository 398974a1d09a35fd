"""One place that maps errors to HTTP responses: every error below is a ``LlamactlError``.

Management routes answer ``{"error": code, "details": message}``; the
OpenAI-compatible routes answer OpenAI's ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import msgspec

from llamactl.errors import HttpError, LlamactlError

__all__ = ["HttpError", "management_body", "openai_body", "retry_after"]


class ManagementError(msgspec.Struct, omit_defaults=True):
    error: str
    details: str
    field: str | None = None


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIError(msgspec.Struct):
    error: OpenAIErrorDetail


OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def retry_after(error: LlamactlError) -> dict[str, str]:
    """Worth a retry (a full queue, unavailable, timed out): say when (R19)."""
    return {"retry-after": str(error.retry_after)} if error.retry_after is not None else {}


def management_body(error: LlamactlError) -> bytes:
    return msgspec.json.encode(ManagementError(error=error.code, details=error.message, field=error.field))


def openai_body(error: LlamactlError) -> bytes:
    kind = OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    return msgspec.json.encode(
        OpenAIError(OpenAIErrorDetail(message=error.message, type=kind, code=error.code, param=error.field))
    )
