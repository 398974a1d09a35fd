"""Keep a streamed request's connection alive while it waits for its instance.

A request may wait a minute for a start, a queue or a swap. Clients with a
read timeout give up on a silent connection, so a streamed request (``"stream":
true``) gets its answer's head at the first progress report and then an SSE
comment line per report (``: llamactl: starting qwen (12 s)``), which SSE
clients ignore. With ``send_loading_state`` it also gets the progress as
OpenAI-shaped ``reasoning_content`` deltas, for chat UIs that show them
(llama-swap's key).

Once the head is sent the status is 200 whatever happens next: a failure to
get the instance, or a backend that answers with an error, ends the stream
with an ``error`` event and no ``[DONE]``, as the OpenAI API does mid-stream.
"""

from __future__ import annotations

import time

import msgspec

from llamactl.instance.manager import WaitProgress
from llamactl.server.asgi import Send

SSE_HEAD = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class _Delta(msgspec.Struct):
    reasoning_content: str
    role: str = "assistant"


class _Choice(msgspec.Struct):
    delta: _Delta
    index: int = 0
    finish_reason: None = None


class _Chunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[_Choice]
    object: str = "chat.completion.chunk"


class WaitingStream:
    """The progress callback of one streamed request, and what it has already sent."""

    def __init__(self, send: Send, model: str, loading_state: bool) -> None:
        self._send = send
        self._model = model
        self._loading_state = loading_state
        self.head_sent = False

    async def report(self, progress: WaitProgress) -> None:
        if not self.head_sent:
            await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEAD})
            self.head_sent = True
        data = b": llamactl: " + progress.message.encode() + b"\n\n"
        if self._loading_state:
            chunk = _Chunk(
                id="llamactl-loading",
                created=int(time.time()),
                model=self._model,
                choices=[_Choice(_Delta(progress.message + "\n"))],
            )
            data += b"data: " + msgspec.json.encode(chunk) + b"\n\n"
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def fail(self, error_body: bytes) -> None:
        """End a stream whose head is sent with the error as its last event."""
        await self._send(
            {"type": "http.response.body", "body": b"data: " + error_body + b"\n\n", "more_body": False}
        )
