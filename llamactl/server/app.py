"""The ASGI application: the Host guard in front of the one route table.

When llamactl listens on loopback, a request whose ``Host`` names another
host is refused (DNS rebinding: a page on evil.example resolving to
127.0.0.1). Everything else is the route table's (``routes.py``): Starlette's
router picks the route and the gate applies its family's rules.
"""

from __future__ import annotations

import ipaddress

from llamactl.errors import HttpError
from llamactl.server.asgi import Receive, Scope, Send, header, send_error
from llamactl.server.auth import Authenticator
from llamactl.server.errors import management_body
from llamactl.server.gate import policies
from llamactl.server.routes import Apis, Endpoint, build_router, route_table


class LlamactlApp:
    def __init__(
        self,
        auth: Authenticator,
        apis: Apis,
        bind_host: str,
        allowed_origins: list[str],
        allowed_headers: list[str],
    ) -> None:
        self.guard_host = is_loopback(bind_host)
        self.table: list[Endpoint] = route_table(apis)
        self._router = build_router(self.table, policies(auth, allowed_origins), allowed_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        if self.guard_host and not _host_allowed(scope):
            error = HttpError(400, "invalid_host", "the Host header names no loopback address")
            await send_error(send, error, management_body)
            return
        await self._router(scope, receive, send)


COMMON_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
"""Answered without parsing: the Host of nearly every request on a loopback bind."""


def is_loopback(host: str) -> bool:
    """Whether an address is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in COMMON_LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_allowed(scope: Scope) -> bool:
    host = (header(scope, b"host") or b"").decode("latin-1")
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.rpartition(":")[0] if ":" in host else host
    return is_loopback(hostname)
