"""The OpenAPI document, generated from the types the routes really take and return."""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import msgspec

from llamactl import __version__
from llamactl.backends import ParsedCommand
from llamactl.instance.manager import InstanceInfo, ReconcileReport
from llamactl.instance.options import InstanceOptions
from llamactl.server.api_keys import ApiKeyInfo, CreateKeyRequest
from llamactl.server.errors import ManagementError, OpenAIError
from llamactl.server.management import CreatedKey, KeyPermission, ParseCommandRequest


class Operation(msgspec.Struct, frozen=True):
    method: str
    path: str
    summary: str
    request: Any = None
    response: Any = None
    status: int = 200
    errors: tuple[int, ...] = ()
    text: bool = False


INSTANCE = "/api/v1/instances/{name}"
OPERATIONS = (
    Operation("get", "/api/v1/version", "llamactl's version", text=True),
    Operation("get", "/api/v1/config", "The configuration, secrets removed"),
    Operation(
        "post",
        "/api/v1/config/reload",
        "Reconcile the config file's models:",
        response=ReconcileReport,
        errors=(400, 409),
    ),
    Operation("get", "/api/v1/instances", "Every instance", response=list[InstanceInfo]),
    Operation("get", INSTANCE, "One instance", response=InstanceInfo, errors=(404,)),
    Operation(
        "post", INSTANCE, "Create an instance (stopped)", InstanceOptions, InstanceInfo, 201, (400, 409, 413)
    ),
    Operation(
        "put", INSTANCE, "Replace an instance's options", InstanceOptions, InstanceInfo, 200, (400, 404, 409)
    ),
    Operation("delete", INSTANCE, "Delete a stopped instance", status=204, errors=(404, 409)),
    Operation(
        "post",
        INSTANCE + "/start",
        "Start and wait until ready",
        response=InstanceInfo,
        errors=(404, 503, 504),
    ),
    Operation("post", INSTANCE + "/stop", "Stop", response=InstanceInfo, errors=(404,)),
    Operation("post", INSTANCE + "/restart", "Restart", response=InstanceInfo, errors=(404, 503, 504)),
    Operation(
        "get",
        INSTANCE + "/logs",
        "Last ?lines=N lines; ?follow=true streams new ones as SSE",
        errors=(400, 404),
        text=True,
    ),
    Operation(
        "post",
        "/api/v1/backends/{backend}/parse-command",
        "Turn a pasted command into instance options",
        ParseCommandRequest,
        ParsedCommand,
        200,
        (400,),
    ),
    Operation(
        "get", "/api/v1/backends/{backend}/version", "The backend's --version", errors=(502, 503), text=True
    ),
    Operation("get", "/api/v1/backends/{backend}/help", "The backend's --help", errors=(502, 503), text=True),
    Operation(
        "post",
        "/api/v1/auth/keys",
        "Create an inference key (shown once)",
        CreateKeyRequest,
        CreatedKey,
        201,
        (400,),
    ),
    Operation("get", "/api/v1/auth/keys", "Every key, without secrets", response=list[ApiKeyInfo]),
    Operation("get", "/api/v1/auth/keys/{id}", "One key", response=ApiKeyInfo, errors=(404,)),
    Operation("delete", "/api/v1/auth/keys/{id}", "Revoke a key", status=204, errors=(404,)),
    Operation(
        "get",
        "/api/v1/auth/keys/{id}/permissions",
        "The instances a per_instance key may use",
        response=list[KeyPermission],
        errors=(404,),
    ),
)


@cache
def openapi_document() -> dict[str, Any]:
    types = [t for op in OPERATIONS for t in (op.request, op.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        [*types, ManagementError, OpenAIError], ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip([*types, ManagementError, OpenAIError], schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {str(op.status): {"description": "OK"}}
        if op.response is not None:
            responses[str(op.status)]["content"] = {"application/json": {"schema": schema_of[op.response]}}
        elif op.text:
            responses[str(op.status)]["content"] = {"text/plain": {"schema": {"type": "string"}}}
        for status in (*op.errors, 401):
            responses[str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": schema_of[ManagementError]}},
            }
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if op.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[op.request]}},
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "llamactl", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def docs_page() -> str:
    """A self-contained page (no CDN: llamactl often runs offline) listing every operation."""
    rows = "".join(
        f"<tr><td><code>{op.method.upper()}</code></td><td><code>{html.escape(op.path)}</code></td>"
        f"<td>{html.escape(op.summary)}</td></tr>"
        for op in OPERATIONS
    )
    return (
        "<!doctype html><meta charset=utf-8><title>llamactl API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em}</style>"
        "<h1>llamactl API</h1><p>Full schema: <a href=openapi.json>openapi.json</a>. "
        "OpenAI-compatible routes: <code>GET /v1/models</code>, <code>POST /v1/*</code>.</p>"
        f"<table>{rows}</table>"
    )
