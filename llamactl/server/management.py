"""The management API (``/api/v1``), compatible with the Go llamactl's paths and JSON shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from llamactl import __version__
from llamactl.backends import BACKENDS, Backend, get_backend, parse_command
from llamactl.errors import HttpError, echo
from llamactl.instance.from_catalogue import CATALOGUE_FIELD
from llamactl.instance.gpu_memory import GpuMemory, gpu_memory
from llamactl.instance.manager import InstanceManager, ReconcileReport
from llamactl.instance.memory_probe import SystemMemory, system_memory
from llamactl.instance.options import check_instance_name, instance_options_from_json
from llamactl.server.api_keys import ApiKeyInfo, ApiKeyStore, CreateKeyRequest
from llamactl.server.asgi import number_parameter, whole_number
from llamactl.server.json_body import json_response, read_json
from llamactl.server.models_api import ModelsApi

BACKEND_COMMAND_TIMEOUT = 30.0
DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 10_000
"""More lines than this per request are refused: the rest of a log is in its file."""
MAX_KEY_ID = 2**63 - 1
"""SQLite's largest INTEGER: a larger id names no key."""
T = TypeVar("T")


class SystemInfo(msgspec.Struct, frozen=True):
    memory: SystemMemory
    memory_budget_bytes: int | None
    """``instances.memory_budget`` in bytes; None: no memory admission."""
    gpus: list[GpuMemory]
    """Reported only: admission counts RAM (unified memory included), not GPU memory."""


class ParseCommandRequest(msgspec.Struct, forbid_unknown_fields=True):
    command: str


class KeyPermission(msgspec.Struct):
    instance_id: int
    instance_name: str


class CreatedKey(ApiKeyInfo, frozen=True, kw_only=True):
    key: str
    """Shown once, here; only its hash is stored."""


class ManagementApi:
    def __init__(
        self,
        manager: InstanceManager,
        keys: ApiKeyStore,
        config_view: Callable[[], dict[str, Any]],
        reload: Callable[[], Awaitable[ReconcileReport]],
        backend_commands: dict[str, list[str]],
        catalogue: ModelsApi,
    ) -> None:
        self.manager = manager
        self.catalogue = catalogue
        self.keys = keys
        self.config_view = config_view
        self.reload = reload
        self.backend_commands = backend_commands
        """The configured executable (and leading args) per backend config key."""

    # ---------------------------------------------------------------- system

    async def version(self, request: Request) -> Response:
        return PlainTextResponse(f"Version: {__version__}\n")

    async def config(self, request: Request) -> Response:
        return json_response(self.config_view())

    async def reload_config(self, request: Request) -> Response:
        return json_response(await self.reload())

    async def system(self, request: Request) -> Response:
        return json_response(
            SystemInfo(
                memory=system_memory(),
                memory_budget_bytes=self.manager.settings.limits.memory_budget,
                gpus=gpu_memory(),
            )
        )

    # ---------------------------------------------------------------- instances

    async def list_instances(self, request: Request) -> Response:
        return json_response(self.manager.list_instances())

    async def get_instance(self, request: Request) -> Response:
        return json_response(self.manager.get(request.path_params["name"]))

    async def create_instance(self, request: Request) -> Response:
        name = check_instance_name(request.path_params["name"])  # before the body is read
        body = await read_json(request, dict[str, Any])
        if CATALOGUE_FIELD in body:
            options = await self.catalogue.instance_options(body)
        else:
            options = instance_options_from_json(body)
        return json_response(self.manager.create(name, options), status=201)

    async def update_instance(self, request: Request) -> Response:
        name = request.path_params["name"]
        options = instance_options_from_json(await read_json(request, dict[str, Any]))
        return json_response(await self.manager.update(name, options))

    async def delete_instance(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self.manager.delete(name)
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
        lines = number_parameter(request.query_params.get("lines"), "lines", DEFAULT_LOG_LINES, MAX_LOG_LINES)
        self.manager.get(name)  # 404 here rather than in the worker thread
        # Reading rotated files can take a while: never on the event loop.
        tail = await asyncio.to_thread(self.manager.log_tail, name, lines)
        if request.query_params.get("follow") not in ("1", "true"):
            return PlainTextResponse("\n".join(tail) + ("\n" if tail else ""))
        return StreamingResponse(
            _log_events(tail, self.manager.follow_log(name)),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
        )

    # ---------------------------------------------------------------- backends

    async def parse_command(self, request: Request) -> Response:
        backend = _backend(request)
        body = await read_json(request, ParseCommandRequest)
        return json_response(parse_command(backend.config_key, body.command))

    async def backend_version(self, request: Request) -> Response:
        backend = _backend(request)
        return await self._run_backend(
            backend, backend.version_command(self.backend_commands[backend.config_key])
        )

    async def backend_options(self, request: Request) -> Response:
        """Every option of the backend's pinned version: its key, flags, kind and help."""
        return json_response(_backend(request).spec)

    async def backend_help(self, request: Request) -> Response:
        backend = _backend(request)
        return await self._run_backend(backend, [*self.backend_commands[backend.config_key], "--help"])

    async def _run_backend(self, backend: Backend, command: list[str]) -> Response:
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
        info, key = await self.keys.create(body)
        return json_response(CreatedKey(**msgspec.structs.asdict(info), key=key), status=201)

    async def list_keys(self, request: Request) -> Response:
        return json_response(self.keys.list())

    async def get_key(self, request: Request) -> Response:
        return json_response(self.keys.get(_key_id(request)))

    async def key_permissions(self, request: Request) -> Response:
        """The instances a per_instance key may use, as the Go llamactl lists them."""
        info = self.keys.get(_key_id(request))
        ids_by_name = {instance.name: instance.id for instance in self.manager.list_instances()}
        permissions = [
            KeyPermission(instance_id=ids_by_name[name], instance_name=name)
            for name in info.instances
            if name in ids_by_name
        ]
        return json_response(permissions)

    async def delete_key(self, request: Request) -> Response:
        await self.keys.delete(_key_id(request))
        return Response(status_code=204)


def _backend(request: Request) -> Backend:
    name: str = request.path_params["backend"]
    if not any(name in (backend.config_key, backend.backend_type.value) for backend in BACKENDS.values()):
        known = ", ".join(sorted(backend.config_key for backend in BACKENDS.values()))
        raise HttpError(
            400, "invalid_request", f"unknown backend {echo(name)}; known backends: {known}", field="backend"
        )
    return get_backend(name)


def _key_id(request: Request) -> int:
    # Parsed here, not by a path convertor: int() of a 5000-digit string raises.
    text: str = request.path_params["id"]
    key_id = whole_number(text, MAX_KEY_ID)
    if key_id is None:
        raise HttpError(404, "not_found", f"no API key with id {echo(text)}", field="id")
    return key_id


async def _log_events(tail: list[str], follow: AsyncIterator[str]) -> AsyncIterator[bytes]:
    for line in tail:
        yield b"data: " + line.encode() + b"\n\n"
    async for line in follow:
        yield b"data: " + line.encode() + b"\n\n"
