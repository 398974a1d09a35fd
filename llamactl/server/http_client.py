"""A lean HTTP/1.1 client for the proxy: keep-alive connections to backends, httptools' parser.

The proxy's own cost per request is a product feature, and a general client
(aiohttp, httpx) spends several times more per request than the backend hop
itself (bench/RESULTS.md). This one does only what forwarding needs: write
the request in one piece, parse the answer in C, hand body chunks over as
they arrive (pausing the backend when the client reads slowly), and reuse
the connection when the answer was complete.

Because a pooled connection carries many clients' requests, what one client
sends must never be read as another's answer:

- a target or header that would change the request line or add lines to the
  head is refused before anything is written (request splitting);
- a connection that receives bytes while no request is waiting for them is
  closed, never reused;
- a request is never sent twice: once its bytes are written, a failure is the
  caller's, since the backend may already have acted on it;
- interim 1xx answers are skipped, and answers that have no body by
  definition (to HEAD, 204, 304) end with their headers.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

from llamactl.errors import LlamactlError, echo

__all__ = [
    "PAUSE_ABOVE",
    "ConnectionPool",
    "InvalidHeader",
    "InvalidRequest",
    "InvalidTarget",
    "Response",
    "UpstreamClosed",
]

PAUSE_ABOVE = 1024 * 1024
"""Buffered bytes of one answer above which the backend is paused until the client catches up."""

_ORIGIN_FORM = re.compile(r"/[\x21\x22\x24-\x7e]*")
"""An origin-form target: "/" then visible ASCII except "#" (no space, control, DEL, raw non-ASCII)."""


class UpstreamClosed(ConnectionError):
    """The backend closed the connection before its answer was complete."""


class InvalidRequest(LlamactlError, ValueError):
    """A request that cannot be written as given: the backend would read something else."""

    status = 400
    code = "invalid_request"


class InvalidTarget(InvalidRequest):
    """The request target is not origin-form, or holds bytes that would split the request line."""


class InvalidHeader(InvalidRequest):
    """A header name or value holds CR, LF or NUL, which would add lines to the request head."""


class _Unsolicited(Exception):
    """Raised in a parser callback to stop parsing bytes that arrived after the answer was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.awaiting = False
        """A request was written and its final answer is not complete: only then are bytes expected."""
        self.bodiless = False
        """The request was HEAD: its answer ends with its headers, whatever Content-Length says."""
        self.interim = False
        """A 1xx answer is being read: at its end its headers are dropped and the final answer awaited."""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.lost: Exception | None = None
        self.closed = False
        self.wakeup = asyncio.Event()
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.awaiting:
            # Nobody asked: a late or unsolicited answer would be read as the next request's.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unreadable("the backend switched protocols, which the proxy never asks for")
        except httptools.HttpParserError as error:
            self._unreadable(f"invalid answer from the backend: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.awaiting:
            return
        if exc is None and self.headers_done.done() and _runs_to_eof(self.headers):
            self._finish(keep_alive=False)
        else:
            self._fail(UpstreamClosed(f"the backend closed the connection: {exc or 'end of stream'}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if not self.awaiting:  # more bytes after the complete answer, in the same read
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.interim = True  # 100 Continue, 103 Early Hints: the final answer follows
            return
        self.status = status
        if self.bodiless:
            # httptools cannot be told about HEAD, so the answer is complete here, not at its body's end.
            self._finish(self.parser.should_keep_alive())
        self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self.awaiting:  # a body after an answer to HEAD
            raise _Unsolicited
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_ABOVE and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self.wakeup.set()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
        elif self.awaiting:  # not already finished at its headers (HEAD)
            # Asked here: once this callback returns, the parser has moved on to the next message.
            self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.complete = True
        self.awaiting = False
        self.wakeup.set()

    def _unreadable(self, reason: str) -> None:
        if self.awaiting:
            self._fail(UpstreamClosed(reason))
        else:  # bytes after the complete answer: the answer stands, the connection goes
            self.close()

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        if not self.headers_done.done():
            self.headers_done.set_exception(error)
        self.wakeup.set()
        self.close()

    # used by ConnectionPool and Response
    @property
    def alive(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        # Every failure clears keep_alive. A paused connection is not read: bytes sent while it idled
        # would go unnoticed.
        return self.complete and self.keep_alive and not self.paused and self.alive

    def reset(self, bodiless: bool) -> None:
        """Ready for the next request's answer, just before the request is written."""
        self.parser = httptools.HttpResponseParser(self)
        self.awaiting = True
        self.bodiless = bodiless
        self.interim = False
        self.headers = []
        self.headers_done = asyncio.get_running_loop().create_future()
        self.chunks.clear()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.wakeup.clear()

    def close(self) -> None:
        """Never use this connection again; a pending answer is abandoned."""
        self.awaiting = False
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def take(self) -> bytes | None:
        """Everything received and not yet passed on, in one piece (one write to the client)."""
        if not self.chunks:
            return None
        chunk = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk


def _runs_to_eof(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body ends where the connection does: no Content-Length, no final chunked coding."""
    coding = length = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            coding = value
        elif lowered == b"content-length":
            length = value
    if coding is not None:
        return not coding.rstrip().lower().endswith(b"chunked")
    return length is None


class Response:
    """An answer being received: status and headers now, the body as it comes."""

    def __init__(self, pool: ConnectionPool, key: tuple[str, int], connection: _Connection) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self.status: int = connection.status
        self.headers = connection.headers

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key.lower() == name), None)

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; TimeoutError after ``idle_timeout`` seconds of silence."""
        connection = self._connection
        while True:
            chunk = connection.take()
            if chunk is not None:
                yield chunk
                continue
            if connection.complete:
                return
            if connection.lost is not None:
                raise connection.lost
            connection.wakeup.clear()
            async with asyncio.timeout(idle_timeout):
                await connection.wakeup.wait()

    async def read(self, idle_timeout: float) -> bytes:
        return b"".join([chunk async for chunk in self.chunks(idle_timeout)])

    def close(self) -> None:
        """Give the connection back when the answer was complete, else drop it."""
        if self._connection.reusable:
            self._pool.release(self._key, self._connection)
        else:
            self._connection.close()


class ConnectionPool:
    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        header_timeout: float,
    ) -> Response:
        """Send a request; wait at most ``header_timeout`` seconds for the final status and headers.

        Raises InvalidTarget or InvalidHeader before connecting when the request cannot be
        written as given, and UpstreamClosed when the backend fails after it was written:
        the request is never sent twice.
        """
        if _ORIGIN_FORM.fullmatch(target) is None:
            raise InvalidTarget(f"not a valid request target: {echo(target)}")
        fields = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
        # Each line above ends in the one CRLF written there: any other CR, LF or NUL came from a field.
        if fields.count(b"\n") != len(headers) or fields.count(b"\r") != len(headers) or b"\0" in fields:
            name = next(name for name, value in headers if any(byte in name + value for byte in b"\r\n\0"))
            raise InvalidHeader(f"header {echo(name)} holds CR, LF or NUL")
        start = f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"
        payload = b"".join((start.encode(), fields, b"\r\n", body))
        key = (host, port)
        connection = self._take_idle(key) or await self._connect(key)
        return await self._exchange(key, connection, method == "HEAD", payload, header_timeout)

    async def _exchange(
        self,
        key: tuple[str, int],
        connection: _Connection,
        bodiless: bool,
        payload: bytes,
        header_timeout: float,
    ) -> Response:
        assert connection.transport is not None
        if not connection.alive:  # a new connection the backend closed at once
            raise UpstreamClosed("the backend closed the connection before the request was sent")
        connection.reset(bodiless)
        connection.transport.write(payload)
        try:
            async with asyncio.timeout(header_timeout):
                await connection.headers_done
        except BaseException:
            connection.close()
            raise
        return Response(self, key, connection)

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await loop.create_connection(_Connection, *key)
        return connection

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        """An idle connection still open; those the backend closed meanwhile are dropped unused."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.alive:
                return connection
        return None

    def release(self, key: tuple[str, int], connection: _Connection) -> None:
        self._idle.setdefault(key, []).append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
