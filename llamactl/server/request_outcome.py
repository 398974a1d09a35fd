"""What one proxied request came to: the record the metrics count and the activity log keeps.

Made by the proxy once the request's instance is known, whatever the end: an
answer, an error, a client that left. Its labels are bounded: an instance that
exists, a known endpoint (``/v1/other`` for the rest), a status code; never
the prompt, the answer or the key itself.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

CLIENT_CLOSED = 499
"""The status recorded when the client left before its answer ended (nginx's convention)."""
OPENAI_ENDPOINTS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/rerank",
        "/v1/reranking",
        "/v1/messages",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/images/generations",
        "/v1/moderations",
    }
)


class RequestOutcome(msgspec.Struct, frozen=True, kw_only=True):
    time: float
    """Unix seconds when the request arrived."""
    instance: str
    backend: str
    endpoint: str
    """``/v1/chat/completions`` and the like, ``/v1/other``, ``/llama-cpp/*`` or ``/proxy/*``."""
    method: str
    model: str | None
    """The ``model`` the client asked for (``/v1`` only)."""
    key_name: str | None
    """The API key's name, ``management`` for a management key, None when no key is needed."""
    status: int
    queue_wait_seconds: float
    """From the request's arrival to its admission (a start or a queue included)."""
    ttfb_seconds: float | None
    """To the first byte of the answer's body; None when none was sent."""
    streamed: bool = False
    """An event stream: ``ttfb_seconds`` is the time to the first token."""
    duration_seconds: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


OutcomeObserver = Callable[[RequestOutcome], None]
"""Called on the event loop for every outcome: must only record, never wait."""


def openai_endpoint(path: str) -> str:
    return path if path in OPENAI_ENDPOINTS else "/v1/other"
