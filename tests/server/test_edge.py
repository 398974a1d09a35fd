"""The HTTP edge against hostile and odd input, through a real `llamactl serve` and the stand-in.

Every case is what a client (or an attacker) meets over a real socket:
request splitting, auth for every method, cross-origin writes, content types,
sub-models, bounded inputs, and a quiet server log when clients leave.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamactl.config import LoadedConfig, load_config
from llamactl.service import Service
from tests.serve_process import Serve, serve_process
from tests.server.edge_helpers import (
    EDGE_BACKENDS,
    KEY_HEADER,
    create,
    error_code,
    error_message,
    raw_request,
    recorded,
)

PROXIED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
SMUGGLED = "%20HTTP/1.1%0d%0aHost:%20x%0d%0aContent-Length:%200%0d%0a%0d%0aPOST%20/v1/completions"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with serve_process(tmp_path, EDGE_BACKENDS) as running:
        yield running


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    return tmp_path / "requests"


def nested(depth: int) -> bytes:
    """A chat request whose body nests ``depth`` levels (its outer object included)."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return b'{"model": "alpha", "messages": [], "x": ' + inner + b"}"


def test_an_encoded_crlf_never_becomes_a_second_request(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    paths = [
        f"/llama-cpp/alpha/health{SMUGGLED}",
        f"/api/v1/instances/alpha/proxy/health{SMUGGLED}",
    ]
    for path in paths:
        answer = raw_request(serve.base_url, f"GET {path} HTTP/1.1\r\n".encode() + KEY_HEADER)
        assert answer.status == 404 and b"no route" in answer.body  # the stand-in's own 404
    smuggled = raw_request(
        serve.base_url,
        f"POST /v1/chat/completions{SMUGGLED} HTTP/1.1\r\nContent-Type: application/json\r\n".encode()
        + KEY_HEADER
        + b"Content-Length: 17\r\n",
        b'{"model":"alpha"}',
    )
    assert smuggled.status == 404
    # Each reached the backend as one request line, its target still percent-encoded.
    assert recorded(requests) == [
        f"GET /health{SMUGGLED} HTTP/1.1".encode(),
        f"GET /health{SMUGGLED} HTTP/1.1".encode(),
        f"POST /v1/chat/completions{SMUGGLED} HTTP/1.1".encode(),
    ]
    assert serve.client.get("/llama-cpp/alpha/health").json() == {"status": "ok"}  # the pool is sound


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("/llama-cpp/alpha/x%zz", "two hex digits"),
        ("/llama-cpp/alpha/a|b", "0x7c ('|')"),
        ("/llama-cpp/alpha/../health", "'..' segment"),
        ("/llama-cpp/alpha/%2e%2e/health", "'..' segment"),
        ("/api/v1/instances/alpha/proxy/./health", "'..' segment"),
        ("/llama-cpp/alpha/health?a=%", "two hex digits"),
        ("/llama-cpp/alpha/health?a={}", "0x7b ('{')"),
    ],
)
def test_a_target_that_is_not_origin_form_is_refused_naming_the_problem(
    serve: Serve, requests: Path, target: str, problem: str
) -> None:
    create(serve, "alpha", requests)
    answer = raw_request(serve.base_url, f"GET {target} HTTP/1.1\r\n".encode("latin-1") + KEY_HEADER)
    assert answer.status == 400, answer.body
    assert problem in error_message(answer.body)
    assert recorded(requests) == []


def test_the_query_string_is_kept_as_sent(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    answer = raw_request(
        serve.base_url, b"GET /llama-cpp/alpha/v1/models?a=1&b=%20c HTTP/1.1\r\n" + KEY_HEADER
    )
    assert b"no route /v1/models?a=1&b=%20c" in answer.body  # the stand-in names what it got
    assert recorded(requests) == [b"GET /v1/models?a=1&b=%20c HTTP/1.1"]


def test_expect_100_continue_gets_the_real_answer(serve: Serve, requests: Path) -> None:
    """uvicorn answers 100 Continue itself; the backend's own 100 must not come back as the answer."""
    create(serve, "alpha", requests)
    body = b'{"model": "alpha", "messages": []}'
    answer = raw_request(
        serve.base_url,
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
        + KEY_HEADER
        + f"Content-Length: {len(body)}\r\n".encode(),
        body,
    )
    assert answer.status == 200
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "hello"


def test_every_method_needs_a_key_and_the_answer_reveals_no_instance(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    anonymous = httpx.Client(base_url=serve.base_url, timeout=30)
    for method in PROXIED_METHODS:
        answers = [
            anonymous.request(method, path, content=b"x" * 1000)
            for path in (
                "/api/v1/instances/alpha/proxy/health",
                "/api/v1/instances/nope/proxy/health",
                "/llama-cpp/alpha/health",
                "/llama-cpp/nope/health",
                "/v1/chat/completions",
            )
        ]
        assert [answer.status_code for answer in answers] == [401] * 5, method
        if method != "HEAD":
            assert answers[0].content == answers[1].content and answers[2].content == answers[3].content
    preflight = anonymous.options(
        "/api/v1/instances/alpha/proxy/health",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert recorded(requests) == []
    # With a key, OPTIONS is a request like any other.
    assert serve.client.options("/api/v1/instances/alpha/proxy/health").status_code == 200
    assert recorded(requests) == [b"OPTIONS /health HTTP/1.1"]


def test_instances_may_be_named_like_the_routes(serve: Serve, requests: Path) -> None:
    for name in ("proxy", "proxyfoo", "start"):
        create(serve, name, requests, start=name == "proxy")
        assert serve.client.get(f"/api/v1/instances/{name}").json()["name"] == name
    health = serve.client.get("/api/v1/instances/proxy/proxy/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert serve.client.post("/api/v1/instances/start/start").json()["status"] == "running"


def test_cross_origin_writes_are_refused_when_management_auth_is_off(
    tmp_path: Path, requests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACTL_REQUIRE_MANAGEMENT_AUTH", "false")
    with serve_process(tmp_path, EDGE_BACKENDS) as serve:
        anonymous = httpx.Client(base_url=serve.base_url, timeout=30)
        evil = {"Origin": "http://evil.example"}
        body = json.dumps({"backend_type": "llama_cpp", "command_override": "/bin/sh"})
        # What any web page can send without asking first: a text/plain POST.
        drive_by = anonymous.post(
            "/api/v1/instances/x", content=body, headers={**evil, "Content-Type": "text/plain"}
        )
        assert (drive_by.status_code, error_code(drive_by)) == (403, "origin_not_allowed")
        create(serve, "alpha", requests, start=False)
        start = anonymous.post("/api/v1/instances/alpha/start", headers=evil)
        assert start.status_code == 403
        as_json = anonymous.post(
            "/api/v1/instances/x", content=body, headers={**evil, "Content-Type": "application/json"}
        )
        assert as_json.status_code == 403
        assert anonymous.get("/api/v1/instances/x").status_code == 404
        assert serve.client.get("/api/v1/instances/alpha").json()["status"] == "stopped"
        # `*` does not open reads to other origins either: no CORS header for them.
        listed = anonymous.get("/api/v1/instances", headers=evil)
        assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers
        # The server's own pages may.
        own = anonymous.post("/api/v1/instances/alpha/start", headers={"Origin": serve.base_url})
        assert own.status_code == 200
        plain = anonymous.post("/api/v1/instances/y", content=body, headers={"Content-Type": "text/plain"})
        assert (plain.status_code, error_code(plain)) == (415, "unsupported_media_type")
        assert "text/plain" in plain.json()["details"]


def test_named_origins_may_write_and_star_keeps_working_with_a_key(
    tmp_path: Path, requests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACTL_ALLOWED_ORIGINS", "http://ui.example,*")
    with serve_process(tmp_path, EDGE_BACKENDS) as serve:
        body = {"backend_type": "llama_cpp", "backend_options": {"model": "/m/x.gguf"}}
        # Management auth is on: `*` lets another origin call, with a key it holds (Go configs).
        with_key = serve.client.post(
            "/api/v1/instances/a", json=body, headers={"Origin": "http://other.example"}
        )
        assert with_key.status_code == 201
        assert with_key.headers["access-control-allow-origin"] == "*"
        without = httpx.post(
            serve.base_url + "/api/v1/instances/b", json=body, headers={"Origin": "http://other.example"}
        )
        assert without.status_code == 401
    monkeypatch.setenv("LLAMACTL_REQUIRE_MANAGEMENT_AUTH", "false")
    (tmp_path / "off").mkdir()
    with serve_process(tmp_path / "off", EDGE_BACKENDS) as serve:
        listed = httpx.post(
            serve.base_url + "/api/v1/instances/c", json=body, headers={"Origin": "http://ui.example"}
        )
        assert listed.status_code == 201
        other = httpx.post(
            serve.base_url + "/api/v1/instances/d", json=body, headers={"Origin": "http://other.example"}
        )
        assert other.status_code == 403


def test_json_bodies_need_the_json_type_a_bounded_depth_and_errors_name_the_field(
    serve: Serve, requests: Path
) -> None:
    create(serve, "alpha", requests)
    as_json = {"Content-Type": "application/json"}
    text = serve.client.post(
        "/v1/chat/completions", content=b'{"model": "alpha"}', headers={"Content-Type": "text/plain"}
    )
    assert (text.status_code, text.json()["error"]["code"]) == (415, "unsupported_media_type")
    deep = serve.client.post("/v1/chat/completions", content=nested(100_000), headers=as_json)
    assert deep.status_code == 400 and "128 levels" in deep.json()["error"]["message"]
    just_over = serve.client.post("/v1/chat/completions", content=nested(129), headers=as_json)
    assert just_over.status_code == 400
    at_limit = serve.client.post("/v1/chat/completions", content=nested(128), headers=as_json)
    assert at_limit.status_code == 200
    deep_management = serve.client.post(
        "/api/v1/instances/beta", content=b'{"a": ' + b"[" * 100_000, headers=as_json
    )
    assert deep_management.status_code == 400 and "128 levels" in deep_management.json()["details"]
    typed = serve.client.post(
        "/api/v1/instances/beta", json={"backend_type": "llama_cpp", "idle_timeout": "x"}
    )
    assert typed.status_code == 400 and typed.json()["field"] == "idle_timeout"
    option = serve.client.post(
        "/api/v1/instances/beta", json={"backend_type": "llama_cpp", "backend_options": {"ctx_size": "big"}}
    )
    assert option.status_code == 400 and option.json()["field"].endswith("ctx_size")
    key = serve.client.post("/api/v1/auth/keys", json={"name": "k", "instance_ids": ["x"]})
    assert key.status_code == 400 and key.json()["field"] == "instance_ids[0]"
    huge_name = serve.client.post("/v1/chat/completions", json={"model": "x" * 1_000_000})
    assert huge_name.status_code == 404 and len(huge_name.content) < 500  # echoed input is cut
    assert [line for line in recorded(requests) if not line.startswith(b"POST /v1/chat")] == []


def test_sub_models_reach_only_what_the_instance_declares(serve: Serve, requests: Path) -> None:
    create(serve, "mlx1", requests, backend="mlx_lm", allowed_models=["other-org/other"])
    create(serve, "alpha", requests)
    recorded_before = len(recorded(requests))
    evil = serve.client.post(
        "/v1/chat/completions", json={"model": "mlx1/evil-org/evil-repo", "messages": []}
    )
    assert (evil.status_code, evil.json()["error"]["code"]) == (404, "model_not_found")
    message = evil.json()["error"]["message"]
    assert "'default_model'" in message and "'other-org/other'" in message
    assert len(recorded(requests)) == recorded_before
    allowed = serve.client.post(
        "/v1/chat/completions", json={"model": "mlx1/other-org/other", "messages": []}
    )
    assert allowed.status_code == 200 and allowed.json()["model"] == "other-org/other"
    plain = serve.client.post("/v1/chat/completions", json={"model": "mlx1", "messages": []})
    assert plain.json()["model"] == "default_model"
    native = serve.client.get("/llama-cpp/mlx1/health")
    assert native.status_code == 404 and "mlx_lm" in native.json()["error"]["message"]
    assert serve.client.get("/llama-cpp/alpha/health").status_code == 200


def test_a_vllm_instance_routes_its_lora_adapters_by_name(serve: Serve, requests: Path) -> None:
    create(
        serve,
        "lora",
        requests,
        backend="vllm",
        backend_options={"lora_modules": ["sql=/loras/sql", '{"name": "chat", "path": "/loras/chat"}']},
    )
    for adapter in ("sql", "chat"):
        answer = serve.client.post("/v1/chat/completions", json={"model": f"lora/{adapter}", "messages": []})
        assert answer.status_code == 200 and answer.json()["model"] == adapter
    unknown = serve.client.post("/v1/chat/completions", json={"model": "lora/other", "messages": []})
    assert unknown.status_code == 404 and "'sql', 'chat'" in unknown.json()["error"]["message"]


def test_a_llama_cpp_instance_applies_the_adapter_a_request_names_and_only_then(
    serve: Serve, requests: Path
) -> None:
    adapters = {"lora": ["/loras/always.gguf"], "lora_scaled": ["/loras/sql.gguf:0,/loras/chat.gguf:0.5"]}
    create(serve, "tuned", requests, backend_options=adapters)
    for model, lora in [
        ("tuned/sql", [{"id": 1, "scale": 1.0}]),  # loaded at 0: applied at 1 when asked for
        ("tuned/chat", [{"id": 2, "scale": 0.5}]),  # at the scale it was given
        ("tuned/always", [{"id": 0, "scale": 1.0}]),
    ]:
        answer = serve.client.post("/v1/chat/completions", json={"model": model, "messages": []})
        assert answer.status_code == 200, answer.text
        answered = answer.json()
        # The one model llama-server has; no prompt cached under other scales (b10434 would reuse it).
        assert (answered["model"], answered["lora"], answered["cache_prompt"]) == ("tiny", lora, False)
    plain = serve.client.post("/v1/chat/completions", json={"model": "tuned", "messages": []}).json()
    assert plain["model"] == "tiny" and "lora" not in plain  # the scales it was started with
    assert plain["cache_prompt"] is False
    listed = serve.client.post("/v1/chat/completions", json={"model": "tuned/other", "messages": []})
    assert listed.status_code == 404 and "'sql', 'chat'" in listed.json()["error"]["message"]
    models = {model["id"]: model for model in serve.client.get("/v1/models").json()["data"]}
    assert [models[f"tuned/{name}"]["parent"] for name in ("always", "sql", "chat")] == ["tuned"] * 3
    assert "parent" not in models["tuned"] and models["tuned/sql"]["status"] == "running"


def test_an_mlx_instance_serves_its_adapter_under_its_one_model(serve: Serve, requests: Path) -> None:
    create(serve, "mlxa", requests, backend="mlx_lm", backend_options={"adapter_path": "/adapters/sql-mlx"})
    answer = serve.client.post("/v1/chat/completions", json={"model": "mlxa/sql-mlx", "messages": []})
    # Never the adapter's name: mlx_lm.server would fetch any other name from the hub.
    assert answer.status_code == 200 and answer.json()["model"] == "default_model"


@pytest.mark.parametrize("lines", ["²", "999999999", "10001", "1" * 5000, "-1", "1.5"])
def test_logs_lines_past_the_limit_or_not_a_number_is_a_400(serve: Serve, requests: Path, lines: str) -> None:
    create(serve, "alpha", requests, start=False)
    answer = serve.client.get("/api/v1/instances/alpha/logs", params={"lines": lines})
    assert (answer.status_code, answer.json()["field"]) == (400, "lines")


def test_logs_at_the_limit(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    assert serve.client.get("/api/v1/instances/alpha/logs", params={"lines": "10000"}).status_code == 200


def test_huge_headers_and_urls_are_4xx_and_the_server_keeps_answering(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    for path in (b"/api/v1/version", b"/llama-cpp/alpha/health"):
        answer = raw_request(serve.base_url, b"GET " + path + b" HTTP/1.1\r\n" + KEY_HEADER + big)
        assert answer.status == 431
    long_url = raw_request(serve.base_url, b"GET /llama-cpp/alpha/" + b"a" * 10_000_000 + b" HTTP/1.1\r\n")
    assert 400 <= long_url.status < 500
    many = raw_request(
        serve.base_url, b"GET /api/v1/version HTTP/1.1\r\n" + KEY_HEADER + b"X-A: b\r\n" * 20_000
    )
    assert many.status == 431
    assert recorded(requests) == []
    assert serve.client.get("/api/v1/version").status_code == 200


def test_a_client_that_disconnects_mid_stream_leaves_no_traceback(serve: Serve, requests: Path) -> None:
    create(serve, "alpha", requests)
    for _ in range(3):
        with serve.client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "alpha", "stream": True, "chunks": 200, "chunk_delay": 0.02},
        ) as response:
            assert next(response.iter_lines()).startswith("data: ")
    deadline = time.monotonic() + 10
    log = ""
    while log.count("stream cancelled by the client") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        log = serve.client.get("/api/v1/instances/alpha/logs?lines=50").text
    assert log.count("stream cancelled by the client") == 3
    stderr = serve.serving.stderr_text()
    assert "Traceback" not in stderr and "Exception in ASGI application" not in stderr, stderr


def test_head_on_a_management_route(serve: Serve) -> None:
    head = serve.client.head("/api/v1/version")
    assert head.status_code == 200 and head.content == b""


def test_management_auth_off_on_a_public_address_warns_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "llamactl.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{host: 0.0.0.0}}\n"
        "auth: {require_management_auth: false}\n"
    )

    def read() -> LoadedConfig:
        return load_config(config, os.environ, tmp_path, tmp_path)

    async def boot() -> None:
        service = Service(read(), read)
        try:
            await service.open()
        finally:
            await service.close()

    asyncio.run(boot())
    assert "management auth is off on 0.0.0.0" in capsys.readouterr().err
