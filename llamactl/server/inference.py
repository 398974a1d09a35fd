"""The OpenAI-compatible proxy (``POST /v1/*``) and llama-server's native routes (``/llama-cpp/{name}/*``).

A request names its instance in ``model`` (``instance`` or ``instance/model``
for backends that serve several); llamactl checks the key's permission,
starts the instance on demand (one start however many requests wait), holds
a lease while the answer streams, and rewrites ``model`` to what the backend
expects without re-serialising the rest of the body.
"""

from __future__ import annotations

import msgspec

from llamactl.errors import LlamactlError
from llamactl.instance.manager import InstanceManager, Leased
from llamactl.server.api_keys import Authenticator, Principal
from llamactl.server.errors import HttpError, openai_body
from llamactl.server.upstream import (
    ClientGone,
    Receive,
    Scope,
    Send,
    Target,
    Upstream,
    key_headers,
    read_body,
    send_error,
    with_query,
)

# The top-level members of the body, each kept as its raw JSON bytes: only `model` is decoded.
RawBody = dict[str, msgspec.Raw]


class InferenceProxy:
    def __init__(
        self,
        manager: InstanceManager,
        auth: Authenticator,
        upstream: Upstream,
        max_body_bytes: int,
        response_headers: dict[str, list[tuple[bytes, bytes]]],
    ) -> None:
        self.manager = manager
        self.auth = auth
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.response_headers = response_headers
        """Extra response headers per backend type (``backends.<name>.response_headers``)."""

    async def openai(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = self._principal(scope)
            body = await read_body(receive, self.max_body_bytes)
            members = _json_object(body)
            requested = _model(members)
            name, _, sub_model = requested.partition("/")
            self._check_permission(principal, name)
            async with self.manager.lease(name) as leased:
                info = leased.info
                served = sub_model or info.served_model
                if served is not None and served != requested:
                    members["model"] = msgspec.Raw(msgspec.json.encode(served))
                    body = msgspec.json.encode(members)
                await self._forward(scope, receive, send, leased, scope["path"], body)
        except ClientGone:
            return
        except LlamactlError as error:
            await send_error(send, error, openai_body)

    async def llama_cpp(self, scope: Scope, receive: Receive, send: Send, name: str, path: str) -> None:
        """llama-server's own endpoints (``/props``, ``/slots``, ``/completion``, …), started on demand."""
        try:
            principal = self._principal(scope)
            self._check_permission(principal, name)
            body = await read_body(receive, self.max_body_bytes)
            async with self.manager.lease(name) as leased:
                await self._forward(scope, receive, send, leased, path, body)
        except ClientGone:
            return
        except LlamactlError as error:
            await send_error(send, error, openai_body)

    def _principal(self, scope: Scope) -> Principal:
        return self.auth.authenticate_inference(*key_headers(scope))

    def _check_permission(self, principal: Principal, name: str) -> None:
        if not self.auth.can_use(principal, name):
            raise HttpError(403, "permission_denied", f"this key may not use instance {name!r}")

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, leased: Leased, path: str, body: bytes
    ) -> None:
        target = Target(leased.host, leased.port, with_query(path, scope))
        extra_headers = self.response_headers.get(leased.info.options.backend_type.value, [])
        await self.upstream.forward(scope, receive, send, target, body, extra_headers, openai_body)


def _json_object(body: bytes) -> RawBody:
    try:
        return msgspec.json.decode(body, type=RawBody)
    except msgspec.DecodeError as error:
        raise HttpError(400, "invalid_request", f"the body must be a JSON object: {error}") from None


def _model(members: RawBody) -> str:
    raw = members.get("model")
    model = msgspec.json.decode(raw) if raw is not None else None
    if not isinstance(model, str) or not model:
        raise HttpError(
            400, "invalid_request", "model is required: the name of an instance (or instance/model)"
        )
    return model
