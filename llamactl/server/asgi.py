"""Plain-ASGI building blocks for the downstream side: types, the body reader, error answers.

The hot paths (the gate, the proxy) speak raw ASGI instead of Starlette's
Request and Response, so that a proxied request costs a few dict look-ups
on top of the forwarding itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar

from llamactl.errors import HttpError, LlamactlError, echo
from llamactl.server.errors import retry_after

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ErrorBody = Callable[[LlamactlError], bytes]
"""Renders an error in one family's shape (``management_body`` or ``openai_body``)."""
Default = TypeVar("Default", int, None)


class ClientGone(Exception):
    """The client disconnected before its request was read: there is nobody to answer."""


def whole_number(text: str, maximum: int) -> int | None:
    """``text`` as a whole number from 0 to ``maximum``, or None.

    ASCII digits only (``"²".isdigit()`` is True, and int() refuses it), and
    no longer than ``maximum`` is, so int() never parses thousands of digits.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(maximum)) or int(text) > maximum:
        return None
    return int(text)


def number_parameter(text: str | None, name: str, default: Default, maximum: int) -> int | Default:
    """A query parameter that is a whole number from 0 to ``maximum``, ``default`` when absent;
    anything else is a 400 that names the parameter."""
    if text is None:
        return default
    number = whole_number(text, maximum)
    if number is None:
        raise HttpError(
            400,
            "invalid_parameter",
            f"{name} must be a whole number from 0 to {maximum}; got {echo(text)}",
            field=name,
        )
    return number


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a (lower-case) request header."""
    for key, value in scope["headers"]:
        if key == name:
            value_bytes: bytes = value
            return value_bytes
    return None


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


async def send_whole(
    send: Send,
    body: bytes,
    content_type: bytes = b"application/json",
    status: int = 200,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """An answer held whole in memory: its head with the length, then its body."""
    start = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, error: LlamactlError, error_body: ErrorBody, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    waits = [(name.encode(), value.encode()) for name, value in retry_after(error).items()]
    await send_whole(send, error_body(error), status=error.status, headers=[*waits, *headers])


@contextlib.asynccontextmanager
async def cancelled_when_client_leaves(receive: Receive) -> AsyncIterator[None]:
    """Cancel the request's task as soon as its client disconnects, and end it quietly then.

    For a request whose body is read: from then on ``receive`` only says that
    the client left. Around the wait for an instance as well as the
    forwarding, so a request that leaves while queued leaves the queue at once.
    Only our own cancel is swallowed: any other (a shutdown) goes on.
    """
    task = asyncio.current_task()
    assert task is not None  # ASGI apps run in a task
    watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, task))
    try:
        yield
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and task.uncancel() == 0:
            return
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any]) -> bool:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()  # the request's task: its `finally` blocks leave the queue and close upstream
            return True
