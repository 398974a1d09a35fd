"""A lean HTTP/1.1 client for the proxy: keep-alive connections to backends, httptools' parser.

The proxy's own cost per request is a product feature, and a general client
(aiohttp, httpx) spends several times more per request than the backend hop
itself (bench/RESULTS.md). This one does only what forwarding needs: write
the request in one piece, parse the answer in C, hand body chunks over as
they arrive (pausing the backend when the client reads slowly), and reuse
the connection when the answer was complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

PAUSE_ABOVE = 1024 * 1024
"""Buffered bytes of one answer above which the backend is paused until the client catches up."""


class UpstreamClosed(ConnectionError):
    """The backend closed the connection before its answer was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
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
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamClosed(f"invalid answer from the backend: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamClosed(f"the backend closed the connection: {exc or 'end of stream'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_ABOVE and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self.wakeup.set()

    def on_message_complete(self) -> None:
        # Asked here: once this callback returns, the parser has moved on to the next message.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self.wakeup.set()

    def _fail(self, error: Exception) -> None:
        self.lost = error
        if not self.headers_done.done():
            self.headers_done.set_exception(error)
        self.wakeup.set()

    # used by Response
    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers = []
        self.headers_done = asyncio.get_running_loop().create_future()
        self.chunks.clear()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.wakeup.clear()

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


class Response:
    """An answer being received: status and headers now, the body as it comes."""

    def __init__(self, pool: ConnectionPool, key: tuple[str, int], connection: _Connection) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self.status: int = connection.parser.get_status_code()
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
        connection = self._connection
        if connection.complete and connection.keep_alive and connection.lost is None:
            self._pool.release(self._key, connection)
        elif connection.transport is not None:
            connection.transport.close()


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
        """Send a request; wait at most ``header_timeout`` seconds for the status and headers."""
        head = [
            f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n".encode()
        ]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        payload = b"".join(head) + b"\r\n" + body
        key = (host, port)
        reused = self._take_idle(key)
        if reused is not None:
            try:
                return await self._exchange(key, reused, payload, header_timeout)
            except UpstreamClosed:
                pass  # the backend closed the idle connection meanwhile: try once on a new one
        return await self._exchange(key, await self._connect(key), payload, header_timeout)

    async def _exchange(
        self, key: tuple[str, int], connection: _Connection, payload: bytes, header_timeout: float
    ) -> Response:
        assert connection.transport is not None
        if connection.closed:
            raise UpstreamClosed("the backend closed the idle connection")
        connection.reset()
        connection.transport.write(payload)
        try:
            async with asyncio.timeout(header_timeout):
                await connection.headers_done
        except BaseException:
            connection.transport.close()
            raise
        return Response(self, key, connection)

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await loop.create_connection(_Connection, *key)
        return connection

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if (
                not connection.closed
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                return connection
        return None

    def release(self, key: tuple[str, int], connection: _Connection) -> None:
        self._idle.setdefault(key, []).append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()
        self._idle.clear()
