"""Every route that reaches a backend: ``POST /v1/*``, ``/llama-cpp/{name}/*`` and the instance proxy.

The gate has checked the key by the time a request gets here. Each route
then names its instance (from the body's ``model``, or from the path), checks
that the key may use it, builds the upstream target from the raw path,
takes a lease (which waits for a start, or a queue, as the manager decides)
and forwards while holding it, so the instance is not stopped mid-answer.

- ``/v1/*`` starts the instance on demand and rewrites ``model`` to what the
  backend expects, without re-serialising the rest of the body.
- ``/llama-cpp/{name}/*`` is llama-server's own API (``/props``, ``/slots``),
  for llama.cpp instances only, started on demand.
- ``/api/v1/instances/{name}/proxy/*`` is any backend's own API, for a
  management key, and never starts the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import msgspec

from llamactl.backends import BackendType, get_backend
from llamactl.errors import HttpError, LlamactlError, echo
from llamactl.instance.errors import InstanceNotFound
from llamactl.instance.manager import InstanceInfo, InstanceManager, Leased
from llamactl.server.asgi import (
    ErrorBody,
    Receive,
    Scope,
    Send,
    cancelled_when_client_leaves,
    header,
    read_body,
)
from llamactl.server.auth import Authenticator, Principal
from llamactl.server.errors import management_body, openai_body
from llamactl.server.json_body import decode_json, require_json
from llamactl.server.models import adapter_members, backend_model
from llamactl.server.request_outcome import CLIENT_CLOSED, OutcomeObserver, RequestOutcome, openai_endpoint
from llamactl.server.targets import origin_form, raw_path, split_raw
from llamactl.server.upstream import Exchange, Target, Upstream
from llamactl.server.waiting_stream import WaitingStream

# The top-level members of the body, each kept as its raw JSON bytes: only `model` is decoded.
RawBody = dict[str, msgspec.Raw]
STREAM_USAGE_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions"})
"""Where OpenAI's ``stream_options.include_usage`` applies."""
INLINE_DECODE_BYTES = 1024 * 1024
"""Bodies larger than this are decoded and checked in a worker thread, off the event loop."""


class Proxy:
    def __init__(
        self,
        manager: InstanceManager,
        auth: Authenticator,
        upstream: Upstream,
        max_body_bytes: int,
        response_headers: dict[str, list[tuple[bytes, bytes]]],
        send_loading_state: bool = False,
        observers: Sequence[OutcomeObserver] = (),
    ) -> None:
        self.manager = manager
        self.observers = tuple(observers)
        """Told each request's outcome: the metrics, the activity log."""
        self.auth = auth
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.response_headers = response_headers
        """Extra response headers per backend type (``backends.<name>.response_headers``)."""
        self.send_loading_state = send_loading_state
        """``instances.send_loading_state``: an instance's own setting wins."""

    async def openai(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``POST /v1/*``: to the instance the body's ``model`` names."""
        arrived = time.perf_counter()
        target = origin_form(raw_path(scope), scope["query_string"])
        require_json(header(scope, b"content-type"))
        body = await read_body(receive, self.max_body_bytes)
        if len(body) > INLINE_DECODE_BYTES:
            members = await asyncio.to_thread(decode_json, body, RawBody)
        else:
            members = decode_json(body, RawBody)
        requested = _model(members)
        name, _, sub_model = requested.partition("/")
        self._check_permission(principal, name, "model")
        try:
            info = self.manager.get(name)
            if sub_model:
                backend_model(info, sub_model)  # refused before any start
        except InstanceNotFound as error:
            raise HttpError(error.status, error.code, error.message, field="model") from None
        waiting = WaitingStream(send, requested, self._loading_state(info)) if _streamed(members) else None
        endpoint = openai_endpoint(scope["path"])
        observed = _Observed(arrived, scope, info, endpoint, requested, principal) if self.observers else None
        async with cancelled_when_client_leaves(receive), self._observing(observed):
            try:
                progress = waiting.report if waiting is not None else None
                async with self.manager.lease(name, progress=progress) as leased:
                    served = backend_model(leased.info, sub_model)
                    rewrite = served is not None and served != requested
                    if rewrite:
                        members["model"] = msgspec.Raw(msgspec.json.encode(served))
                    for member, value in adapter_members(leased.info, sub_model).items():
                        members[member] = msgspec.Raw(msgspec.json.encode(value))
                        rewrite = True
                    # The tokens of a stream are in its last event only when it is asked for: llamactl
                    # asks, counts them, and passes that event on only to a client that asked too.
                    hide_usage = (
                        waiting is not None
                        and endpoint in STREAM_USAGE_ENDPOINTS
                        and "stream_options" not in members
                        and get_backend(leased.info.options.backend_type.value).reports_stream_usage
                    )
                    if hide_usage:
                        members["stream_options"] = msgspec.Raw(b'{"include_usage":true}')
                    if rewrite or hide_usage:
                        body = msgspec.json.encode(members)
                    head_sent = waiting is not None and waiting.head_sent
                    await self._forward(
                        scope,
                        send,
                        leased,
                        target,
                        body,
                        observed,
                        head_sent=head_sent,
                        hide_usage=hide_usage,
                    )
            except LlamactlError as error:
                if waiting is None or not waiting.head_sent:
                    raise
                await waiting.fail(openai_body(error))  # the 200 is out: the error ends the stream
                if observed is not None:
                    observed.status = error.status

    def _loading_state(self, info: InstanceInfo) -> bool:
        configured = info.options.send_loading_state
        return self.send_loading_state if configured is None else configured

    async def llama_cpp(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``/llama-cpp/{name}/*``: llama-server's own endpoints, started on demand."""
        arrived = time.perf_counter()
        name, rest = _split(scope, b"/llama-cpp/")
        target = origin_form(rest, scope["query_string"])
        self._check_permission(principal, name, "name")
        info = self.manager.get(name)
        backend_type = info.options.backend_type
        if backend_type is not BackendType.LLAMA_CPP:
            raise HttpError(
                404,
                "not_found",
                f"instance {name!r} runs {backend_type.value}: /llama-cpp/ is for llama_cpp instances",
                field="name",
            )
        body = await read_body(receive, self.max_body_bytes)
        observed = (
            _Observed(arrived, scope, info, "/llama-cpp/*", None, principal) if self.observers else None
        )
        async with (
            cancelled_when_client_leaves(receive),
            self._observing(observed),
            self.manager.lease(name) as leased,
        ):
            await self._forward(scope, send, leased, target, body, observed)

    async def instance(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``/api/v1/instances/{name}/proxy/*``: the backend's own API; never starts the instance."""
        arrived = time.perf_counter()
        name, rest = _split(scope, b"/api/v1/instances/", b"proxy/")
        target = origin_form(rest, scope["query_string"])
        info = self.manager.get(name)  # 404 before the body is read
        body = await read_body(receive, self.max_body_bytes)
        observed = _Observed(arrived, scope, info, "/proxy/*", None, principal) if self.observers else None
        async with (
            cancelled_when_client_leaves(receive),
            self._observing(observed),
            self.manager.lease(name, on_demand=False) as leased,
        ):
            await self._forward(scope, send, leased, target, body, observed, management_body)

    def _check_permission(self, principal: Principal, name: str, field: str) -> None:
        if not self.auth.can_use(principal, name):
            raise HttpError(
                403, "permission_denied", f"this key may not use instance {echo(name)}", field=field
            )

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        leased: Leased,
        target: str,
        body: bytes,
        observed: _Observed | None,
        error_body: ErrorBody = openai_body,
        head_sent: bool = False,
        hide_usage: bool = False,
    ) -> None:
        if observed is not None:
            observed.admitted = time.perf_counter()
        extra_headers = self.response_headers.get(leased.info.options.backend_type.value, [])
        exchange = Exchange(status=200 if head_sent else 0)
        if observed is not None:
            observed.exchange = exchange  # before the forward: a client that leaves cancels it
        await self.upstream.forward(
            scope,
            send,
            Target(leased.host, leased.port, target),
            body,
            extra_headers,
            error_body,
            exchange,
            hide_usage,
        )

    @contextlib.asynccontextmanager
    async def _observing(self, observed: _Observed | None) -> AsyncIterator[None]:
        """Tell the observers how the request ended, however it ends."""
        if observed is None:
            yield
            return
        try:
            yield
        except LlamactlError as error:
            observed.status = error.status
            raise
        except asyncio.CancelledError:
            observed.status = CLIENT_CLOSED
            raise
        finally:
            outcome = observed.outcome()
            for observer in self.observers:
                observer(outcome)


class _Observed:
    """One request as it goes, for its ``RequestOutcome``."""

    def __init__(
        self,
        arrived: float,
        scope: Scope,
        info: InstanceInfo,
        endpoint: str,
        model: str | None,
        principal: Principal,
    ) -> None:
        self.arrived = arrived
        self.method: str = scope["method"]
        self.wall = time.time()
        self.info = info
        self.endpoint = endpoint
        self.model = model
        self.key_name = _key_name(principal)
        self.admitted: float | None = None
        self.exchange: Exchange | None = None
        self.status = 0
        """Set when the request ended without an answer from the backend (an error, the client left)."""

    def outcome(self) -> RequestOutcome:
        ended = time.perf_counter()
        exchange = self.exchange
        usage = exchange.usage if exchange is not None else None
        first_byte = exchange.first_byte if exchange is not None else None
        status = self.status or (exchange.status if exchange is not None else 0) or CLIENT_CLOSED
        return RequestOutcome(
            time=self.wall,
            instance=self.info.name,
            backend=self.info.options.backend_type.value,
            endpoint=self.endpoint,
            method=self.method,
            model=self.model,
            key_name=self.key_name,
            status=status,
            queue_wait_seconds=(self.admitted or ended) - self.arrived,
            ttfb_seconds=first_byte - self.arrived if first_byte is not None else None,
            streamed=exchange is not None and exchange.streamed,
            duration_seconds=ended - self.arrived,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
        )


def _key_name(principal: Principal) -> str | None:
    if principal.api_key is not None:
        return principal.api_key.name
    return "management" if principal.management else None


def _split(scope: Scope, prefix: bytes, marker: bytes = b"") -> tuple[str, bytes]:
    split = split_raw(raw_path(scope), prefix, marker)
    if split is None:
        # The decoded path matched the route, the raw one does not: an encoded '/' moved the parts.
        raise HttpError(404, "not_found", "no route matches the path as sent", field="path")
    return split


def _streamed(members: RawBody) -> bool:
    raw = members.get("stream")
    return raw is not None and bytes(raw).strip() == b"true"


def _model(members: RawBody) -> str:
    raw = members.get("model")
    model = msgspec.json.decode(raw) if raw is not None else None
    if not isinstance(model, str) or not model:
        raise HttpError(
            400,
            "invalid_request",
            "model is required: the name of an instance (or instance/model)",
            field="model",
        )
    return model
