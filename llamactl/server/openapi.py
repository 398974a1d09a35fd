"""The OpenAPI document and the docs page, rendered from the route table and its msgspec types.

Both are served without a key (the ``public`` family): they describe the
routes and hold no secret, and a browser following a link to the page
cannot send a Bearer header.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from llamactl import __version__
from llamactl.server.asgi import Receive, Scope, Send, send_whole
from llamactl.server.auth import Principal
from llamactl.server.errors import ManagementError, OpenAIError
from llamactl.server.gate import STATE_CHANGING, Family

if TYPE_CHECKING:
    from llamactl.server.routes import Endpoint

_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
_ERROR_TYPE = {Family.MANAGEMENT: ManagementError, Family.INFERENCE: OpenAIError}
_KEY_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: the job runs on",
    204: "No content",
    400: "Bad input (the message and field say which)",
    401: "No key, or a wrong one",
    403: "The key may not use this instance, or the Origin may not change state",
    404: "No such instance, model or route",
    409: "Conflict with the instance's state",
    413: "Body too large",
    415: "The body is not sent as application/json",
    422: "Well-formed, but not something llamactl can serve (the message says what to do)",
    429: "The instance's request queue is full (Retry-After)",
    502: "The backend failed",
    503: "The instance is unavailable or could not start (Retry-After)",
    504: "The backend was not ready or did not answer in time (Retry-After)",
}


def openapi_document(table: list[Endpoint]) -> dict[str, Any]:
    types = list(dict.fromkeys(t for e in table for t in (e.request, e.response) if t is not None))
    types += [ManagementError, OpenAIError]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    components = _without_false_items(components)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in table:
        path = _PARAMETER.sub(r"{\1}", endpoint.path)
        for method in endpoint.methods:
            operation = _operation(endpoint, method, schema_of)
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "llamactl", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _without_false_items(schema: Any) -> Any:
    """The schemas without ``"items": false`` after ``prefixItems`` (msgspec's tuples).

    Valid JSON Schema, but code generators such as openapi-python-client refuse
    a boolean schema there; ``maxItems``, which msgspec also sets, says the same.
    """
    if isinstance(schema, dict):
        return {
            key: _without_false_items(value)
            for key, value in schema.items()
            if not (key == "items" and value is False and "prefixItems" in schema)
        }
    if isinstance(schema, list):
        return [_without_false_items(value) for value in schema]
    return schema


def _operation(endpoint: Endpoint, method: str, schema_of: dict[Any, Any]) -> dict[str, Any]:
    several = len(endpoint.methods) > 1
    key_kind = {Family.MANAGEMENT: "a management key", Family.INFERENCE: "an inference or management key"}
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.operation}_{method.lower()}" if several else endpoint.operation,
        "summary": endpoint.summary,
        "tags": [endpoint.family.value],
        "parameters": _parameters(endpoint),
        "responses": {str(endpoint.status): _success(endpoint, schema_of)},
    }
    if endpoint.family in key_kind:
        operation["description"] = f"Needs {key_kind[endpoint.family]}."
        operation["security"] = _KEY_SECURITY
    else:
        operation["security"] = []
    if endpoint.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of[endpoint.request]}},
        }
    elif method in ("POST", "PUT", "PATCH") and endpoint.media == ("*/*",):
        # Passed through as bytes, whatever its type.
        body = {"schema": {"type": "string", "format": "binary"}}
        operation["requestBody"] = {"required": False, "content": {"application/octet-stream": body}}
    error_type = _ERROR_TYPE.get(endpoint.family)
    if error_type is not None:
        statuses = {401, *endpoint.errors}
        if method in STATE_CHANGING:
            statuses.add(403)
        if endpoint.request is not None:
            statuses |= {400, 413, 415}
        error = {"application/json": {"schema": schema_of[error_type]}}
        for status in sorted(statuses):
            operation["responses"][str(status)] = {"description": _STATUS_TEXT[status], "content": error}
    return operation


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer" if name in endpoint.integer_params else "string"},
        }
        for name in _PARAMETER.findall(endpoint.path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "description": q.description,
            "schema": {"type": q.type},
        }
        for q in endpoint.query
    ]
    return parameters


def _success(endpoint: Endpoint, schema_of: dict[Any, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _STATUS_TEXT[endpoint.status]}
    content: dict[str, Any] = {}
    for media in endpoint.media:
        if media == "application/json":
            schema = schema_of[endpoint.response] if endpoint.response is not None else {}
        elif media == "*/*":
            schema = {}
        else:
            schema = {"type": "string"}
        content[media] = {"schema": schema}
    if content:
        success["content"] = content
    return success


def docs_page(table: list[Endpoint]) -> str:
    """A self-contained page (no CDN: llamactl often runs offline) listing every route."""
    rows = "".join(
        f"<tr><td><code>{' '.join(endpoint.methods)}</code></td>"
        f"<td><code>{html.escape(endpoint.path)}</code></td>"
        f"<td>{endpoint.family.value}</td><td>{html.escape(endpoint.summary)}</td></tr>"
        for endpoint in table
    )
    return (
        '<!doctype html><meta charset=utf-8><title>llamactl API</title><link rel=icon href="data:,">'
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em}</style>"
        "<h1>llamactl API</h1><p>Full schema: <a href=openapi.json>openapi.json</a>. "
        "Keys go in <code>Authorization: Bearer</code> or <code>X-API-Key</code>.</p>"
        f"<table><tr><th>methods</th><th>path</th><th>key</th><th></th></tr>{rows}</table>"
    )


class ApiDocs:
    """The two public routes; each renders the table once, on first use."""

    def __init__(self, table: Callable[[], list[Endpoint]]) -> None:
        self._table = table
        self._document: bytes | None = None
        self._page: bytes | None = None

    async def openapi(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        if self._document is None:
            self._document = msgspec.json.encode(openapi_document(self._table()))
        await send_whole(send, self._document)

    async def page(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        if self._page is None:
            self._page = docs_page(self._table()).encode()
        await send_whole(send, self._page, b"text/html; charset=utf-8")
