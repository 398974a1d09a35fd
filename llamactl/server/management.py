"""The management API (``/api/v1``), compatible with the Go llamactl's paths and JSON shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from llamactl import __version__
from llamactl.backends import get_backend, parse_command
from llamactl.instance.manager import InstanceManager, ReconcileReport
from llamactl.instance.options import instance_options_from_json
from llamactl.server.api_keys import ApiKeyInfo, ApiKeyStore, CreateKeyRequest
from llamactl.server.errors import HttpError
from llamactl.server.upstream import ClientGone, read_body

MANAGEMENT_BODY_LIMIT = 1024 * 1024
BACKEND_COMMAND_TIMEOUT = 30.0
DEFAULT_LOG_LINES = 100

T = TypeVar("T")


class ParseCommandRequest(msgspec.Struct, forbid_unknown_fields=True):
    command: str


class KeyPermission(msgspec.Struct):
    instance_id: int
    instance_name: str


class CreatedKey(ApiKeyInfo, frozen=True, kw_only=True):
    key: str
    """Shown once, here; only its hash is stored."""


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def read_json(request: Request, body_type: type[T]) -> T:
    try:
        body = await read_body(request.receive, MANAGEMENT_BODY_LIMIT)
    except ClientGone:
        raise HttpError(400, "client_gone", "the client disconnected before its body was read") from None
    try:
        return msgspec.json.decode(body, type=body_type, strict=False)
    except msgspec.ValidationError as error:
        raise HttpError(400, "invalid_request", str(error)) from None
    except msgspec.DecodeError as error:
        raise HttpError(400, "invalid_json", f"the body is not valid JSON: {error}") from None


class ManagementApi:
    def __init__(
        self,
        manager: InstanceManager,
        keys: ApiKeyStore,
        config_view: Callable[[], dict[str, Any]],
        reload: Callable[[], Awaitable[ReconcileReport]],
        backend_commands: dict[str, list[str]],
    ) -> None:
        self.manager = manager
        self.keys = keys
        self.config_view = config_view
        self.reload = reload
        self.backend_commands = backend_commands
        """The configured executable (and leading args) per backend config key."""

    def routes(self) -> list[Route]:
        instance = "/api/v1/instances/{name}"
        return [
            Route("/api/v1/version", self.version, methods=["GET"]),
            Route("/api/v1/config", self.config, methods=["GET"]),
            Route("/api/v1/config/reload", self.reload_config, methods=["POST"]),
            Route("/api/v1/instances", self.list_instances, methods=["GET"]),
            Route(instance, self.get_instance, methods=["GET"]),
            Route(instance, self.create_instance, methods=["POST"]),
            Route(instance, self.update_instance, methods=["PUT"]),
            Route(instance, self.delete_instance, methods=["DELETE"]),
            Route(instance + "/start", self.start_instance, methods=["POST"]),
            Route(instance + "/stop", self.stop_instance, methods=["POST"]),
            Route(instance + "/restart", self.restart_instance, methods=["POST"]),
            Route(instance + "/logs", self.logs, methods=["GET"]),
            Route("/api/v1/backends/{backend}/parse-command", self.parse_command, methods=["POST"]),
            Route("/api/v1/backends/{backend}/version", self.backend_version, methods=["GET"]),
            Route("/api/v1/backends/{backend}/help", self.backend_help, methods=["GET"]),
            Route("/api/v1/auth/keys", self.create_key, methods=["POST"]),
            Route("/api/v1/auth/keys", self.list_keys, methods=["GET"]),
            Route("/api/v1/auth/keys/{id:int}", self.get_key, methods=["GET"]),
            Route("/api/v1/auth/keys/{id:int}", self.delete_key, methods=["DELETE"]),
            Route("/api/v1/auth/keys/{id:int}/permissions", self.key_permissions, methods=["GET"]),
        ]

    # ---------------------------------------------------------------- system

    async def version(self, request: Request) -> Response:
        return PlainTextResponse(f"Version: {__version__}\n")

    async def config(self, request: Request) -> Response:
        return json_response(self.config_view())

    async def reload_config(self, request: Request) -> Response:
        return json_response(await self.reload())

    # ---------------------------------------------------------------- instances

    async def list_instances(self, request: Request) -> Response:
        return json_response(self.manager.list_instances())

    async def get_instance(self, request: Request) -> Response:
        return json_response(self.manager.get(request.path_params["name"]))

    async def create_instance(self, request: Request) -> Response:
        options = instance_options_from_json(await read_json(request, dict[str, Any]))
        return json_response(self.manager.create(request.path_params["name"], options), status=201)

    async def update_instance(self, request: Request) -> Response:
        options = instance_options_from_json(await read_json(request, dict[str, Any]))
        return json_response(await self.manager.update(request.path_params["name"], options))

    async def delete_instance(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self.manager.delete(name)
        self.keys.forget_instance(name)
        return Response(status_code=204)

    async def start_instance(self, request: Request) -> Response:
        return json_response(await self.manager.start(request.path_params["name"]))

    async def stop_instance(self, request: Request) -> Response:
        return json_response(await self.manager.stop(request.path_params["name"]))

    async def restart_instance(self, request: Request) -> Response:
        return json_response(await self.manager.restart(request.path_params["name"]))

    async def logs(self, request: Request) -> Response:
        """The last ``lines`` lines as text; with ``follow=true``, then every new line as SSE."""
        name = request.path_params["name"]
        raw_lines = request.query_params.get("lines", str(DEFAULT_LOG_LINES))
        if not raw_lines.isdigit():
            raise HttpError(400, "invalid_parameter", f"lines must be a whole number; got {raw_lines!r}")
        tail = self.manager.log_tail(name, int(raw_lines))
        if request.query_params.get("follow") not in ("1", "true"):
            return PlainTextResponse("\n".join(tail) + ("\n" if tail else ""))
        return StreamingResponse(
            _log_events(tail, self.manager.follow_log(name)),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
        )

    # ---------------------------------------------------------------- backends

    async def parse_command(self, request: Request) -> Response:
        body = await read_json(request, ParseCommandRequest)
        return json_response(parse_command(request.path_params["backend"], body.command))

    async def backend_version(self, request: Request) -> Response:
        return await self._run_backend(request.path_params["backend"], "--version")

    async def backend_help(self, request: Request) -> Response:
        return await self._run_backend(request.path_params["backend"], "--help")

    async def _run_backend(self, backend_name: str, flag: str) -> Response:
        backend = get_backend(backend_name)
        command = [*self.backend_commands[backend.config_key], flag]
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as error:
            raise HttpError(
                503,
                "backend_not_installed",
                f"cannot run {command[0]} ({error.strerror}): is {backend.program} installed?",
            ) from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), BACKEND_COMMAND_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise HttpError(504, "backend_timeout", f"{' '.join(command)} did not finish in time") from None
        if process.returncode != 0:
            raise HttpError(502, "backend_error", output.decode(errors="replace")[-2000:])
        return PlainTextResponse(output.decode(errors="replace"))

    # ---------------------------------------------------------------- API keys

    async def create_key(self, request: Request) -> Response:
        body = await read_json(request, CreateKeyRequest)
        names_by_id = {info.id: info.name for info in self.manager.list_instances()}
        for index, instance_id in enumerate(body.instance_ids):
            if instance_id not in names_by_id:
                raise HttpError(
                    400, "invalid_request", f"instance_ids[{index}]: no instance with ID {instance_id}"
                )
        body = msgspec.structs.replace(
            body, instances=[*body.instances, *(names_by_id[i] for i in body.instance_ids)], instance_ids=[]
        )
        info, key = self.keys.create(body, set(names_by_id.values()))
        return json_response(CreatedKey(**msgspec.structs.asdict(info), key=key), status=201)

    async def list_keys(self, request: Request) -> Response:
        return json_response(self.keys.list())

    async def get_key(self, request: Request) -> Response:
        return json_response(self.keys.get(request.path_params["id"]))

    async def key_permissions(self, request: Request) -> Response:
        """The instances a per_instance key may use, as the Go llamactl lists them."""
        info = self.keys.get(request.path_params["id"])
        ids_by_name = {instance.name: instance.id for instance in self.manager.list_instances()}
        permissions = [
            KeyPermission(instance_id=ids_by_name[name], instance_name=name)
            for name in info.instances
            if name in ids_by_name
        ]
        return json_response(permissions)

    async def delete_key(self, request: Request) -> Response:
        self.keys.delete(request.path_params["id"])
        return Response(status_code=204)


async def _log_events(tail: list[str], follow: AsyncIterator[str]) -> AsyncIterator[bytes]:
    for line in tail:
        yield b"data: " + line.encode() + b"\n\n"
    async for line in follow:
        yield b"data: " + line.encode() + b"\n\n"
