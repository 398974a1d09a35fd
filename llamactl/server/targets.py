"""The request target sent to a backend, built from the client's raw bytes and checked.

uvicorn percent-decodes ``scope["path"]``: written into a request line, a
decoded ``%0d%0a`` would start a second request on a pooled connection. So the
target comes from ``scope["raw_path"]`` as the client sent it, and must be an
RFC 3986 origin-form target (``/path?query`` of unreserved characters,
sub-delimiters, ``:``, ``@`` and well-formed percent escapes), without ``.``
or ``..`` segments, which would let ``/v1/../x`` leave the route's prefix.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from llamactl.errors import HttpError
from llamactl.server.asgi import Scope

_PATH_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%"
"""RFC 3986 pchar, "/" and the "%" of escapes: every byte an origin-form path may hold."""
_QUERY_BYTES = _PATH_BYTES + b"?"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DOT_SEGMENTS = {b".", b"..", b"%2e", b".%2e", b"%2e.", b"%2e%2e"}


def raw_path(scope: Scope) -> bytes:
    """The path as the client sent it (ASGI servers give ``raw_path``; a test transport may not)."""
    raw: bytes | None = scope.get("raw_path")
    return raw if raw is not None else scope["path"].encode("utf-8", "surrogateescape")


def split_raw(raw: bytes, prefix: bytes, marker: bytes = b"") -> tuple[str, bytes] | None:
    """``prefix{name}/{marker}{rest}`` as the decoded name and ``/rest``; None for another shape.

    Split on the raw bytes, so ``%2F`` in a name stays inside the name.
    """
    if not raw.startswith(prefix):
        return None
    name, slash, rest = raw[len(prefix) :].partition(b"/")
    if not name or not slash or not rest.startswith(marker):
        return None
    return unquote(name.decode("ascii", "replace")), b"/" + rest[len(marker) :]


def origin_form(path: bytes, query: bytes) -> str:
    """``path?query`` for the request line, or a 400 naming what is wrong with it."""
    # bytes.translate deletes the allowed bytes in C: anything left is not allowed.
    if not path.startswith(b"/") or path.translate(None, _PATH_BYTES) or _bad_escape(path):
        raise _refused(_problem(path, "path"))
    if query and (query.translate(None, _QUERY_BYTES) or _bad_escape(query)):
        raise _refused(_problem(query, "query"))
    if b"/." in path or b"/%2" in path:
        segments = path.lower().split(b"/")
        if any(segment in _DOT_SEGMENTS for segment in segments):
            raise _refused("has a '.' or '..' segment")
    target = path + b"?" + query if query else path
    return target.decode("ascii")


def _refused(problem: str) -> HttpError:
    return HttpError(400, "invalid_target", f"the request target {problem}", field="path")


def _bad_escape(part: bytes) -> bool:
    return b"%" in part and _BAD_ESCAPE.search(part) is not None


def _problem(part: bytes, where: str) -> str:
    allowed = _QUERY_BYTES if where == "query" else _PATH_BYTES
    for byte in part:
        if byte not in allowed:
            shown = repr(chr(byte)) if 0x20 < byte < 0x7F else "a control or non-ASCII byte"
            return f"has byte 0x{byte:02x} ({shown}) in its {where}: it must be percent-encoded"
    if _bad_escape(part):
        return f"has a '%' in its {where} that two hex digits do not follow"
    return f"has a {where} that is not origin-form: it must start with '/'"
