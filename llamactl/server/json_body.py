"""JSON bodies: the content type, the nesting limit, errors that name the field; JSON answers.

msgspec has no depth option. It raises RecursionError, cleanly and at once,
somewhere near Python's recursion limit; llamactl's own limit is lower and
exact, so that what a backend receives is bounded whatever parser it uses.
Counting brackets is skipped when there are too few to reach the limit,
which is every small request, and otherwise done on the body's bracket
skeleton with bytes methods, in C, before a small loop over what is left.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from llamactl.errors import HttpError, LlamactlError, echo, validation_field
from llamactl.server.asgi import ClientGone, read_body

MAX_JSON_DEPTH = 128
"""Levels of nested arrays and objects a body may have (serde_json's default limit)."""
JSON_MEDIA_TYPE = b"application/json"
MANAGEMENT_BODY_LIMIT = 1024 * 1024
"""Bytes a management request's JSON body may have."""

T = TypeVar("T")

_SKELETON_MAP = bytes.maketrans(b"[{]}", b"(())")
_NOT_SKELETON = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_PEELED_LEVELS = 8
"""Innermost levels removed with bytes.replace before the loop counts the rest."""


def require_json(content_type: bytes | None) -> None:
    """415 unless the body is declared ``application/json`` (parameters such as charset allowed).

    A web page can send a ``text/plain`` body cross-origin without asking first;
    it cannot send ``application/json`` that way.
    """
    if content_type == JSON_MEDIA_TYPE:
        return
    media_type = (content_type or b"").partition(b";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = echo(content_type.decode("latin-1")) if content_type else "no Content-Type"
        raise HttpError(
            415, "unsupported_media_type", f"the body must be sent as application/json; got {shown}"
        )


def decode_json(body: bytes, body_type: type[T], strict: bool = True) -> T:
    """Decode a request body; every failure is a 400 that says what is wrong, and where."""
    try:
        value = msgspec.json.decode(body, type=body_type, strict=strict)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.ValidationError as error:
        cause = error.__cause__
        if isinstance(cause, LlamactlError):  # raised by a struct's own check, which names its field
            raise HttpError(400, cause.code, cause.message, field=cause.field) from None
        message, field = validation_field(error)
        raise HttpError(400, "invalid_request", message, field=field) from None
    except msgspec.DecodeError as error:
        raise HttpError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
    if nested_deeper_than(body, MAX_JSON_DEPTH):
        raise _too_deep()
    return value


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether valid JSON ``body`` nests arrays and objects more than ``limit`` levels deep."""
    if len(body) <= 2 * limit or body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b'\\"' in body:
        # Without escaped backslashes and escaped quotes, every quote left opens or closes a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Brackets as ( and ), quotes kept; then strings without brackets, and the quotes that
    # close one string right where the next opens, go: neither has a bracket outside a string.
    skeleton = body.translate(_SKELETON_MAP, _NOT_SKELETON).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    # Each replace removes exactly the innermost level: pairs with nothing inside.
    peeled = 0
    while skeleton and peeled < _PEELED_LEVELS:
        skeleton = skeleton.replace(b"()", b"")
        peeled += 1
    depth = peeled
    opening = ord("(")
    for byte in skeleton:
        if byte == opening:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _too_deep() -> HttpError:
    return HttpError(
        400, "invalid_json", f"the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
    )


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def read_json(request: Request, body_type: type[T]) -> T:
    """The body as ``body_type``: sent as application/json, at most 1 MiB, nested at most 128 deep."""
    require_json(request.headers.get("content-type", "").encode("latin-1") or None)
    try:
        body = await read_body(request.receive, MANAGEMENT_BODY_LIMIT)
    except ClientGone:
        raise HttpError(400, "client_gone", "the client disconnected before its body was read") from None
    return decode_json(body, body_type, strict=False)
