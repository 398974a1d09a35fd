"""The API document is the route table: valid, complete, public, and good enough to generate a client."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate

from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process

PASS_THROUGH = ["/v1/{path}", "/llama-cpp/{name}/{path}", "/api/v1/instances/{name}/proxy/{path}"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with serve_process(tmp_path) as running:
        yield running


def document(serve: Serve) -> dict[str, Any]:
    answer = httpx.get(serve.base_url + "/api/v1/openapi.json")  # no key: it holds no secret
    assert answer.status_code == 200
    parsed: dict[str, Any] = answer.json()
    return parsed


def test_the_document_is_valid_and_describes_every_route(serve: Serve) -> None:
    spec = document(serve)
    validate(spec)  # openapi-spec-validator: path parameters resolved, references sound
    paths = spec["paths"]
    assert set(PASS_THROUGH) <= set(paths)
    assert set(paths["/llama-cpp/{name}/{path}"]) == {
        "get",
        "head",
        "post",
        "put",
        "patch",
        "delete",
        "options",
    }
    for path, item in paths.items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == in_path, (method, path)
            public = ("/api/v1/docs", "/healthz", "/readyz", "/", "/ui/{path}")
            if path.startswith("/api/v1/openapi") or path in public:
                assert operation["security"] == []
            else:
                assert operation["security"] and "401" in operation["responses"], (method, path)
    create = paths["/api/v1/instances/{name}"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]
    assert {"201", "400", "403", "409", "413", "415"} <= set(create["responses"])
    chat_errors = paths["/v1/{path}"]["post"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert chat_errors == {"$ref": "#/components/schemas/OpenAIError"}
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["apiKey"]["name"] == "X-API-Key"
    logs = paths["/api/v1/instances/{name}/logs"]["get"]
    assert {p["name"] for p in logs["parameters"] if p["in"] == "query"} == {"lines", "follow"}


def test_the_docs_page_is_public_and_lists_the_table(serve: Serve) -> None:
    page = httpx.get(serve.base_url + "/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in ("/llama-cpp/{name}/{path:path}", "/api/v1/instances/{name}/proxy/{path:path}", "/v1/models"):
        assert path in page.text


def test_a_generated_client_creates_starts_and_lists_an_instance(serve: Serve, tmp_path: Path) -> None:
    source = tmp_path / "openapi.json"
    source.write_bytes(msgspec.json.encode(document(serve)))
    generator = Path(sys.executable).with_name("openapi-python-client")
    subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(source),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "gen"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("gen")
        create = importlib.import_module("gen.api.management.create_instance")
        start = importlib.import_module("gen.api.management.start_instance")
        listing = importlib.import_module("gen.api.management.list_instances")
        models = importlib.import_module("gen.models")
        client = client_module.AuthenticatedClient(base_url=serve.base_url, token=MANAGEMENT_KEY)
        options = models.LlamaCppInstanceOptions.from_dict(
            {
                "backend_type": "llama_cpp",
                "backend_options": {"model": "/m/tiny.gguf", "alias": "tiny"},
                "environment": {"STANDIN_PIDS": str(serve.pids)},
            }
        )
        created = create.sync_detailed("generated", client=client, body=options)
        assert created.status_code == 201 and created.parsed.name == "generated"
        started = start.sync_detailed("generated", client=client)
        assert started.status_code == 200, started.content
        assert started.parsed.status.value == "running"
        assert [info.name for info in listing.sync(client=client)] == ["generated"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [module for module in sys.modules if module == "gen" or module.startswith("gen.")]:
            del sys.modules[name]
