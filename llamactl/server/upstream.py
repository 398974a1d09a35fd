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

import time

import msgspec

from llamactl.errors import HttpError
from llamactl.server.asgi import ErrorBody, Scope, Send, send_error
from llamactl.server.http_client import ConnectionPool, Response, UpstreamClosed

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
# Never passed to a backend: llamactl's own credentials, what the client sets itself, and
# Expect: uvicorn answers 100 Continue itself when the body is read, so the backend's
# interim answer must not come back in place of the real one.
REQUEST_DROPPED = HOP_BY_HOP | {b"host", b"content-length", b"authorization", b"x-api-key", b"expect"}
CONNECT_TIMEOUT = 10.0
WHOLE_BODY_LIMIT = 256 * 1024
"""Non-streamed answers up to this size are read whole and sent in one piece."""
ECHOED_ANSWER_BYTES = 2000
"""Of a backend's error answer quoted in a stream's error event."""


class Target(msgspec.Struct, frozen=True):
    """Where a request goes: a backend's address and the checked origin-form target (``/path?query``)."""

    host: str
    port: int
    path: str


class Usage(msgspec.Struct, frozen=True):
    """The token counts of an OpenAI-style answer's ``usage`` member."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _WithUsage(msgspec.Struct):
    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None


class Exchange(msgspec.Struct):
    """What one forwarded request came to, for the metrics and the activity log."""

    status: int = 0
    """The status the client got; 0 while none was sent."""
    first_byte: float | None = None
    """``time.perf_counter()`` when the first byte of the answer's body went to the client."""
    streamed: bool = False
    """The answer is an event stream: its first byte is the first token's (TTFT)."""
    usage: Usage | None = None
    """From a whole answer's ``usage``, or from the last event of a stream that carried one."""


USAGE_MARKER = b'"usage"'


def usage_of(json_text: bytes) -> Usage | None:
    """The ``usage`` of an answer's JSON, or None (not JSON, no usage): only that member is decoded."""
    if USAGE_MARKER not in json_text:
        return None
    try:
        return msgspec.json.decode(json_text, type=_WithUsage).usage
    except msgspec.MsgspecError:
        return None


def _usage_of_event(chunk: bytes) -> Usage | None:
    """The usage in the last ``data:`` line of a stream chunk that holds one."""
    for line in reversed(chunk.split(b"\n")):
        if line.startswith(b"data:") and USAGE_MARKER in line:
            return usage_of(line[5:])
    return None


def without_usage_events(chunk: bytes) -> bytes:
    """The chunk without its usage-only events (``choices`` empty, ``usage`` set): what a client that
    did not ask for ``stream_options.include_usage`` must not see. An event cut across two chunks is
    passed on as it is."""
    kept = []
    for event in chunk.split(b"\n\n"):
        data = event[5:] if event.startswith(b"data:") else None
        if data is not None and USAGE_MARKER in data:
            try:
                parsed = msgspec.json.decode(data, type=_WithUsage)
            except msgspec.MsgspecError:
                parsed = None
            if parsed is not None and parsed.usage is not None and not parsed.choices:
                continue
        kept.append(event)
    return b"\n\n".join(kept)


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
        send: Send,
        target: Target,
        body: bytes,
        response_headers: list[tuple[bytes, bytes]],
        error_body: ErrorBody,
        exchange: Exchange,
        hide_usage: bool = False,
    ) -> None:
        """Send ``body`` to the backend with the client's method and headers; stream the answer back.

        ``exchange`` is filled in as the answer goes, so what it says holds even when the
        client leaves mid-answer: the time of the first byte, the usage seen so far.

        ``hide_usage``: the usage-only events of a stream are counted but not passed on (llamactl
        asked for them; the client did not).

        An ``exchange`` whose status is already 200 is a stream whose head went out (while the
        request waited for its instance), so the backend's own head is not sent;
        an answer that is not a 200 event stream becomes the stream's error event.
        The caller cancels this when the client leaves (``cancelled_when_client_leaves``).
        """
        headers = [(name, value) for name, value in scope["headers"] if name not in REQUEST_DROPPED]
        await self._exchange(
            scope, send, target, body, headers, response_headers, error_body, exchange, hide_usage
        )

    async def _exchange(
        self,
        scope: Scope,
        send: Send,
        target: Target,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        response_headers: list[tuple[bytes, bytes]],
        error_body: ErrorBody,
        exchange: Exchange,
        hide_usage: bool,
    ) -> None:
        response: Response | None = None
        head_sent = exchange.status != 0
        started = head_sent
        relaying = False  # the backend's own body is going out: a failure now ends it, nothing more is said
        try:
            response = await self._pool.request(
                target.host, target.port, scope["method"], target.path, headers, body, self._idle_timeout
            )
            streaming = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
            exchange.streamed = streaming
            if head_sent and not (streaming and response.status == 200):
                answer = (await response.read(self._idle_timeout))[:ECHOED_ANSWER_BYTES]
                message = f"the backend answered {response.status}: {answer.decode(errors='replace')}"
                await _end_stream(send, message)
                return
            start = {
                "type": "http.response.start",
                "status": response.status,
                "headers": _response_headers(response.headers, streaming, response_headers),
            }
            length = response.header(b"content-length")
            if not streaming and length is not None and length.isdigit() and int(length) <= WHOLE_BODY_LIMIT:
                # A small complete answer: one write to the client instead of three.
                whole = await response.read(self._idle_timeout)
                exchange.status = response.status
                await send(start)
                exchange.first_byte = time.perf_counter()
                await send({"type": "http.response.body", "body": whole, "more_body": False})
                exchange.usage = usage_of(whole)
                return
            if not head_sent:
                exchange.status = response.status
                await send(start)
            started = relaying = True
            try:
                async for chunk in response.chunks(self._idle_timeout):
                    if exchange.first_byte is None:
                        exchange.first_byte = time.perf_counter()
                    if USAGE_MARKER in chunk:  # the last event of a stream, when the backend sends usage
                        exchange.usage = _usage_of_event(chunk) or exchange.usage
                        if hide_usage:
                            chunk = without_usage_events(chunk)
                            if not chunk:
                                continue
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (UpstreamClosed, TimeoutError) as failure:
                # The status is sent: the client learns of the failure from the end of the stream.
                if streaming:
                    await _end_stream(send, f"backend stream ended: {failure}")
                # Any other body is left unfinished, so the connection closes and the client
                # sees it cut: an ending here would pass a truncated answer off as whole.
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, TimeoutError) as failure:
            if head_sent and not relaying:
                await _end_stream(send, f"the backend failed: {failure}")
                return
            if started:
                return
            status, reason = (
                (504, "did not answer in time") if isinstance(failure, TimeoutError) else (502, "failed")
            )
            error = HttpError(status, "backend_error", f"the backend {reason}: {failure}")
            exchange.status = status
            await send_error(send, error, error_body)
        finally:
            if response is not None:
                response.close()  # reused only if the answer was complete


async def _end_stream(send: Send, message: str) -> None:
    """End an event stream whose status is sent with an OpenAI-shaped error event, and no [DONE]."""
    event = {"error": {"message": message, "type": "server_error", "code": "backend_error"}}
    data = b"data: " + msgspec.json.encode(event) + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": False})


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
