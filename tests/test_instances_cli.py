"""`llamactl instances …` against a running `llamactl serve`, as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.stores import GGUF_REPO, build_served_stores
from tests.serve_process import MANAGEMENT_KEY, serve_process


def llamactl(url: str, *args: str, key: str | None = MANAGEMENT_KEY) -> subprocess.CompletedProcess[str]:
    auth = ["--key", key] if key else []
    return subprocess.run(
        [sys.executable, "-m", "llamactl", "instances", "--url", url, *auth, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_everyday_verbs(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        pids = serve.pids
        created = llamactl(
            serve.base_url,
            "create",
            "qwen",
            "--",
            f"STANDIN_PIDS={pids}",
            "llama-server",
            "-m",
            "/m/q.gguf",
            "-c",
            "64",
        )
        assert created.returncode == 0, created.stderr
        assert created.stdout.splitlines()[0].split() == [
            "NAME",
            "BACKEND",
            "STATUS",
            "PORT",
            "MODEL",
            "SOURCE",
        ]
        assert created.stdout.splitlines()[1].split() == [
            "qwen",
            "llama_cpp",
            "stopped",
            "-",
            "/m/q.gguf",
            "api",
        ]
        started = llamactl(serve.base_url, "start", "qwen")
        assert "running" in started.stdout
        listed = llamactl(serve.base_url, "list")
        assert listed.stdout.splitlines()[1].split()[:3] == ["qwen", "llama_cpp", "running"]
        logs = llamactl(serve.base_url, "logs", "qwen", "-n", "5")
        assert "standin: listening" in logs.stdout
        busy = llamactl(serve.base_url, "delete", "qwen")
        assert busy.returncode == 2 and "stop it before deleting" in busy.stderr
        assert "stopped" in llamactl(serve.base_url, "stop", "qwen").stdout
        assert llamactl(serve.base_url, "delete", "qwen").stdout == "deleted qwen\n"
        assert llamactl(serve.base_url, "list").stdout.splitlines()[1:] == []


def test_clear_errors(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        no_key = llamactl(serve.base_url, "list", key=None)
        assert no_key.returncode == 2 and "management key" in no_key.stderr
        bad_command = llamactl(serve.base_url, "create", "x", "--", "llama-server", "-c", "lots")
        assert bad_command.returncode == 2 and "-c takes an integer" in bad_command.stderr
        unknown = llamactl(serve.base_url, "create", "x", "--", "ollama", "serve")
        assert unknown.returncode == 2 and "cannot tell the backend" in unknown.stderr
        far_port = llamactl(
            serve.base_url, "create", "--backend", "llama-cpp", "x", "--", "llama-server", "--port", "70000"
        )
        assert far_port.returncode == 2 and "400: option port: Expected `int` <= 65535" in far_port.stderr
        # the same from JSON: a bad request, not a conflict with the port range
        body = {"backend_type": "llama_cpp", "backend_options": {"model": "a", "port": 70000}}
        created = serve.client.post("/api/v1/instances/x", json=body)
        assert created.status_code == 400 and "port: Expected `int` <= 65535" in created.json()["details"]
        # a name with a path in it never reaches a URL, where httpx would resolve it
        serve.create("victim", start=False)
        escaped = llamactl(serve.base_url, "delete", "../instances/victim")
        assert escaped.returncode == 2 and "invalid instance name '../instances/victim'" in escaped.stderr
        assert serve.client.get("/api/v1/instances/victim").status_code == 200
    gone = llamactl("http://127.0.0.1:1", "list")
    assert gone.returncode == 2 and "is `llamactl serve` running?" in gone.stderr


@pytest.mark.parametrize(
    "verb", [["delete"], ["show"], ["start"], ["stop"], ["restart"], ["logs"], ["create", "--", "-m", "a"]]
)
@pytest.mark.parametrize("name", ["../auth/keys/3", "a/b", "x" * 51, "a b"])
def test_a_bad_name_is_refused_before_any_request(verb: list[str], name: str) -> None:
    # nothing listens on port 1: an attempted request would say "cannot reach llamactl"
    refused = llamactl("http://127.0.0.1:1", verb[0], name, *verb[1:])
    assert refused.returncode == 2 and "invalid instance name" in refused.stderr


def test_a_pasted_executable_path_is_the_binary_started(tmp_path: Path) -> None:
    # a "llama-server" of the user's own: it notes that it ran, then runs the stand-in
    own_build = tmp_path / "build" / "bin" / "llama-server"
    own_build.parent.mkdir(parents=True)
    ran = tmp_path / "own-build-ran"
    own_build.write_text(f'#!/bin/sh\necho "$0" > {ran}\nexec {sys.executable} "$@"\n')
    own_build.chmod(0o755)
    with serve_process(tmp_path) as serve:
        pasted = ["create", "mine", "--", f"STANDIN_PIDS={serve.pids}", str(own_build), "-m", "/m/q.gguf"]
        assert llamactl(serve.base_url, *pasted).returncode == 0
        bare = ["create", "configured", "--", "llama-server", "-m", "/m/q.gguf"]
        assert llamactl(serve.base_url, *bare).returncode == 0
        options = serve.client.get("/api/v1/instances/mine").json()["options"]
        assert options["command_override"] == str(own_build)
        assert "command_override" not in serve.client.get("/api/v1/instances/configured").json()["options"]
        assert "running" in llamactl(serve.base_url, "start", "mine").stdout
        assert ran.read_text() == f"{own_build}\n"
        assert "stopped" in llamactl(serve.base_url, "stop", "mine").stdout


def test_create_from_the_catalogue(tmp_path: Path) -> None:
    stores = build_served_stores(tmp_path / "stores")
    gguf_path = str(stores.hf.gguf_snapshot / "tiny-F32.gguf")
    with serve_process(tmp_path, environment=stores.environment) as serve:
        created = llamactl(serve.base_url, "create", "tiny", "--model", f"hf:{GGUF_REPO}:tiny-F32")
        assert created.returncode == 0, created.stderr
        row = created.stdout.splitlines()[1].split()
        assert row == ["tiny", "llama_cpp", "stopped", "-", gguf_path, "api"]
        backend_options = serve.client.get("/api/v1/instances/tiny").json()["options"]["backend_options"]
        assert backend_options["model"] == gguf_path
        # --backend is the API's backend_type: a safetensors dir for vLLM, by name, and not for llama.cpp
        chosen = ["create", "st", "--backend", "vllm", "--model", "hf:test-org/tiny-llama"]
        assert llamactl(serve.base_url, *chosen).returncode == 0
        options = serve.client.get("/api/v1/instances/st").json()["options"]
        assert options["backend_type"] == "vllm"
        assert options["backend_options"]["model"] == str(stores.hf.safetensors_snapshot)
        refused = llamactl(
            serve.base_url, "create", "x", "--backend", "llama-cpp", "--model", "hf:test-org/tiny-llama"
        )
        assert refused.returncode == 2 and "which llama.cpp cannot serve" in refused.stderr
        missing = llamactl(serve.base_url, "create", "x", "--model", "hf:nobody/nothing")
        assert missing.returncode == 2 and "404" in missing.stderr and "hf:nobody/nothing" in missing.stderr


def test_model_and_a_pasted_command_are_one_or_the_other() -> None:
    # refused before any request: nothing listens on port 1
    both = llamactl("http://127.0.0.1:1", "create", "x", "--model", "ollama:a:b", "--", "llama-server")
    assert both.returncode == 2 and "give --model ID or a server command after --, not both" in both.stderr
    neither = llamactl("http://127.0.0.1:1", "create", "x")
    assert neither.returncode == 2 and "give --model ID" in neither.stderr
    unmarked = llamactl("http://127.0.0.1:1", "create", "x", "llama-server", "-m", "a.gguf")
    assert unmarked.returncode == 2 and "put the server command after --" in unmarked.stderr
    unknown = llamactl("http://127.0.0.1:1", "create", "x", "--backend", "ollama", "--model", "ollama:a:b")
    assert unknown.returncode == 2 and "unknown backend 'ollama'" in unknown.stderr


def test_a_pasted_command_keeps_its_own_double_dash_and_model_flag(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        # options with no executable, as the API's parse-command takes them: --model is theirs here
        pasted = ["create", "--backend", "llama-cpp", "bare", "--", "--model", "/m/q.gguf", "--alias", "--"]
        assert llamactl(serve.base_url, *pasted).returncode == 0
        backend_options = serve.client.get("/api/v1/instances/bare").json()["options"]["backend_options"]
        assert (backend_options["model"], backend_options["alias"]) == ("/m/q.gguf", "--")
