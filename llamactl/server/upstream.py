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

import aiohttp
import msgspec

from llamactl.server.errors import HttpError, retry_after

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
# Never passed to a backend: llamactl's own credentials and what aiohttp sets itself.
REQUEST_DROPPED = HOP_BY_HOP | {b"host", b"content-length", b"authorization", b"x-api-key"}
CONNECT_TIMEOUT = 10.0


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Upstream:
    """One pooled HTTP client for every backend."""

    def __init__(self, idle_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=idle_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        url: str,
        body: bytes,
        response_headers: list[tuple[bytes, bytes]],
        error_body: Callable[[HttpError], bytes],
    ) -> None:
        """Send ``body`` to ``url`` with the client's method and headers; stream the answer back."""
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in REQUEST_DROPPED
        ]
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, asyncio.current_task()))
        started = False
        try:
            async with self._client().request(
                scope["method"], url, data=body, headers=headers, allow_redirects=False
            ) as response:
                streaming = response.headers.get("content-type", "").startswith("text/event-stream")
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": _response_headers(response, streaming, response_headers),
                    }
                )
                started = True
                try:
                    async for chunk in response.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (aiohttp.ClientError, TimeoutError) as failure:
                    # The status is sent: the client learns it through the end of the stream.
                    if streaming:
                        event = {
                            "error": {"message": f"backend stream ended: {failure!r}", "type": "server_error"}
                        }
                        data = b"data: " + msgspec.json.encode(event) + b"\n\n"
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError) as failure:
            if started:
                return
            status, reason = (504, "timed out") if isinstance(failure, TimeoutError) else (502, "failed")
            error = HttpError(status, "backend_error", f"the backend {reason}: {failure!r}")
            await send_error(send, error, error_body)
        finally:
            watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if task is not None:
                task.cancel()  # the request's task: leaving `async with` closes the upstream connection
            return


def _response_headers(
    response: aiohttp.ClientResponse, streaming: bool, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (name, value)
        for name, value in response.raw_headers
        if name.lower() not in HOP_BY_HOP and not name.lower().startswith(b"access-control-")
    ]
    if streaming:
        headers += [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
    return headers + extra


async def send_error(send: Send, error: HttpError, error_body: Callable[[HttpError], bytes]) -> None:
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
