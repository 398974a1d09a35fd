"""The one route table: every path, its methods, its family, its handler and what it takes and returns.

Starlette's router matches the paths (raw ASGI endpoints, no middleware
stack); the gate applies each family's rules; the OpenAPI document and the
docs page are rendered from this same table, so they cannot drift from it.
Hot paths come first: the router tries the routes in order.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from llamactl.backends import ParsedCommand
from llamactl.backends.cli_spec import CliSpec
from llamactl.deploy.request import DeployAnswer, DeployRequest
from llamactl.errors import HttpError
from llamactl.instance.manager import InstanceInfo, ReconcileReport
from llamactl.instance.options import InstanceOptions
from llamactl.models.download_request import DownloadRequest
from llamactl.models.downloads import DownloadJob
from llamactl.server.activity import ActivityList, ActivityLog
from llamactl.server.api_keys import ApiKeyInfo, CreateKeyRequest
from llamactl.server.asgi import Receive, Scope, Send, send_error
from llamactl.server.auth import Principal
from llamactl.server.deploy_api import DeployApi
from llamactl.server.errors import management_body
from llamactl.server.events_stream import EventsStream
from llamactl.server.export_api import ExportApi
from llamactl.server.gate import Family, Gate, Handler, Policy
from llamactl.server.health import Health, HealthStatus
from llamactl.server.history_api import HistoryApi, InstanceHistory, SmokeRequest
from llamactl.server.management import (
    CreatedKey,
    KeyPermission,
    ManagementApi,
    ParseCommandRequest,
    SystemInfo,
)
from llamactl.server.metrics import Metrics
from llamactl.server.models import ModelList, ModelListing
from llamactl.server.models_api import (
    CatalogueModel,
    CatalogueModelDetails,
    DownloadJobList,
    DownloadStarted,
    ModelsApi,
)
from llamactl.server.openapi import ApiDocs
from llamactl.server.proxy import Proxy
from llamactl.server.web_ui import WebUi
from llamactl.store import SmokeEntry

PROXIED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""What the pass-through routes forward; anything else (TRACE, CONNECT, WebDAV) is a 405."""
JSON = "application/json"
TEXT = "text/plain"
SSE = "text/event-stream"
BACKEND = "*/*"
"""Whatever the backend answers."""


class InferenceRequest(msgspec.Struct):
    """An OpenAI-style request body; every other member goes to the backend unchanged."""

    model: str
    """An instance name, or ``instance/model`` for a model the instance declares."""


class QueryParam(msgspec.Struct, frozen=True):
    name: str
    type: str
    """A JSON Schema type: ``integer``, ``boolean``, ``string``."""
    description: str


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the table: one path and the methods one handler serves there."""

    path: str
    methods: tuple[str, ...]
    family: Family
    handler: Handler
    operation: str
    """The OpenAPI operationId (suffixed with the method when the row has several)."""
    summary: str
    request: Any = None
    """The msgspec type of the JSON body, if the route takes one."""
    response: Any = None
    """The msgspec type of the JSON answer, if it has one."""
    status: int = 200
    media: tuple[str, ...] = (JSON,)
    """Media types of the answer."""
    errors: tuple[int, ...] = ()
    """Error statuses besides those every route of the family has."""
    integer_params: tuple[str, ...] = ()
    """Path parameters that are whole numbers (matched as text, parsed by the handler)."""
    query: tuple[QueryParam, ...] = ()


def respond(endpoint: Callable[[Request], Awaitable[Response]]) -> Handler:
    """A Starlette-style ``request -> response`` function as a table handler."""

    async def handler(scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    return handler


class Apis(msgspec.Struct, frozen=True, kw_only=True):
    """Every handler the table routes to, as the service wires them."""

    management: ManagementApi
    proxy: Proxy
    models: ModelListing
    catalogue: ModelsApi
    deploy: DeployApi
    export: ExportApi
    history: HistoryApi
    activity: ActivityLog
    metrics: Metrics
    health: Health
    metrics_public: bool = False
    """``metrics.public``: /metrics without a key, for a scraper on the same host."""


def route_table(apis: Apis) -> list[Endpoint]:
    management, proxy, models, catalogue, activity = (
        apis.management,
        apis.proxy,
        apis.models,
        apis.catalogue,
        apis.activity,
    )
    instance = "/api/v1/instances/{name}"
    mgmt = Family.MANAGEMENT
    docs = ApiDocs(lambda: table)
    ui = WebUi()
    table = [
        Endpoint(
            path="/v1/models",
            methods=("GET",),
            family=Family.INFERENCE,
            handler=models.list_models,
            operation="list_models",
            summary="Every instance the key may use, with its status (OpenAI's model list)",
            response=ModelList,
        ),
        Endpoint(
            path="/v1/{path:path}",
            methods=("POST",),
            family=Family.INFERENCE,
            handler=proxy.openai,
            operation="openai",
            summary="OpenAI-compatible inference, routed by model; started on demand",
            request=InferenceRequest,
            media=(JSON, SSE),
            errors=(400, 403, 404, 413, 429, 502, 503, 504),
        ),
        Endpoint(
            path="/llama-cpp/{name}/{path:path}",
            methods=PROXIED_METHODS,
            family=Family.INFERENCE,
            handler=proxy.llama_cpp,
            operation="llama_cpp",
            summary="llama-server's own API of a llama.cpp instance; started on demand",
            media=(BACKEND,),
            errors=(400, 403, 404, 413, 429, 502, 503, 504),
        ),
        Endpoint(
            path=instance + "/proxy/{path:path}",
            methods=PROXIED_METHODS,
            family=mgmt,
            handler=proxy.instance,
            operation="instance_proxy",
            summary="The backend's own API of a running instance; never starts it",
            media=(BACKEND,),
            errors=(400, 404, 413, 502, 503, 504),
        ),
        Endpoint(
            path="/metrics",
            methods=("GET",),
            family=Family.PUBLIC if apis.metrics_public else mgmt,
            handler=apis.metrics.endpoint,
            operation="metrics",
            summary="Prometheus metrics: requests, queue waits, TTFT, tokens, lifecycle, memory, the process",
            media=(TEXT,),
        ),
        Endpoint(
            path="/healthz",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=apis.health.alive,
            operation="healthz",
            summary="llamactl is alive",
            response=HealthStatus,
        ),
        Endpoint(
            path="/readyz",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=apis.health.ready,
            operation="readyz",
            summary="llamactl has booted and serves (503 while it starts or stops)",
            response=HealthStatus,
            errors=(503,),
        ),
        Endpoint(
            path="/api/v1/openapi.json",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=docs.openapi,
            operation="openapi",
            summary="This document",
        ),
        Endpoint(
            path="/api/v1/docs",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=docs.page,
            operation="docs",
            summary="Every route, as a page",
            media=("text/html",),
        ),
        Endpoint(
            path="/api/v1/version",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.version),
            operation="version",
            summary="llamactl's version",
            media=(TEXT,),
        ),
        Endpoint(
            path="/api/v1/config",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.config),
            operation="get_config",
            summary="The configuration, secrets removed",
            response=dict[str, Any],
        ),
        Endpoint(
            path="/api/v1/config/reload",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.reload_config),
            operation="reload_config",
            summary="Reconcile the config file's models:",
            response=ReconcileReport,
            errors=(400, 409),
        ),
        Endpoint(
            path="/api/v1/instances",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.list_instances),
            operation="list_instances",
            summary="Every instance",
            response=list[InstanceInfo],
        ),
        Endpoint(
            path=instance,
            methods=("GET",),
            family=mgmt,
            handler=respond(management.get_instance),
            operation="get_instance",
            summary="One instance",
            response=InstanceInfo,
            errors=(404,),
        ),
        Endpoint(
            path=instance,
            methods=("POST",),
            family=mgmt,
            handler=respond(management.create_instance),
            operation="create_instance",
            summary="Create an instance (stopped); with {'model': catalogue id} one serving that model",
            request=InstanceOptions,
            response=InstanceInfo,
            status=201,
            errors=(400, 409, 413),
        ),
        Endpoint(
            path=instance,
            methods=("PUT",),
            family=mgmt,
            handler=respond(management.update_instance),
            operation="update_instance",
            summary="Replace an instance's options",
            request=InstanceOptions,
            response=InstanceInfo,
            errors=(400, 404, 409, 413),
        ),
        Endpoint(
            path=instance,
            methods=("DELETE",),
            family=mgmt,
            handler=respond(management.delete_instance),
            operation="delete_instance",
            summary="Delete a stopped instance",
            status=204,
            media=(),
            errors=(404, 409),
        ),
        Endpoint(
            path=instance + "/start",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.start_instance),
            operation="start_instance",
            summary="Start and wait until ready",
            response=InstanceInfo,
            errors=(404, 429, 503, 504),
        ),
        Endpoint(
            path=instance + "/stop",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.stop_instance),
            operation="stop_instance",
            summary="Stop",
            response=InstanceInfo,
            errors=(404,),
        ),
        Endpoint(
            path=instance + "/restart",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.restart_instance),
            operation="restart_instance",
            summary="Restart",
            response=InstanceInfo,
            errors=(404, 429, 503, 504),
        ),
        Endpoint(
            path=instance + "/logs",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.logs),
            operation="instance_logs",
            summary="The last ?lines=N lines (at most 10000); ?follow=true streams new ones as SSE",
            media=(TEXT, SSE),
            errors=(400, 404),
            query=(
                QueryParam("lines", "integer", "How many of the last lines (default 100, at most 10000)"),
                QueryParam("follow", "boolean", "Then stream every new line as SSE"),
            ),
        ),
        Endpoint(
            path=instance + "/smoke",
            methods=("POST",),
            family=mgmt,
            handler=respond(apis.history.smoke),
            operation="smoke_instance",
            summary="Start the instance's command on another loopback port, ask one chat, stop it, and "
            "record the outcome in its history (200 either way: ok says which)",
            request=SmokeRequest,
            response=SmokeEntry,
            errors=(404, 409),
        ),
        Endpoint(
            path=instance + "/export",
            methods=("GET",),
            family=mgmt,
            handler=respond(apis.export.export),
            operation="export_instance",
            summary="What reproduces the instance without llamactl, as a gzipped tar: a launch script on "
            "127.0.0.1, its adapters, vLLM's config or an Ollama Modelfile, and export_manifest.json",
            media=("application/gzip",),
            errors=(400, 404, 422),
            query=(
                QueryParam(
                    "target", "string", "llama-server or ollama (llama_cpp), vllm, mlx-serve (mlx_lm)"
                ),
            ),
        ),
        Endpoint(
            path=instance + "/history",
            methods=("GET",),
            family=mgmt,
            handler=respond(apis.history.history),
            operation="instance_history",
            summary="The instance's starts (with the executable and its --version) and smoke checks",
            response=InstanceHistory,
            errors=(404,),
        ),
        Endpoint(
            path="/api/v1/events",
            methods=("GET",),
            family=mgmt,
            handler=respond(EventsStream(management.manager.events).events),
            operation="events",
            summary="Instance transitions with their reasons, and queue changes, as SSE (Last-Event-ID)",
            media=(SSE,),
            errors=(400,),
            query=(QueryParam("since", "integer", "Resume after this event id (as Last-Event-ID does)"),),
        ),
        Endpoint(
            path="/api/v1/backends/{backend}/parse-command",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.parse_command),
            operation="parse_command",
            summary="Turn a pasted command into instance options",
            request=ParseCommandRequest,
            response=ParsedCommand,
            errors=(400, 413),
        ),
        Endpoint(
            path="/api/v1/backends/{backend}/options",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.backend_options),
            operation="backend_options",
            summary="Every option llamactl knows for the backend: key, flags, kind, choices and help",
            response=CliSpec,
            errors=(400,),
        ),
        Endpoint(
            path="/api/v1/backends/{backend}/version",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.backend_version),
            operation="backend_version",
            summary="The backend's --version",
            media=(TEXT,),
            errors=(400, 502, 503, 504),
        ),
        Endpoint(
            path="/api/v1/backends/{backend}/help",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.backend_help),
            operation="backend_help",
            summary="The backend's --help",
            media=(TEXT,),
            errors=(400, 502, 503, 504),
        ),
        Endpoint(
            path="/api/v1/auth/keys",
            methods=("POST",),
            family=mgmt,
            handler=respond(management.create_key),
            operation="create_key",
            summary="Create an inference key (shown once)",
            request=CreateKeyRequest,
            response=CreatedKey,
            status=201,
            errors=(400, 413),
        ),
        Endpoint(
            path="/api/v1/auth/keys",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.list_keys),
            operation="list_keys",
            summary="Every key, without secrets",
            response=list[ApiKeyInfo],
        ),
        Endpoint(
            path="/api/v1/auth/keys/{id}",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.get_key),
            operation="get_key",
            summary="One key",
            response=ApiKeyInfo,
            errors=(404,),
            integer_params=("id",),
        ),
        Endpoint(
            path="/api/v1/auth/keys/{id}",
            methods=("DELETE",),
            family=mgmt,
            handler=respond(management.delete_key),
            operation="delete_key",
            summary="Revoke a key",
            status=204,
            media=(),
            errors=(404,),
            integer_params=("id",),
        ),
        Endpoint(
            path="/api/v1/auth/keys/{id}/permissions",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.key_permissions),
            operation="key_permissions",
            summary="The instances a per_instance key may use",
            response=list[KeyPermission],
            errors=(404,),
            integer_params=("id",),
        ),
        Endpoint(
            path="/api/v1/system",
            methods=("GET",),
            family=mgmt,
            handler=respond(management.system),
            operation="system",
            summary="The machine's memory, the memory budget, and the GPUs nvidia-ml-py finds",
            response=SystemInfo,
        ),
        Endpoint(
            path="/api/v1/models",
            methods=("GET",),
            family=mgmt,
            handler=respond(catalogue.list_models),
            operation="list_catalogue",
            summary="Every model on this machine: named dirs, the Hugging Face cache, Ollama, LM Studio",
            response=list[CatalogueModel],
            query=(QueryParam("filter", "string", "Only ids, repos or names containing this, in any case"),),
        ),
        Endpoint(
            path="/api/v1/models",
            methods=("DELETE",),
            family=mgmt,
            handler=respond(catalogue.delete_model),
            operation="delete_model",
            summary="Remove a downloaded model (or the snapshot of one tag) from the Hugging Face cache",
            status=204,
            media=(),
            errors=(400, 404),
            query=(
                QueryParam("repo", "string", "org/model"),
                QueryParam("tag", "string", "Only this tag's snapshot"),
            ),
        ),
        Endpoint(
            path="/api/v1/deploy",
            methods=("POST",),
            family=mgmt,
            handler=respond(apis.deploy.deploy),
            operation="deploy",
            summary="Serve a checkpoint (model dir, GGUF, LoRA, trainer output dir) as a started instance",
            request=DeployRequest,
            response=DeployAnswer,
            status=201,
            errors=(400, 404, 409, 413, 422, 503, 504),
        ),
        Endpoint(
            path="/api/v1/models/download",
            methods=("POST",),
            family=mgmt,
            handler=respond(catalogue.download),
            operation="download_model",
            summary="Download a model from the Hugging Face hub into its cache, as a job",
            request=DownloadRequest,
            response=DownloadStarted,
            status=202,
            errors=(400, 413),
        ),
        Endpoint(
            path="/api/v1/models/jobs",
            methods=("GET",),
            family=mgmt,
            handler=respond(catalogue.list_jobs),
            operation="list_download_jobs",
            summary="Every download job, with its progress in bytes",
            response=DownloadJobList,
        ),
        Endpoint(
            path="/api/v1/models/jobs/{id}",
            methods=("GET",),
            family=mgmt,
            handler=respond(catalogue.get_job),
            operation="get_download_job",
            summary="One download job",
            response=DownloadJob,
            errors=(404,),
        ),
        Endpoint(
            path="/api/v1/models/jobs/{id}",
            methods=("DELETE",),
            family=mgmt,
            handler=respond(catalogue.delete_job),
            operation="delete_download_job",
            summary="Cancel a download job, or forget a finished one",
            status=204,
            media=(),
            errors=(404,),
        ),
        Endpoint(
            path="/api/v1/models/{id:path}",
            methods=("GET",),
            family=mgmt,
            handler=respond(catalogue.get_model),
            operation="get_catalogue_model",
            summary="One model of the catalogue, with all its metadata",
            response=CatalogueModelDetails,
            errors=(404,),
        ),
        Endpoint(
            path="/api/v1/activity",
            methods=("GET",),
            family=mgmt,
            handler=respond(activity.list_activity),
            operation="list_activity",
            summary="The last proxied requests, oldest first: instance, model, key, status, timings, tokens",
            response=ActivityList,
            errors=(400,),
            query=(
                QueryParam("instance", "string", "Only this instance's requests"),
                QueryParam("since", "integer", "The first `limit` records after this id (to follow the log)"),
                QueryParam("limit", "integer", "How many records (default 100, at most 1000)"),
            ),
        ),
        Endpoint(
            path="/",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=ui.page,
            operation="web_ui",
            summary="The web UI (it asks for a key and sends it with each request)",
            media=("text/html",),
        ),
        Endpoint(
            path="/ui/{path:path}",
            methods=("GET",),
            family=Family.PUBLIC,
            handler=ui.asset,
            operation="web_ui_file",
            summary="The web UI's modules, styles and vendored libraries",
            media=("text/javascript", "text/css"),
            errors=(404,),
        ),
    ]
    return table


def build_router(table: list[Endpoint], policies: dict[Family, Policy], allowed_headers: list[str]) -> Router:
    """One Starlette route per path, each a gate over the handlers of its methods."""
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in table:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    routes = []
    for path, endpoints in by_path.items():
        family = endpoints[0].family
        assert all(endpoint.family is family for endpoint in endpoints), f"{path}: one family per path"
        handlers = {method: endpoint.handler for endpoint in endpoints for method in endpoint.methods}
        route = Route(path, endpoint=Gate(policies[family], handlers, allowed_headers))
        # A decoded path may hold a newline (%0a): {path:path} must match it all the same, so that
        # the proxy forwards the target still encoded, as it does every other byte.
        route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
        routes.append(route)
    # No trailing-slash redirects: a redirect would be built from the Host header.
    return Router(routes, redirect_slashes=False, default=_not_found)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(send, HttpError(404, "not_found", "no route matches this path"), management_body)
