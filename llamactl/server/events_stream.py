"""``GET /api/v1/events``: what happens to instances, as Server-Sent Events.

Each event is ``id``, ``event`` (``status`` or ``queue``) and ``data`` (the
event as JSON). A client that reconnects sends the last id it saw in
``Last-Event-ID`` (browsers' EventSource does so by itself) and gets what it
missed, as far as the manager's ring still holds it. A comment line every
few seconds keeps idle connections open through proxies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llamactl.errors import HttpError, echo
from llamactl.instance.events import EventBus
from llamactl.server.asgi import whole_number

HEARTBEAT_SECONDS = 15.0
MAX_EVENT_ID = 10**18


class EventsStream:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def events(self, request: Request) -> Response:
        resume = request.headers.get("last-event-id") or request.query_params.get("since")
        # A new subscriber gets what happens from now on; one that resumes, what it missed too.
        # An id from the future (a restarted llamactl numbers from 1 again) resumes from now.
        last_id = self._bus.last_id if resume is None else min(_last_event_id(resume), self._bus.last_id)
        return StreamingResponse(
            self._stream(last_id),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
        )

    async def _stream(self, last_id: int) -> AsyncIterator[bytes]:
        yield b": llamactl events\n\n"
        while True:
            events = await self._bus.wait_after(last_id, HEARTBEAT_SECONDS)
            if not events and self._bus.ended:
                return  # llamactl is stopping; the client reconnects to the next one
            if not events:
                yield b": keep-alive\n\n"
                continue
            chunks = []
            for event in events:
                data = msgspec.json.encode(event)
                chunks.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), data))
                last_id = event.id
            yield b"".join(chunks)


def _last_event_id(text: str) -> int:
    last_id = whole_number(text, MAX_EVENT_ID)
    if last_id is None:
        raise HttpError(
            400,
            "invalid_parameter",
            f"Last-Event-ID must be an event id (a whole number); got {echo(text)}",
            field="Last-Event-ID",
        )
    return last_id
