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

import msgspec

from llamactl.backends import BackendType
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
from llamactl.server.models import backend_model
from llamactl.server.targets import origin_form, raw_path, split_raw
from llamactl.server.upstream import Target, Upstream
from llamactl.server.waiting_stream import WaitingStream

# The top-level members of the body, each kept as its raw JSON bytes: only `model` is decoded.
RawBody = dict[str, msgspec.Raw]
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
    ) -> None:
        self.manager = manager
        self.auth = auth
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.response_headers = response_headers
        """Extra response headers per backend type (``backends.<name>.response_headers``)."""
        self.send_loading_state = send_loading_state
        """``instances.send_loading_state``: an instance's own setting wins."""

    async def openai(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``POST /v1/*``: to the instance the body's ``model`` names."""
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
        async with cancelled_when_client_leaves(receive):
            try:
                progress = waiting.report if waiting is not None else None
                async with self.manager.lease(name, progress=progress) as leased:
                    served = backend_model(leased.info, sub_model)
                    if served is not None and served != requested:
                        members["model"] = msgspec.Raw(msgspec.json.encode(served))
                        body = msgspec.json.encode(members)
                    head_sent = waiting is not None and waiting.head_sent
                    await self._forward(scope, send, leased, target, body, head_sent=head_sent)
            except LlamactlError as error:
                if waiting is None or not waiting.head_sent:
                    raise
                await waiting.fail(openai_body(error))  # the 200 is out: the error ends the stream

    def _loading_state(self, info: InstanceInfo) -> bool:
        configured = info.options.send_loading_state
        return self.send_loading_state if configured is None else configured

    async def llama_cpp(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``/llama-cpp/{name}/*``: llama-server's own endpoints, started on demand."""
        name, rest = _split(scope, b"/llama-cpp/")
        target = origin_form(rest, scope["query_string"])
        self._check_permission(principal, name, "name")
        backend_type = self.manager.get(name).options.backend_type
        if backend_type is not BackendType.LLAMA_CPP:
            raise HttpError(
                404,
                "not_found",
                f"instance {name!r} runs {backend_type.value}: /llama-cpp/ is for llama_cpp instances",
                field="name",
            )
        body = await read_body(receive, self.max_body_bytes)
        async with cancelled_when_client_leaves(receive), self.manager.lease(name) as leased:
            await self._forward(scope, send, leased, target, body)

    async def instance(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """``/api/v1/instances/{name}/proxy/*``: the backend's own API; never starts the instance."""
        name, rest = _split(scope, b"/api/v1/instances/", b"proxy/")
        target = origin_form(rest, scope["query_string"])
        self.manager.get(name)  # 404 before the body is read
        body = await read_body(receive, self.max_body_bytes)
        async with cancelled_when_client_leaves(receive), self.manager.lease(name, on_demand=False) as leased:
            await self._forward(scope, send, leased, target, body, management_body)

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
        error_body: ErrorBody = openai_body,
        head_sent: bool = False,
    ) -> None:
        extra_headers = self.response_headers.get(leased.info.options.backend_type.value, [])
        await self.upstream.forward(
            scope, send, Target(leased.host, leased.port, target), body, extra_headers, error_body, head_sent
        )


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
