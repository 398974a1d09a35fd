"""Every route of the HTTP API and every error status, in process, over the stand-in backend."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamactl.config import load_config
from llamactl.service import Service
from tests.instance.helpers import STANDIN, assert_none_alive

MANAGEMENT = {"Authorization": "Bearer mgmt-key"}
AS_JSON = {**MANAGEMENT, "Content-Type": "application/json"}


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "llamactl.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
server:
  max_body_bytes: 100000
auth:
  management_keys: [mgmt-key]
backends:
  llama-cpp:
    command: {sys.executable}
    args: [{STANDIN}]
  vllm:
    command: /nonexistent/vllm
instances:
  port_range: [18300, 18399]
  on_demand_start_timeout: 3
  default_restart_delay: 0
{extra}
"""
    )
    return config


@asynccontextmanager
async def running_service(tmp_path: Path, extra: str = "") -> AsyncIterator[httpx.AsyncClient]:
    config = write_config(tmp_path, extra)

    def read() -> Any:
        return load_config(config, os.environ, tmp_path, tmp_path)

    service = Service(read(), read)
    await service.open()
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            yield client
    finally:
        await service.close()


def run(
    tmp_path: Path, scenario: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]], extra: str = ""
) -> None:
    async def main() -> None:
        async with running_service(tmp_path, extra) as client:
            await scenario(client)

    asyncio.run(main())
    assert_none_alive(tmp_path / "pids")


def standin_instance(tmp_path: Path, faults: str = "", **options: Any) -> dict[str, Any]:
    return {
        "backend_type": "llama_cpp",
        "backend_options": {"model": "/m/tiny.gguf", "alias": "tiny"},
        "environment": {"STANDIN_PIDS": str(tmp_path / "pids"), "STANDIN_FAULTS": faults},
        **options,
    }


def error_of(response: httpx.Response) -> str:
    body = response.json()
    return str(body["error"]["code"] if isinstance(body["error"], dict) else body["error"])


def test_management_needs_a_management_key_in_a_header(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/v1/instances")).status_code == 401
        assert (await client.get("/api/v1/instances?api_key=mgmt-key")).status_code == 401
        assert (
            await client.get("/api/v1/instances", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        assert (await client.get("/api/v1/instances", headers={"X-API-Key": "mgmt-key"})).status_code == 200
        assert (await client.get("/api/v1/instances", headers=MANAGEMENT)).json() == []

    run(tmp_path, scenario)


def test_instance_crud_and_errors(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        created = await client.post(
            "/api/v1/instances/alpha", json=standin_instance(tmp_path), headers=MANAGEMENT
        )
        assert created.status_code == 201
        assert created.json()["status"] == "stopped"
        assert created.json()["options"]["backend_options"] == {"model": "/m/tiny.gguf", "alias": "tiny"}
        again = await client.post(
            "/api/v1/instances/alpha", json=standin_instance(tmp_path), headers=MANAGEMENT
        )
        assert (again.status_code, error_of(again)) == (409, "conflict")
        bad_name = await client.post(
            "/api/v1/instances/a%20b", json=standin_instance(tmp_path), headers=MANAGEMENT
        )
        assert bad_name.status_code == 400 and "invalid instance name" in bad_name.json()["details"]
        bad_option = standin_instance(tmp_path)
        bad_option["backend_options"] = {"ctx_size": "big"}
        response = await client.post("/api/v1/instances/beta", json=bad_option, headers=MANAGEMENT)
        assert response.status_code == 400 and "ctx_size" in response.json()["details"]
        unknown = await client.post(
            "/api/v1/instances/beta", json={"backend_type": "tgi"}, headers=MANAGEMENT
        )
        assert unknown.status_code == 400 and "backend_type" in unknown.json()["details"]
        not_json = await client.post("/api/v1/instances/beta", content=b"{nope", headers=AS_JSON)
        assert (not_json.status_code, error_of(not_json)) == (400, "invalid_json")
        huge = await client.post("/api/v1/instances/beta", content=b" " * 2_000_000, headers=AS_JSON)
        assert huge.status_code == 413
        missing = await client.get("/api/v1/instances/nope", headers=MANAGEMENT)
        assert (missing.status_code, error_of(missing)) == (404, "not_found")
        updated = standin_instance(tmp_path, idle_timeout=3)
        put = await client.put("/api/v1/instances/alpha", json=updated, headers=MANAGEMENT)
        assert put.status_code == 200 and put.json()["options"]["idle_timeout"] == 3
        listed = await client.get("/api/v1/instances", headers=MANAGEMENT)
        assert [i["name"] for i in listed.json()] == ["alpha"]
        deleted = await client.delete("/api/v1/instances/alpha", headers=MANAGEMENT)
        assert deleted.status_code == 204
        assert (await client.get("/api/v1/instances/alpha", headers=MANAGEMENT)).status_code == 404

    run(tmp_path, scenario)


def test_lifecycle_routes_and_their_failures(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/api/v1/instances/alpha", json=standin_instance(tmp_path), headers=MANAGEMENT)
        started = await client.post("/api/v1/instances/alpha/start", headers=MANAGEMENT)
        assert started.status_code == 200 and started.json()["status"] == "running"
        busy = await client.delete("/api/v1/instances/alpha", headers=MANAGEMENT)
        assert busy.status_code == 409 and "stop it before deleting" in busy.json()["details"]
        restarted = await client.post("/api/v1/instances/alpha/restart", headers=MANAGEMENT)
        assert restarted.json()["status"] == "running"
        stopped = await client.post("/api/v1/instances/alpha/stop", headers=MANAGEMENT)
        assert stopped.json()["status"] == "stopped"
        logs = await client.get("/api/v1/instances/alpha/logs?lines=3", headers=MANAGEMENT)
        assert logs.status_code == 200 and len(logs.text.splitlines()) == 3
        bad_lines = await client.get("/api/v1/instances/alpha/logs?lines=many", headers=MANAGEMENT)
        assert bad_lines.status_code == 400

        await client.post(
            "/api/v1/instances/dies", json=standin_instance(tmp_path, "exit_at_start=3"), headers=MANAGEMENT
        )
        dies = await client.post("/api/v1/instances/dies/start", headers=MANAGEMENT)
        assert (dies.status_code, error_of(dies)) == (503, "instance_start_failed")
        assert "exited with code 3" in dies.json()["details"]
        failed = await client.get("/api/v1/instances/dies", headers=MANAGEMENT)
        assert failed.json()["status"] == "failed" and failed.json()["last_log_lines"]

        await client.post(
            "/api/v1/instances/slow", json=standin_instance(tmp_path, "never_healthy"), headers=MANAGEMENT
        )
        slow = await client.post("/api/v1/instances/slow/start", headers=MANAGEMENT)
        assert (slow.status_code, error_of(slow)) == (504, "instance_start_timeout")

    run(tmp_path, scenario)


def test_capacity_full_is_503(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for name in ("a", "b"):
            await client.post(
                f"/api/v1/instances/{name}",
                json=standin_instance(tmp_path, idle_timeout=0),
                headers=MANAGEMENT,
            )
        await client.post("/api/v1/instances/a/start", headers=MANAGEMENT)
        full = await client.post("/api/v1/instances/b/start", headers=MANAGEMENT)
        assert (full.status_code, error_of(full)) == (503, "capacity_full")
        assert full.headers["retry-after"]

    run(tmp_path, scenario, "  max_running_instances: 1")


def test_parse_command_and_backend_info(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        parsed = await client.post(
            "/api/v1/backends/llama-cpp/parse-command",
            json={"command": "HF_HOME=/x llama-server -m a.gguf -ngl 0"},
            headers=MANAGEMENT,
        )
        assert parsed.json() == {
            "backend_type": "llama_cpp",
            "backend_options": {"gpu_layers": 0, "model": "a.gguf"},
            "environment": {"HF_HOME": "/x"},
        }
        # ready to POST as an instance
        created = await client.post("/api/v1/instances/pasted", json=parsed.json(), headers=MANAGEMENT)
        assert created.status_code == 201
        bad = await client.post(
            "/api/v1/backends/llama-cpp/parse-command",
            json={"command": "llama-server | tee"},
            headers=MANAGEMENT,
        )
        assert bad.status_code == 400 and "pipe" in bad.json()["details"]
        wrong = await client.post(
            "/api/v1/backends/tgi/parse-command", json={"command": "x"}, headers=MANAGEMENT
        )
        assert wrong.status_code == 400 and "unknown backend" in wrong.json()["details"]
        version = await client.get("/api/v1/backends/llama-cpp/version", headers=MANAGEMENT)
        assert version.status_code == 200 and "standin" in version.text
        missing = await client.get("/api/v1/backends/vllm/version", headers=MANAGEMENT)
        assert (missing.status_code, error_of(missing)) == (503, "backend_not_installed")
        # Every option with its flags and help, for the UI's editor; no backend process is run.
        spec = (await client.get("/api/v1/backends/vllm/options", headers=MANAGEMENT)).json()
        assert spec["program"] == "vllm serve"
        max_len = next(flag for flag in spec["flags"] if flag["key"] == "max_model_len")
        assert max_len["spellings"] == ["--max-model-len"]
        assert max_len["help"].startswith("Model context length")
        api_key = next(flag for flag in spec["flags"] if flag["key"] == "api_key")
        assert api_key["secret"] is True
        unknown = await client.get("/api/v1/backends/tgi/options", headers=MANAGEMENT)
        assert unknown.status_code == 400 and unknown.json()["field"] == "backend"

    run(tmp_path, scenario)


def test_api_keys_and_permissions(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for name in ("mine", "theirs"):
            await client.post(
                f"/api/v1/instances/{name}", json=standin_instance(tmp_path), headers=MANAGEMENT
            )
        created = await client.post(
            "/api/v1/auth/keys",
            json={"name": "ci", "permission_mode": "per_instance", "instances": ["mine"]},
            headers=MANAGEMENT,
        )
        assert created.status_code == 201
        key, key_id = created.json()["key"], created.json()["id"]
        permissions = await client.get(f"/api/v1/auth/keys/{key_id}/permissions", headers=MANAGEMENT)
        mine_id = (await client.get("/api/v1/instances/mine", headers=MANAGEMENT)).json()["id"]
        assert permissions.json() == [{"instance_id": mine_id, "instance_name": "mine"}]
        # the Go llamactl's form: instance IDs
        by_id = await client.post(
            "/api/v1/auth/keys",
            json={"name": "go", "permission_mode": "per_instance", "instance_ids": [mine_id]},
            headers=MANAGEMENT,
        )
        assert by_id.status_code == 201 and by_id.json()["instances"] == ["mine"]
        unknown_id = await client.post(
            "/api/v1/auth/keys",
            json={"name": "go", "permission_mode": "per_instance", "instance_ids": [999]},
            headers=MANAGEMENT,
        )
        assert unknown_id.status_code == 400 and "instance_ids[0]" in unknown_id.json()["details"]
        listed = await client.get("/api/v1/auth/keys", headers=MANAGEMENT)
        assert [k["name"] for k in listed.json()] == ["go", "ci"] and "key" not in listed.json()[0]
        assert (await client.get(f"/api/v1/auth/keys/{key_id}", headers=MANAGEMENT)).status_code == 200
        inference = {"Authorization": f"Bearer {key}"}
        models = await client.get("/v1/models", headers=inference)
        assert [(m["id"], m["status"]) for m in models.json()["data"]] == [("mine", "stopped")]
        allowed = await client.post(
            "/v1/chat/completions", json={"model": "mine", "messages": []}, headers=inference
        )
        assert allowed.status_code == 200
        denied = await client.post(
            "/v1/chat/completions", json={"model": "theirs", "messages": []}, headers=inference
        )
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "permission_denied")
        assert (await client.get("/api/v1/instances", headers=inference)).status_code == 401
        bad = await client.post("/api/v1/auth/keys", json={"name": ""}, headers=MANAGEMENT)
        assert bad.status_code == 400
        assert (await client.delete(f"/api/v1/auth/keys/{key_id}", headers=MANAGEMENT)).status_code == 204
        assert (await client.get(f"/api/v1/auth/keys/{key_id}", headers=MANAGEMENT)).status_code == 404
        assert (await client.get("/v1/models", headers=inference)).status_code == 401

    run(tmp_path, scenario)


def test_openai_proxy_routes_rewrites_and_refuses(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/api/v1/instances/alpha", json=standin_instance(tmp_path), headers=MANAGEMENT)
        await client.post(
            "/api/v1/instances/manual",
            json=standin_instance(tmp_path, on_demand_start=False),
            headers=MANAGEMENT,
        )
        models = await client.get("/v1/models", headers=MANAGEMENT)
        assert {m["id"]: m["status"] for m in models.json()["data"]} == {
            "alpha": "stopped",
            "manual": "stopped",
        }
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "alpha", "messages": [], "extra": [1, {"a": "b"}]},
            headers=MANAGEMENT,
        )
        assert chat.status_code == 200
        assert chat.json()["model"] == "tiny"  # rewritten to the backend's served name (its --alias)
        sub_model = await client.post(
            "/v1/completions", json={"model": "alpha/tiny", "prompt": ""}, headers=MANAGEMENT
        )
        assert sub_model.json()["model"] == "tiny"  # its served model, named explicitly
        undeclared = await client.post(
            "/v1/completions", json={"model": "alpha/evil-org/evil-repo", "prompt": ""}, headers=MANAGEMENT
        )
        assert (undeclared.status_code, undeclared.json()["error"]["code"]) == (404, "model_not_found")
        assert "'tiny'" in undeclared.json()["error"]["message"]
        cases = [
            ({"model": "nope"}, 404, "not_found"),
            ({"messages": []}, 400, "invalid_request"),
            ({"model": "manual"}, 503, "instance_unavailable"),
        ]
        for body, status, code in cases:
            response = await client.post("/v1/chat/completions", json=body, headers=MANAGEMENT)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
            assert set(response.json()["error"]) == {"message", "type", "code", "param"}  # OpenAI's own shape
        not_json = await client.post("/v1/chat/completions", content=b"[1, 2]", headers=AS_JSON)
        assert not_json.status_code == 400
        too_big = await client.post("/v1/chat/completions", content=b"x" * 200_000, headers=AS_JSON)
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "body_too_large")
        no_key = await client.post("/v1/chat/completions", json={"model": "alpha"})
        assert (no_key.status_code, no_key.json()["error"]["type"]) == (401, "authentication_error")

    run(tmp_path, scenario)


def test_native_and_instance_proxy_routes(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/api/v1/instances/alpha", json=standin_instance(tmp_path), headers=MANAGEMENT)
        not_running = await client.get("/api/v1/instances/alpha/proxy/health", headers=MANAGEMENT)
        assert (not_running.status_code, error_of(not_running)) == (503, "instance_unavailable")
        native = await client.get("/llama-cpp/alpha/v1/models", headers=MANAGEMENT)  # starts it on demand
        assert native.status_code == 200 and native.json()["data"][0]["id"] == "tiny"
        health = await client.get("/api/v1/instances/alpha/proxy/health", headers=MANAGEMENT)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        unknown = await client.get("/api/v1/instances/nope/proxy/health", headers=MANAGEMENT)
        assert unknown.status_code == 404

    run(tmp_path, scenario)


def test_host_guard_cors_openapi_config_and_reload(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        rebinding = await client.get("/api/v1/version", headers={**MANAGEMENT, "Host": "evil.example:8080"})
        assert (rebinding.status_code, error_of(rebinding)) == (400, "invalid_host")
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"]
        document = (await client.get("/api/v1/openapi.json", headers=MANAGEMENT)).json()
        assert (
            "/api/v1/instances/{name}" in document["paths"]
            and "LlamaCppInstanceOptions" in document["components"]["schemas"]
        )
        assert "openapi.json" in (await client.get("/api/v1/docs", headers=MANAGEMENT)).text
        config = (await client.get("/api/v1/config", headers=MANAGEMENT)).json()
        assert config["auth"]["management_keys"] == ["***"]
        version = await client.get("/api/v1/version", headers=MANAGEMENT)
        assert version.text.startswith("Version: ")
        reload = await client.post("/api/v1/config/reload", headers=MANAGEMENT)
        assert reload.status_code == 200 and reload.json() == {"created": [], "updated": [], "removed": []}
        missing_route = await client.get("/api/v1/nothing", headers=MANAGEMENT)
        assert missing_route.status_code == 404

    run(tmp_path, scenario)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_both_key_headers_work_for_inference(tmp_path: Path, header: str) -> None:
    value = "Bearer mgmt-key" if header == "Authorization" else "mgmt-key"

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/models", headers={header: value})).status_code == 200

    run(tmp_path, scenario)
