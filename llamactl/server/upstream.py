"""Forward one request to a backend and stream its answer back, chunk by chunk.

Plain ASGI on purpose: this is the hot path, so no middleware stack and no
re-buffering. What it guarantees:

- every chunk the backend sends is passed on as it arrives (SSE gets
  ``X-Accel-Buffering: no`` so a proxy in front does not buffer either);
- a client that disconnects cancels the upstream request at once;
- a backend that dies mid-stream ends the client's stream promptly, with an
  error event for SSE and never a fake ``[DONE]``;
- streams have an idle timeout (silence between bytes), never a total one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from llamactl.errors import LlamactlError
from llamactl.server.errors import HttpError, retry_after
from llamactl.server.http_client import ConnectionPool, Response, UpstreamClosed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
}
# Never passed to a backend: llamactl's own credentials and what the client sets itself.
REQUEST_DROPPED = HOP_BY_HOP | {b"host", b"content-length", b"authorization", b"x-api-key"}
CONNECT_TIMEOUT = 10.0
WHOLE_BODY_LIMIT = 256 * 1024
"""Non-streamed answers up to this size are read whole and sent in one piece."""


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Upstream:
    """Forwards requests to backends over pooled keep-alive connections."""

    def __init__(self, idle_timeout: float) -> None:
        self._idle_timeout = idle_timeout
        self._pool = ConnectionPool(connect_timeout=CONNECT_TIMEOUT)

    async def close(self) -> None:
        self._pool.close()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        body: bytes,
        response_headers: list[tuple[bytes, bytes]],
        error_body: Callable[[LlamactlError], bytes],
    ) -> None:
        """Send ``body`` to the backend with the client's method and headers; stream the answer back."""
        headers = [(name, value) for name, value in scope["headers"] if name not in REQUEST_DROPPED]
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, asyncio.current_task()))
        response: Response | None = None
        started = False
        try:
            response = await self._pool.request(
                target.host, target.port, scope["method"], target.path, headers, body, self._idle_timeout
            )
            streaming = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
            start = {
                "type": "http.response.start",
                "status": response.status,
                "headers": _response_headers(response.headers, streaming, response_headers),
            }
            length = response.header(b"content-length")
            if not streaming and length is not None and int(length) <= WHOLE_BODY_LIMIT:
                # A small complete answer: one write to the client instead of three.
                whole = await response.read(self._idle_timeout)
                await send(start)
                await send({"type": "http.response.body", "body": whole, "more_body": False})
                return
            await send(start)
            started = True
            try:
                async for chunk in response.chunks(self._idle_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (UpstreamClosed, TimeoutError) as failure:
                # The status is sent: the client learns of the failure from the end of the stream.
                if streaming:
                    event = {"error": {"message": f"backend stream ended: {failure}", "type": "server_error"}}
                    data = b"data: " + msgspec.json.encode(event) + b"\n\n"
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, TimeoutError) as failure:
            if started:
                return
            status, reason = (
                (504, "did not answer in time") if isinstance(failure, TimeoutError) else (502, "failed")
            )
            error = HttpError(status, "backend_error", f"the backend {reason}: {failure}")
            await send_error(send, error, error_body)
        finally:
            watcher.cancel()
            if response is not None:
                response.close()  # reused only if the answer was complete


def key_headers(scope: Scope) -> tuple[str | None, str | None]:
    """The ``Authorization`` and ``X-API-Key`` headers of a request, the only places a key is read from."""
    authorization = x_api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            x_api_key = value.decode("latin-1")
    return authorization, x_api_key


def with_query(path: str, scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


class Target(msgspec.Struct, frozen=True):
    """Where a request goes: a backend's address and the path with its query."""

    host: str
    port: int
    path: str


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if task is not None:
                task.cancel()  # the request's task: its `finally` closes the upstream connection
            return


def _response_headers(
    upstream_headers: list[tuple[bytes, bytes]], streaming: bool, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (name, value)
        for name, value in upstream_headers
        if name.lower() not in HOP_BY_HOP and not name.lower().startswith(b"access-control-")
    ]
    if streaming:
        headers.append((b"x-accel-buffering", b"no"))
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append((b"cache-control", b"no-cache"))
    return headers + extra


async def send_error(send: Send, error: LlamactlError, error_body: Callable[[LlamactlError], bytes]) -> None:
    body = error_body(error)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in retry_after(error).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
