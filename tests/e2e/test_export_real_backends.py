"""End to end: ``llamactl export`` of a deployed LoRA, and the exported script serving it by itself.

A tiny HF model and a PEFT LoRA are deployed through llamactl, the instance's
greedy answer with its adapter is recorded, the instance is exported with the
CLI and stopped, and the exported launch script is run alone, in an empty
environment (``env -i``, its own HOME), on a port of its own. It must serve
the model, pass the smoke check (``/health``, ``/v1/models``, a chat), and
answer with the adapter applied exactly as llamactl's instance did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamactl.deploy.llama_cpp_convert import LLAMA_CPP_BUILD, SCRIPTS_VARIABLE
from tests.deploy.test_llama_cpp_convert import CACHE
from tests.e2e.test_deploy_real_backends import deploy, greedy, stop
from tests.e2e.test_serve_real_backends import BIN, Server, real_server
from tests.e2e.tiny_models import with_llama2_tokenizer, write_tiny_peft_lora, write_tiny_vllm_model
from tests.serve_process import MANAGEMENT_KEY, free_port_in

BACKENDS = f"""
backends:
  llama-cpp: {{command: {BIN / "llama-server"}}}
instances:
  port_range: [18790, 18799]
  on_demand_start_timeout: 240
"""
EXPORTED_PORTS = range(18470, 18480)
READY_DEADLINE = 120.0
"""Seconds for the exported llama-server to be ready."""
STOP_DEADLINE = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    scripts = {SCRIPTS_VARIABLE: str(CACHE / f"llama.cpp-{LLAMA_CPP_BUILD}")}
    with real_server(tmp_path_factory.mktemp("serve"), BACKENDS, scripts) as running:
        yield running


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = with_llama2_tokenizer(write_tiny_vllm_model(tmp_path_factory.mktemp("base") / "tiny-base"))
    return write_tiny_peft_lora(tmp_path_factory.mktemp("lora") / "my-lora", base_model=str(base))


def _export(server: Server, name: str, target: str, directory: Path) -> Path:
    environment = {**os.environ, "LLAMACTL_URL": server.base_url, "LLAMACTL_API_KEY": MANAGEMENT_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "llamactl", "export", name, "--target", target, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    script = directory / f"{target}_launch.sh"
    assert f"run it: {script}" in done.stdout
    return script


@contextmanager
def _run_alone(script: Path, home: Path, port: int) -> Iterator[Path]:
    """The script in a clean environment; its whole process group killed on the way out."""
    log = home / "exported.log"
    home.mkdir(exist_ok=True)
    command = [
        "env",
        "-i",
        f"PATH={BIN}:/usr/bin:/bin",
        f"HOME={home}",
        f"PORT={port}",
        "bash",
        str(script),
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_DEADLINE)


def _smoke(port: int, log: Path, deadline: float) -> httpx.Client:
    """Ready as the smoke check has it: /health 200, then /v1/models lists a model."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        try:
            if client.get("/health").status_code == 200:
                models = client.get("/v1/models")
                if models.status_code == 200 and models.json()["data"]:
                    return client
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"the exported server was not ready within {deadline:g} s:\n{log.read_text()[-3000:]}"
    )


def _chat(client: httpx.Client, body: dict[str, Any]) -> str:
    request = {"messages": [{"role": "user", "content": "the"}], "max_tokens": 8, "temperature": 0, **body}
    answer = client.post("/v1/chat/completions", json=request)
    assert answer.status_code == 200, answer.text
    content: str = answer.json()["choices"][0]["message"]["content"]
    return content


def test_an_exported_llama_server_serves_the_adapter_by_itself_as_the_instance_did(
    server: Server, adapter: Path, tmp_path: Path
) -> None:
    deployed = deploy(server, {"checkpoint_path": str(adapter), "server_type": "llama_cpp", "name": "tuned"})
    assert deployed["model_id"] == "tuned/my-lora"
    adapted, base = greedy(server, "tuned/my-lora"), greedy(server, "tuned")
    assert adapted and adapted != base
    script = _export(server, "tuned", "llama-server", tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "export_manifest.json").read_text())
    assert manifest["quant"] == "F16" and manifest["adapters"][0]["path"] == "adapters/my-lora.gguf"
    assert manifest["backend_version"] and "version" in manifest["backend_version"]
    stop(server, "tuned")

    port = free_port_in(EXPORTED_PORTS)
    with _run_alone(script, tmp_path / "home", port) as log:
        client = _smoke(port, log, READY_DEADLINE)
        assert _chat(client, {"model": "tuned"})  # the smoke check's chat
        # As llamactl sends a request for tuned/my-lora: the adapter, id 0, at scale 1, and (as for every
        # request to an instance with adapters) no prompt cached under other scales, which b10434 reuses.
        uncached = {"model": "tuned", "cache_prompt": False}
        assert _chat(client, {**uncached, "lora": [{"id": 0, "scale": 1.0}]}) == adapted
        assert _chat(client, uncached) == base  # loaded at scale 0, as the instance was
