"""``GET /api/v1/instances/{name}/export`` and ``llamactl export`` against a real ``llamactl serve``.

The stand-in is llama-server: the exported script is run by itself, with no
llamactl around, and must serve. The real backends are in
tests/e2e/test_export_real_backends.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.models.gguf_files import write_lora_gguf
from tests.serve_process import Serve, free_port, run_cli, serve_process, standin_backends

STARTUP_DEADLINE = 30.0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with serve_process(tmp_path, standin_backends((18450, 18459))) as running:
        yield running


def _create(serve: Serve, tmp_path: Path) -> Path:
    adapter = write_lora_gguf(tmp_path / "my-lora.gguf")
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": "/m/tiny.gguf", "alias": "tiny", "lora": [str(adapter)]},
        "environment": {"STANDIN_PIDS": str(serve.pids), "HF_TOKEN": "hf_not_for_sharing"},
    }
    assert serve.client.post("/api/v1/instances/tiny", json=body).status_code == 201
    return adapter


def _wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        assert process.poll() is None, "the exported script exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered /health on {port} within {STARTUP_DEADLINE:g} s")


def test_the_export_is_a_tar_whose_script_serves_the_instance_without_llamactl(
    serve: Serve, tmp_path: Path
) -> None:
    adapter = _create(serve, tmp_path)
    answer = serve.client.get("/api/v1/instances/tiny/export", params={"target": "llama-server"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/gzip"
    assert answer.headers["content-disposition"] == 'attachment; filename="tiny-llama-server.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as archive:
        assert sorted(archive.getnames()) == [
            "adapters/my-lora.gguf",
            "export_manifest.json",
            "llama-server_launch.sh",
        ]
        archive.extractall(tmp_path / "export", filter="data")
    export = tmp_path / "export"
    script = (export / "llama-server_launch.sh").read_text()
    assert "hf_not_for_sharing" not in script and "export HF_TOKEN\n" in script
    assert f"export STANDIN_PIDS={serve.pids}" in script
    assert "export PATH" not in script and "export HOME" not in script  # llamactl's own environment
    manifest = json.loads((export / "export_manifest.json").read_text())
    assert manifest["backend_version"].startswith("Python ")  # the stand-in's executable
    assert manifest["adapters"][0]["source"] == str(adapter)

    port = free_port()
    environment = {"PATH": os.environ["PATH"], "PORT": str(port), "HF_TOKEN": "mine"}
    process = subprocess.Popen(
        ["bash", str(export / "llama-server_launch.sh")], env=environment, start_new_session=True
    )
    try:
        _wait_healthy(port, process)
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ({"target": "vllm"}, 400, ["'vllm' does not run llama-server", "llama-server, ollama"]),
        ({}, 400, ["target: required"]),
    ],
)
def test_a_target_that_does_not_fit_is_a_400_that_names_those_that_do(
    serve: Serve, tmp_path: Path, query: dict[str, str], status: int, words: list[str]
) -> None:
    _create(serve, tmp_path)
    answer = serve.client.get("/api/v1/instances/tiny/export", params=query)
    assert answer.status_code == status
    for word in words:
        assert word in answer.json()["details"]


def test_an_unknown_instance_is_a_404(serve: Serve) -> None:
    answer = serve.client.get("/api/v1/instances/nope/export", params={"target": "llama-server"})
    assert answer.status_code == 404


def test_the_cli_unpacks_the_export_into_a_new_dir_and_refuses_one_in_use(
    serve: Serve, tmp_path: Path
) -> None:
    _create(serve, tmp_path)
    directory = tmp_path / "exports" / "tiny-ollama"
    done = run_cli(serve, "export", "tiny", "--target", "ollama", str(directory))
    assert done.returncode == 0, done.stderr
    assert "wrote 4 files" in done.stdout and f"run it: {directory}/ollama_create.sh" in done.stdout
    modelfile = (directory / "Modelfile").read_text()
    assert "FROM /m/tiny.gguf" in modelfile and "ADAPTER ./adapters/my-lora.gguf" in modelfile
    assert os.access(directory / "ollama_create.sh", os.X_OK)

    again = run_cli(serve, "export", "tiny", "--target", "ollama", str(directory))
    assert again.returncode == 2 and "is not an empty dir" in again.stderr
    wrong = run_cli(serve, "export", "tiny", "--target", "mlx-serve", str(tmp_path / "other"))
    assert wrong.returncode == 2 and "400" in wrong.stderr and "llama-server, ollama" in wrong.stderr
    assert not (tmp_path / "other").exists()


def test_the_openapi_document_describes_the_export_and_its_target(serve: Serve) -> None:
    operation = serve.client.get("/api/v1/openapi.json").json()["paths"]["/api/v1/instances/{name}/export"][
        "get"
    ]
    assert "application/gzip" in operation["responses"]["200"]["content"]
    assert "target" in [parameter["name"] for parameter in operation["parameters"]]
