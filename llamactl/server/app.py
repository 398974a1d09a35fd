"""The ASGI application: a thin dispatcher in front of the Starlette routes.

``POST /v1/*`` and ``/llama-cpp/{name}/*`` go straight to the proxy (plain
ASGI, no middleware stack: it is the hot path); everything else is Starlette.
The dispatcher also guards the ``Host`` header when llamactl listens on
loopback (DNS rebinding) and checks the keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.errors import LlamactlError
from llamactl.instance.manager import InstanceManager
from llamactl.server.api_keys import Authenticator, AuthError
from llamactl.server.errors import HttpError, management_body, openai_body, retry_after
from llamactl.server.inference import InferenceProxy
from llamactl.server.management import ManagementApi, json_response
from llamactl.server.openapi import docs_page, openapi_document
from llamactl.server.upstream import (
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

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
PROXY_MARKER = "/proxy"


class ModelEntry(msgspec.Struct):
    id: str
    created: int
    status: str
    object: str = "model"
    owned_by: str = "llamactl"


class ModelList(msgspec.Struct):
    data: list[ModelEntry]
    object: str = "list"


class LlamactlApp:
    def __init__(
        self,
        manager: InstanceManager,
        auth: Authenticator,
        upstream: Upstream,
        inference: InferenceProxy,
        management: ManagementApi,
        bind_host: str,
        allowed_origins: list[str],
        allowed_headers: list[str],
    ) -> None:
        self.manager = manager
        self.auth = auth
        self.upstream = upstream
        self.inference = inference
        self.guard_host = bind_host in LOOPBACK_HOSTS
        routes = [
            *management.routes(),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/v1/docs", self.docs, methods=["GET"]),
        ]
        handled = (LlamactlError, HTTPException)
        starlette = Starlette(
            routes=routes, exception_handlers=dict.fromkeys(handled, self._management_error)
        )
        self._starlette = starlette
        self._cors: Callable[[Scope, Receive, Send], Awaitable[None]] = CORSMiddleware(
            app=self._dispatch,
            allow_origins=allowed_origins,
            allow_headers=allowed_headers,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            max_age=300,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._starlette(scope, receive, send)
        elif any(name == b"origin" for name, _ in scope["headers"]):
            await self._cors(scope, receive, send)
        else:
            # No Origin, no CORS: skip the middleware's per-message wrapper on the hot path.
            await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.guard_host and not _host_allowed(scope):
            error = HttpError(400, "invalid_host", "the Host header names no loopback address")
            await send_error(send, error, management_body)
        elif path.startswith("/v1/") and scope["method"] == "POST":
            await self.inference.openai(scope, receive, send)
        elif path.startswith("/llama-cpp/"):
            name, _, rest = path.removeprefix("/llama-cpp/").partition("/")
            await self.inference.llama_cpp(scope, receive, send, name, "/" + rest)
        elif path.startswith("/api/v1/"):
            if not self._management_allowed(scope):
                await send_error(
                    send, HttpError(401, "unauthorized", "a management key is required"), management_body
                )
            elif path.startswith("/api/v1/instances/") and PROXY_MARKER in path:
                await self._instance_proxy(scope, receive, send, path)
            else:
                await self._starlette(scope, receive, send)
        else:
            await self._starlette(scope, receive, send)

    def _management_allowed(self, scope: Scope) -> bool:
        if scope["method"] == "OPTIONS":
            return True
        try:
            self.auth.authenticate_management(*key_headers(scope))
        except AuthError:
            return False
        return True

    async def _instance_proxy(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """``/api/v1/instances/{name}/proxy/*``: straight to the backend's own API; never starts it."""
        name, _, rest = path.removeprefix("/api/v1/instances/").partition(PROXY_MARKER)
        try:
            body = await read_body(receive, self.inference.max_body_bytes)
            async with self.manager.lease(name, on_demand=False) as leased:
                target = Target(leased.host, leased.port, with_query(rest or "/", scope))
                await self.upstream.forward(scope, receive, send, target, body, [], management_body)
        except LlamactlError as error:
            await send_error(send, error, management_body)

    async def models(self, request: Request) -> Response:
        """Every instance the key may use, stopped ones included, with its status."""
        try:
            principal = self.auth.authenticate_inference(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except AuthError as error:
            return Response(openai_body(error), status_code=error.status, media_type="application/json")
        entries = [
            ModelEntry(id=info.name, created=info.created, status=info.status.value)
            for info in self.manager.list_instances()
            if self.auth.can_use(principal, info.name)
        ]
        return json_response(ModelList(data=entries))

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document())

    async def docs(self, request: Request) -> Response:
        return Response(docs_page(), media_type="text/html")

    async def _management_error(self, request: Request, error: Exception) -> Response:
        if isinstance(error, HTTPException):
            http_error: LlamactlError = HttpError(
                error.status_code, "not_found" if error.status_code == 404 else "error", error.detail
            )
        else:
            assert isinstance(error, LlamactlError)  # the only other type registered above
            http_error = error
        return Response(
            management_body(http_error),
            status_code=http_error.status,
            media_type="application/json",
            headers=retry_after(http_error),
        )


def _host_allowed(scope: Scope) -> bool:
    host = next((value for name, value in scope["headers"] if name == b"host"), b"").decode("latin-1")
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.rpartition(":")[0] if ":" in host else host
    return hostname in LOOPBACK_HOSTS
