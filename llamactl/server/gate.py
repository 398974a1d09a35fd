"""The one gate every route passes: CORS, the cross-origin write rule, the key, the method.

Each route of the table belongs to a family, and the gate applies that
family's rules in this order, before the route's handler sees the request:

1. A CORS preflight (``OPTIONS`` with ``Origin`` and
   ``Access-Control-Request-Method``) is answered by CORS alone.
2. A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is
   present, is not the server's own, and is not allowed is refused with 403,
   whatever the auth setting: a web page can send such requests without
   asking first, and a management request chooses what runs on this machine.
3. The family's key is checked: a management key, an inference key (or a
   management key), or none for the public documents. Every method, OPTIONS
   included, so nothing unauthenticated reaches a backend.
4. The method must be one the route has (405 otherwise).

Before all of it, a request whose headers add up to more than
MAX_HEADER_BYTES is refused with 431 (uvicorn's httptools parser has no
limit of its own, and a backend would fail on them with a less useful answer).

``*`` in ``server.allowed_origins`` keeps the Go llamactl's configs working,
but only for a family that requires a key: it then lets other origins call
with a key they hold. For a family without auth it would let any page act on
this machine, so there only the origins listed by name count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum

import msgspec
from starlette.middleware.cors import CORSMiddleware

from llamactl.errors import HttpError, LlamactlError, echo
from llamactl.server.asgi import ClientGone, ErrorBody, Receive, Scope, Send, header, send_error
from llamactl.server.auth import Authenticator, Principal
from llamactl.server.errors import management_body, openai_body

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_MAX_AGE = 300
MAX_HEADER_BYTES = 64 * 1024

Handler = Callable[[Scope, Receive, Send, Principal], Awaitable[None]]
"""A route's endpoint: plain ASGI plus who is calling. It answers, or raises a
LlamactlError before its answer has started (the gate renders it)."""


class Family(StrEnum):
    MANAGEMENT = "management"
    """``/api/v1``: a management key; errors as ``{"error", "details"}``."""
    INFERENCE = "inference"
    """``/v1``, ``/llama-cpp``: an inference or management key; errors in OpenAI's shape."""
    PUBLIC = "public"
    """The API document and its page: no key, no secrets."""


def key_headers(scope: Scope) -> tuple[str | None, str | None]:
    """The ``Authorization`` and ``X-API-Key`` headers of a request, the only places a key is read from."""
    authorization = x_api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            x_api_key = value.decode("latin-1")
    return authorization, x_api_key


class Policy(msgspec.Struct, frozen=True):
    """One family's rules."""

    authenticate: Callable[[str | None, str | None], Principal]
    error_body: ErrorBody
    origins: frozenset[str]
    """Origins allowed besides the server's own; ``*`` only where a key is required."""


def policies(auth: Authenticator, allowed_origins: Iterable[str]) -> dict[Family, Policy]:
    configured = frozenset(allowed_origins)
    named = configured - {"*"}

    def management(authorization: str | None, x_api_key: str | None) -> Principal:
        auth.authenticate_management(authorization, x_api_key)
        return Principal(management=True)

    def public(authorization: str | None, x_api_key: str | None) -> Principal:
        return Principal()

    return {
        Family.MANAGEMENT: Policy(
            management, management_body, configured if auth.require_management else named
        ),
        Family.INFERENCE: Policy(
            auth.authenticate_inference, openai_body, configured if auth.require_inference else named
        ),
        Family.PUBLIC: Policy(public, management_body, configured),
    }


class Gate:
    """The ASGI app of one path of the route table: the family's rules, then the method's handler."""

    def __init__(self, policy: Policy, handlers: dict[str, Handler], allowed_headers: list[str]) -> None:
        self._policy = policy
        self._handlers = dict(handlers)
        if "GET" in self._handlers:
            self._handlers.setdefault("HEAD", self._handlers["GET"])
        self._allow = ", ".join(sorted(self._handlers)).encode()
        self._cors = CORSMiddleware(
            app=self._cross_origin,
            allow_origins=sorted(policy.origins),
            allow_methods=CORS_METHODS,
            allow_headers=allowed_headers,
            max_age=CORS_MAX_AGE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size, has_origin = _measure(scope["headers"])
        if size > MAX_HEADER_BYTES:
            error = HttpError(431, "headers_too_large", f"the headers are over {MAX_HEADER_BYTES} bytes")
            await send_error(send, error, self._policy.error_body)
        elif not has_origin:
            # No Origin, no CORS and nothing cross-origin: skip the middleware's per-message wrapper.
            await self._authorized(scope, receive, send)
        else:
            await self._cors(scope, receive, send)

    async def _cross_origin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in STATE_CHANGING:
            try:
                _check_origin(scope, self._policy.origins)
            except HttpError as error:
                await send_error(send, error, self._policy.error_body)
                return
        await self._authorized(scope, receive, send)

    async def _authorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self._policy
        method: str = scope["method"]
        try:
            principal = policy.authenticate(*key_headers(scope))
            handler = self._handlers.get(method)
            if handler is None:
                error = HttpError(405, "method_not_allowed", f"{echo(method)} is not a method of this route")
                await send_error(send, error, policy.error_body, [(b"allow", self._allow)])
                return
            await handler(scope, receive, send, principal)
        except ClientGone:
            return
        except LlamactlError as error:
            await send_error(send, error, policy.error_body)


def _measure(headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """The headers' size, and whether an Origin is among them: one pass, a plain loop."""
    total = 0
    origin = False
    for name, value in headers:
        total += len(name) + len(value)
        if name == b"origin":
            origin = True
    return total, origin


def _check_origin(scope: Scope, allowed: frozenset[str]) -> None:
    text = (header(scope, b"origin") or b"").decode("latin-1")
    if "*" in allowed or text in allowed:
        return
    # The server's own pages: the Origin's host and port are the Host the request was sent to.
    host = header(scope, b"host")
    if host is not None and text.partition("://")[2].lower() == host.decode("latin-1").lower():
        return
    raise HttpError(
        403,
        "origin_not_allowed",
        f"requests that change state are not accepted from origin {echo(text)} "
        "(add it to server.allowed_origins)",
    )
