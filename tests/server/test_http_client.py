"""The proxy's HTTP/1.1 client against a scripted raw-socket backend, protocol case by protocol case.

Each backend answer is exact bytes written by the test, so every case the client
must survive (1xx, HEAD, bytes while idle, a close after the request was written)
is played on purpose, not hoped for. Every case runs on asyncio's loop and on
uvloop, which the server uses and whose transports behave differently.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import pytest
import uvloop

from llamactl.server.http_client import (
    PAUSE_ABOVE,
    ConnectionPool,
    InvalidHeader,
    InvalidTarget,
    Response,
    UpstreamClosed,
)

DEADLINE = 10.0
"""No test waits longer than this for anything: a hang fails the test instead of stalling the suite."""
PATIENT = 30.0
"""Header and idle timeouts for cases that must not wait at all: only a hang would reach them."""

GAP = 0.05
"""Between the pieces of an answer, so that the client reads them apart."""

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Scenario = Callable[[], Coroutine[Any, Any, None]]
Run = Callable[[Scenario], None]


def send(*pieces: bytes, close: bool = False) -> Answer:
    """An answer written in the given pieces, ``GAP`` apart; ``close`` ends the connection after it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(GAP)
            writer.write(piece)
            await writer.drain()
        if close:
            writer.close()

    return answer


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(extra), body)


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up


class Backend:
    """A raw-socket server: for each request it reads, it plays the next scripted answer."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = deque(answers)
        self.accepts = 0
        self.requests: list[bytes] = []
        """Every request received, head and body, as bytes; a partial one too."""
        self.hangups = 0
        """Connections the client closed."""
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Backend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._handlers)  # each ends at its connection's end, now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.writers.append(writer)
        self._handlers.append(cast(asyncio.Task[Any], asyncio.current_task()))
        try:
            while self.answers and not writer.is_closing():
                request = await self._read_request(reader)
                if request is None:
                    self.hangups += 1
                    break
                self.requests.append(request)
                await self.answers.popleft()(reader, writer)
            else:
                if not writer.is_closing():  # script done: wait for the client to go
                    await reader.read()
                    self.hangups += 1
        except ConnectionError:
            pass  # the client went away in the middle of an answer
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self.requests.append(error.partial)
            return None
        except ConnectionError:
            return None
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        return head + await reader.readexactly(length)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for something the client does on its own, such as closing a connection, under the deadline."""
    while not condition():
        await asyncio.sleep(0.005)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario to its end under ``DEADLINE``, on the loop the test is parametrized with."""

    def runner(scenario: Scenario) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(DEADLINE):
                await scenario()

        if request.param == "uvloop":
            uvloop.run(bounded())
        else:
            asyncio.run(bounded())

    return runner


async def get(
    pool: ConnectionPool,
    backend: Backend,
    target: str = "/",
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    header_timeout: float = PATIENT,
) -> Response:
    return await pool.request("127.0.0.1", backend.port, method, target, headers or [], body, header_timeout)


async def fetch(
    pool: ConnectionPool, backend: Backend, target: str = "/", method: str = "GET"
) -> tuple[int, bytes]:
    """Status and whole body of one request; the connection goes back to the pool when it can."""
    response = await get(pool, backend, target, method)
    try:
        return response.status, await response.read(PATIENT)
    finally:
        response.close()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"

# Answers the client must read as one complete answer, after which the connection carries the next
# request. An answer in several pieces is written with a pause between them, so they arrive apart.
COMPLETE_ANSWERS = [
    pytest.param("GET", [ok(b"hello")], 200, b"hello", id="content-length"),
    pytest.param(
        "GET",
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"],
        200,
        b"hello world",
        id="chunked",
    ),
    pytest.param("GET", [ok(b"")], 200, b"", id="empty-content-length"),
    pytest.param("POST", [CONTINUE, ok(b"final")], 200, b"final", id="100-continue-then-200"),
    pytest.param("POST", [CONTINUE + ok(b"final")], 200, b"final", id="100-continue-and-200-in-one-read"),
    pytest.param("GET", [EARLY_HINTS, ok(b"final")], 200, b"final", id="103-early-hints-then-200"),
    pytest.param("GET", [CONTINUE, EARLY_HINTS, ok(b"final")], 200, b"final", id="two-interim-answers"),
    pytest.param("HEAD", [EARLY_HINTS, ok(b"")], 200, b"", id="103-then-head"),
    pytest.param(
        "HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"], 200, b"", id="head-content-length"
    ),
    pytest.param(
        "HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], 200, b"", id="head-content-length-0"
    ),
    pytest.param(
        "HEAD", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], 200, b"", id="head-chunked"
    ),
    pytest.param("GET", [b"HTTP/1.1 204 No Content\r\n\r\n"], 204, b"", id="204"),
    pytest.param(
        "DELETE", [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"], 204, b"", id="204-length-0"
    ),
    pytest.param("GET", [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"], 304, b"", id="304"),
]


@pytest.mark.parametrize(("method", "answer", "status", "body"), COMPLETE_ANSWERS)
def test_a_complete_answer_is_read_and_its_connection_reused(
    run: Run,
    method: str,
    answer: list[bytes],
    status: int,
    body: bytes,
) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(*answer), send(ok(b"second"))) as backend:
            assert await fetch(pool, backend, "/first", method) == (status, body)
            assert await fetch(pool, backend, "/second") == (200, b"second")
            assert backend.accepts == 1
            assert [request.split(b" ")[:2] for request in backend.requests] == [
                [method.encode(), b"/first"],
                [b"GET", b"/second"],
            ]
            pool.close()

    run(scenario)


def test_the_final_answers_headers_are_the_response_headers_not_the_interim_ones(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(EARLY_HINTS, ok(b"x", b"X-Final: yes\r\n"))) as backend:
            response = await get(pool, backend)
            assert response.status == 200
            assert response.header(b"x-final") == b"yes"
            assert response.header(b"link") is None
            response.close()
            pool.close()

    run(scenario)


def test_a_chunked_answer_is_handed_over_chunk_by_chunk(run: Run) -> None:
    async def scenario() -> None:
        first_seen = asyncio.Event()

        async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await first_seen.wait()  # a client that buffered the answer would never get here
            writer.write(b"6\r\n world\r\n0\r\n\r\n")

        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(stream) as backend:
            response = await get(pool, backend)
            received = []
            async for chunk in response.chunks(PATIENT):
                received.append(chunk)
                first_seen.set()
            assert received == [b"hello", b" world"]
            response.close()
            pool.close()

    run(scenario)


def test_an_answer_with_connection_close_is_not_reused(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        # The backend keeps its end open: the client must still not send a second request on it.
        async with Backend(send(ok(b"bye", b"Connection: close\r\n")), send(ok(b"new"))) as backend:
            assert await fetch(pool, backend) == (200, b"bye")
            assert await fetch(pool, backend) == (200, b"new")
            assert backend.accepts == 2
            pool.close()

    run(scenario)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="no-length"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n", id="http-1.0"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", id="non-chunked-coding"),
    ],
)
def test_an_answer_without_length_is_read_to_the_end_of_the_connection(run: Run, head: bytes) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(head + b"part one, ", b"part two", close=True), send(ok(b"new"))) as backend:
            assert await fetch(pool, backend) == (200, b"part one, part two")
            assert await fetch(pool, backend) == (200, b"new")
            assert backend.accepts == 2
            pool.close()

    run(scenario)


def test_an_answer_cut_short_of_its_content_length_fails(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(
            send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True)
        ) as backend:
            response = await get(pool, backend)
            with pytest.raises(UpstreamClosed):
                await response.read(PATIENT)
            response.close()
            pool.close()

    run(scenario)


def test_a_connection_that_receives_bytes_while_idle_is_not_reused(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok(b"first")), send(ok(b"fresh"))) as backend:
            assert await fetch(pool, backend) == (200, b"first")
            # A late answer (to a request smuggled into the first, say) arrives while the connection idles.
            backend.writers[0].write(ok(b"stray"))
            await until(lambda: backend.hangups == 1)  # the client closed it at once
            assert await fetch(pool, backend) == (200, b"fresh")
            assert backend.accepts == 2
            pool.close()

    run(scenario)


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        pytest.param("GET", ok(b"first") + ok(b"stray"), id="second-answer"),
        pytest.param("GET", ok(b"first") + b"junk", id="junk"),
        pytest.param("GET", ok(b"first", b"Connection: close\r\n") + b"junk", id="after-connection-close"),
        pytest.param("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", id="body-to-head"),
    ],
)
def test_bytes_after_a_complete_answer_in_the_same_read_spoil_the_connection(
    run: Run, method: str, answer: bytes
) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(answer), send(ok(b"fresh"))) as backend:
            status, body = await fetch(pool, backend, method=method)
            assert status == 200
            assert body == (b"" if method == "HEAD" else b"first")
            assert await fetch(pool, backend) == (200, b"fresh")
            assert backend.accepts == 2
            pool.close()

    run(scenario)


def test_a_pooled_connection_the_backend_closed_is_replaced_before_anything_is_sent(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok(b"first"), close=True), send(ok(b"second"))) as backend:
            assert await fetch(pool, backend) == (200, b"first")
            # The client learns of the close from its loop, as it would between two proxied requests.
            await until(lambda: all(c.closed for idle in pool._idle.values() for c in idle))
            assert await fetch(pool, backend) == (200, b"second")
            assert backend.accepts == 2
            assert len(backend.requests) == 2  # one per logical request: nothing was replayed
            pool.close()

    run(scenario)


def test_a_request_written_to_a_reused_connection_is_never_replayed(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        # The backend takes the POST, then drops the connection: it may have acted on it already.
        async with Backend(send(ok(b"first")), hang_up, send(ok(b"replayed"))) as backend:
            assert await fetch(pool, backend) == (200, b"first")
            with pytest.raises(UpstreamClosed):
                await get(pool, backend, "/v1/completions", "POST", b'{"prompt": "once"}')
            assert backend.accepts == 1
            assert len(backend.requests) == 2
            assert backend.requests[1].endswith(b'{"prompt": "once"}')
            pool.close()

    run(scenario)


def test_a_request_on_a_new_connection_the_backend_drops_fails_without_a_retry(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(hang_up, send(ok(b"replayed"))) as backend:
            with pytest.raises(UpstreamClosed):
                await get(pool, backend, "/v1/completions", "POST", b"{}")
            assert backend.accepts == 1
            assert len(backend.requests) == 1
            pool.close()

    run(scenario)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage-status-line"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="non-numeric-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad-content-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", id="101-upgrade"),
    ],
)
def test_a_malformed_answer_fails_at_once(run: Run, answer: bytes) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(answer)) as backend:
            with pytest.raises(UpstreamClosed):
                response = await get(pool, backend)
                await response.read(PATIENT)
            pool.close()

    run(scenario)


BAD_TARGETS = [
    pytest.param("/a\r\nHost: x\r\n\r\nGET /b", id="crlf"),
    pytest.param("/a\nb", id="lf"),
    pytest.param("/a\rb", id="cr"),
    pytest.param("/a HTTP/1.1", id="space"),
    pytest.param("/a\tb", id="tab"),
    pytest.param("/a\x00", id="nul"),
    pytest.param("/a\x7f", id="del"),
    pytest.param("/caf\u00e9", id="non-ascii"),
    pytest.param("/a\x85", id="latin-1-next-line"),
    pytest.param("/a#fragment", id="fragment"),
    pytest.param("a", id="relative"),
    pytest.param("", id="empty"),
    pytest.param("*", id="asterisk"),
    pytest.param("http://127.0.0.1/a", id="absolute-form"),
]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_a_target_that_would_split_the_request_is_refused_before_anything_is_sent(
    run: Run, target: str
) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok(b"first")), send(ok(b"after"))) as backend:
            with pytest.raises(InvalidTarget):
                await get(pool, backend, target)
            assert backend.accepts == 0
            # On a pooled connection too: the next request is the next thing the backend reads.
            assert await fetch(pool, backend, "/first") == (200, b"first")
            with pytest.raises(InvalidTarget):
                await get(pool, backend, target)
            assert await fetch(pool, backend, "/after") == (200, b"after")
            assert [request.split(b" ")[1] for request in backend.requests] == [b"/first", b"/after"]
            assert backend.accepts == 1
            pool.close()

    run(scenario)


@pytest.mark.parametrize(
    "target", ["/", "/v1/chat/completions", "/a/b%20c?x=1&y=%0D%0A", "/-._~!$&'()*+,;=:@/?/"]
)
def test_a_valid_target_is_sent_as_given(run: Run, target: str) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok())) as backend:
            assert await fetch(pool, backend, target) == (200, b"ok")
            assert backend.requests[0].startswith(b"GET " + target.encode() + b" HTTP/1.1\r\n")
            pool.close()

    run(scenario)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param((b"x-a", b"1\r\nx-injected: 2"), id="crlf-in-value"),
        pytest.param((b"x-a", b"1\nx-injected: 2"), id="lf-in-value"),
        pytest.param((b"x-a", b"1\rx"), id="cr-in-value"),
        pytest.param((b"x-a", b"1\x00"), id="nul-in-value"),
        pytest.param((b"x-a\r\nx-injected", b"2"), id="crlf-in-name"),
        pytest.param((b"x-\x00a", b"2"), id="nul-in-name"),
    ],
)
def test_a_header_that_would_add_lines_is_refused_before_anything_is_sent(
    run: Run, header: tuple[bytes, bytes]
) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok())) as backend:
            with pytest.raises(InvalidHeader):
                await get(pool, backend, headers=[(b"accept", b"*/*"), header])
            assert backend.accepts == 0
            assert backend.requests == []
            pool.close()

    run(scenario)


def test_headers_and_body_are_sent_in_one_request(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(send(ok())) as backend:
            response = await get(pool, backend, "/v1/x", "POST", b"{}", headers=[(b"x-a", b"1 2")])
            response.close()
            assert backend.requests == [
                b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: 2\r\nx-a: 1 2\r\n\r\n{}"
                % backend.port
            ]
            pool.close()

    run(scenario)


def test_no_headers_in_time_raises_timeout_error(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(never_answer) as backend:
            with pytest.raises(TimeoutError):
                await get(pool, backend, header_timeout=0.2)
            await until(lambda: backend.hangups == 1)  # the connection is dropped, not pooled
            pool.close()

    run(scenario)


def test_silence_in_the_middle_of_a_body_raises_timeout_error(run: Run) -> None:
    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        stalled = send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        async with Backend(stalled, send(ok(b"new"))) as backend:
            response = await get(pool, backend)
            chunks = response.chunks(idle_timeout=0.2)
            assert await anext(chunks) == b"abc"
            with pytest.raises(TimeoutError):
                await anext(chunks)
            response.close()
            assert await fetch(pool, backend) == (200, b"new")
            assert backend.accepts == 2  # the unfinished answer's connection was dropped
            pool.close()

    run(scenario)


def test_a_refused_connection_raises_os_error(run: Run) -> None:
    async def scenario() -> None:
        async with Backend() as backend:
            port = backend.port
        pool = ConnectionPool(connect_timeout=PATIENT)
        with pytest.raises(OSError):
            await pool.request("127.0.0.1", port, "GET", "/", [], b"", PATIENT)

    run(scenario)


def test_a_slow_reader_pauses_the_backend_and_still_gets_the_whole_body(run: Run) -> None:
    # Larger than the client's pause threshold plus what loopback socket buffers can hold.
    body = bytes(range(256)) * (48 * 1024 * 1024 // 256)
    sent = 0

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 256 * 1024):
            writer.write(body[start : start + 256 * 1024])
            await writer.drain()
            sent = start + 256 * 1024

    async def scenario() -> None:
        pool = ConnectionPool(connect_timeout=PATIENT)
        async with Backend(large) as backend:
            response = await get(pool, backend)
            # Read nothing until the backend is stuck: its writes wait for the paused client.
            before = -1
            while sent != before:
                before = sent
                await asyncio.sleep(0.3)
            assert sent < len(body)
            received = []
            async for chunk in response.chunks(PATIENT):
                assert len(chunk) <= 2 * PAUSE_ABOVE  # the buffer stayed near the threshold
                received.append(chunk)
                await asyncio.sleep(0.001)
            assert b"".join(received) == body
            response.close()
            pool.close()

    run(scenario)
