"""``GET /healthz`` and ``GET /readyz``: llamactl's own liveness and readiness, for service managers.

``/healthz`` answers as long as the event loop does. ``/readyz`` answers 200
once the service has booted (database open, config loaded, instances loaded
and reconciled) and 503 before that and while it shuts down.
"""

from __future__ import annotations

import msgspec

from llamactl.server.asgi import Receive, Scope, Send, send_whole
from llamactl.server.auth import Principal


class HealthStatus(msgspec.Struct, frozen=True):
    status: str
    """``ok``, ``starting`` or ``stopping``."""


class Health:
    def __init__(self) -> None:
        self.state = "starting"
        """Set by the service: ``ok`` once booted, ``stopping`` when it shuts down."""

    async def alive(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        await _answer(send, 200, HealthStatus("ok"))

    async def ready(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        await _answer(send, 200 if self.state == "ok" else 503, HealthStatus(self.state))


async def _answer(send: Send, status: int, body: HealthStatus) -> None:
    await send_whole(send, msgspec.json.encode(body), status=status)
