"""The web UI's files: ``GET /`` is its page, ``GET /ui/{path}`` its modules, styles and libraries.

The files ship in the package (``server/ui/``) and are read once, at start:
a few tens of KB, served from memory with an ETag, so a reload costs a 304.
Every answer carries a strict Content-Security-Policy: scripts, styles and
connections from this origin only, no inline script, no framing. The page
holds no secret; the key is the browser's, in ``sessionStorage``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from llamactl.errors import HttpError, echo
from llamactl.server.asgi import Receive, Scope, Send, header, send_whole
from llamactl.server.auth import Principal

UI_DIR = Path(__file__).parent / "ui"
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
"""What is served, by suffix; other files there (licences, notes) are not."""
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Revalidated on every load (the names carry no hash): an upgrade never runs old modules.
    (b"cache-control", b"no-cache"),
)


class UiFile(msgspec.Struct, frozen=True):
    body: bytes
    content_type: bytes
    etag: bytes


class WebUi:
    def __init__(self, directory: Path = UI_DIR) -> None:
        self._files = {
            path.relative_to(directory).as_posix(): _ui_file(path)
            for path in sorted(directory.rglob("*"))
            if path.suffix in CONTENT_TYPES and path.is_file()
        }

    async def page(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        await self._send(scope, send, self._files["index.html"])

    async def asset(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        name: str = scope["path_params"]["path"]
        found = self._files.get(name)
        if found is None:
            raise HttpError(404, "not_found", f"the web UI has no file {echo(name)}", field="path")
        await self._send(scope, send, found)

    @staticmethod
    async def _send(scope: Scope, send: Send, file: UiFile) -> None:
        headers = [*SECURITY_HEADERS, (b"etag", file.etag)]
        if header(scope, b"if-none-match") == file.etag:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_whole(send, file.body, file.content_type, headers=headers)


def _ui_file(path: Path) -> UiFile:
    body = path.read_bytes()
    etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'
    return UiFile(body, CONTENT_TYPES[path.suffix], etag)
