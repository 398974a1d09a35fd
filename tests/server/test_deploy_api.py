"""``POST /api/v1/deploy`` against a real ``llamactl serve``, the stand-in as llama-server.

What a trainer's deploy step meets: a checkpoint path in, an instance that
answers on ``/v1/chat/completions`` out, or a 4xx that says what to do, with
nothing left behind. The real backends are in tests/e2e/test_deploy_real_backends.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamactl.deploy.llama_cpp_convert import LLAMA_CPP_BUILD, SCRIPTS_VARIABLE
from tests.deploy.test_llama_cpp_convert import CACHE
from tests.e2e.tiny_models import write_tiny_vllm_model
from tests.models.gguf_files import write_llama_gguf
from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process, standin_backends

ABSENT_COMMAND = "/nonexistent/bin/vllm"
CONVERTERS = {SCRIPTS_VARIABLE: str(CACHE / f"llama.cpp-{LLAMA_CPP_BUILD}")}
"""llama.cpp's converters as scripts/install-test-backends.sh put them in the cache: never fetched here."""


def _config_tail() -> str:
    # The stand-in is llama-server; vLLM and mlx_lm are "not installed" (their commands do not exist).
    tail = standin_backends((18440, 18449))
    head, _, rest = tail.partition("backends:\n")
    absent = f"  vllm: {{command: {ABSENT_COMMAND}}}\n  mlx: {{command: {ABSENT_COMMAND}}}\n"
    return f"{head}backends:\n{absent}{rest}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    environment = {"STANDIN_PIDS": str(tmp_path / "pids"), **CONVERTERS}
    with serve_process(tmp_path, _config_tail(), environment=environment) as running:
        yield running


def deploy(serve: Serve, body: dict[str, Any]) -> httpx.Response:
    return serve.client.post("/api/v1/deploy", json=body, timeout=60)


def test_a_gguf_file_is_deployed_to_llama_server_and_answers_a_chat(serve: Serve, tmp_path: Path) -> None:
    model = write_llama_gguf(tmp_path / "my-finetune.Q8_0.gguf")
    answer = deploy(serve, {"checkpoint_path": str(model), "config": {"context_length": 1024}})
    assert answer.status_code == 201, answer.text
    deployed = answer.json()
    assert deployed["success"] is True
    assert deployed["server_id"] == deployed["model_id"] == "my-finetune.Q8_0"
    assert deployed["status"] == "running" and deployed["backend_type"] == "llama_cpp"
    assert deployed["base_url"] == serve.base_url + "/v1"
    assert deployed["checkpoint"]["kind"] == "gguf_model"
    info = serve.client.get("/api/v1/instances/my-finetune.Q8_0").json()
    assert info["port"] == deployed["port"]
    assert info["options"]["backend_options"]["model"] == str(model)
    assert info["options"]["backend_options"]["ctx_size"] == 1024
    chat = httpx.post(
        deployed["base_url"] + "/chat/completions",
        json={"model": deployed["model_id"], "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": serve.client.headers["Authorization"]},
        timeout=30,
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    models = serve.client.get("/v1/models").json()["data"]
    assert "my-finetune.Q8_0" in [model["id"] for model in models]


def test_a_name_that_is_taken_is_a_409_and_the_running_instance_is_untouched(
    serve: Serve, tmp_path: Path
) -> None:
    model = write_llama_gguf(tmp_path / "taken.gguf")
    assert deploy(serve, {"checkpoint_path": str(model)}).status_code == 201
    again = deploy(serve, {"checkpoint_path": str(model)})
    assert again.status_code == 409 and "taken" in again.json()["details"]
    assert serve.client.get("/api/v1/instances/taken").json()["status"] == "running"
    # Refused before a conversion starts (here one llama.cpp's converter would refuse after seconds).
    converting = deploy(
        serve, {"checkpoint_path": str(write_tiny_vllm_model(tmp_path / "hf")), "name": "taken"}
    )
    assert converting.status_code == 409 and "give the deploy another name" in converting.json()["details"]


def _peft_adapter(directory: Path, base: str, rank: int = 8) -> Path:
    directory.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": base, "r": rank, "lora_alpha": 16,
              "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}  # fmt: skip
    (directory / "adapter_config.json").write_text(json.dumps(config))
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    (directory / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return directory


@pytest.mark.parametrize(
    ("checkpoint", "body", "status", "words"),
    [
        ("missing", {}, 404, ["does not exist"]),
        ("notes-dir", {}, 422, ["notes.txt"]),
        ("model.gguf", {"server_type": "vllm"}, 422, ["served by llama_cpp only", "server_type llama_cpp"]),
        # Only llama-server here: converted to GGUF, which the converter refuses for the toy tokenizer.
        ("hf-dir", {}, 422, ["convert_hf_to_gguf.py failed", "BPE pre-tokenizer was not recognized"]),
        ("adapter-missing-base", {}, 422, ["'org/absent-base' is not on this machine", "models pull"]),
        ("model.gguf", {"server_type": "tgi"}, 400, ["server_type"]),
        ("model.gguf", {"config": {"context_lenght": 4096}}, 400, ["context_lenght"]),
        ("model.gguf", {"config": {"context_length": 0}}, 400, ["context_length"]),
        ("model.gguf", {"name": "bad/name"}, 400, ["invalid instance name"]),
    ],
)
def test_what_cannot_be_deployed_is_a_4xx_that_says_why_and_creates_nothing(
    serve: Serve, tmp_path: Path, checkpoint: str, body: dict[str, Any], status: int, words: list[str]
) -> None:
    write_llama_gguf(tmp_path / "model.gguf")
    (tmp_path / "notes-dir").mkdir()
    (tmp_path / "notes-dir" / "notes.txt").write_text("not a model")
    write_tiny_vllm_model(tmp_path / "hf-dir")
    _peft_adapter(tmp_path / "adapter-missing-base", "org/absent-base")
    answer = deploy(serve, {"checkpoint_path": str(tmp_path / checkpoint), **body})
    assert answer.status_code == status, answer.text
    message = json.dumps(answer.json())
    for word in words:
        assert word in message
    assert serve.client.get("/api/v1/instances").json() == []


def test_a_deploy_whose_backend_fails_to_start_deletes_the_instance_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    model = write_llama_gguf(tmp_path / "crashes.gguf")
    environment = {"STANDIN_PIDS": str(pids), "STANDIN_FAULTS": "exit_at_start=3"}
    with serve_process(tmp_path, _config_tail(), environment=environment) as serve:
        answer = deploy(serve, {"checkpoint_path": str(model)})
        assert answer.status_code == 503, answer.text
        assert "exit" in answer.json()["details"]  # the backend's own end, not a bare "failed"
        assert serve.client.get("/api/v1/instances").json() == []
    # serve_process has checked that no stand-in it started is alive.


def test_llamactl_deploy_serves_a_relative_path_and_says_what_to_send(serve: Serve, tmp_path: Path) -> None:
    write_llama_gguf(tmp_path / "cli-model.gguf")
    (tmp_path / "empty").mkdir()
    connection = ["--url", serve.base_url, "--key", MANAGEMENT_KEY]
    deployed = subprocess.run(
        [sys.executable, "-m", "llamactl", "deploy", "cli-model.gguf", "--context-length=256", *connection],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "cli-model is running on llama_cpp: send model 'cli-model' to" in deployed.stdout
    info = serve.client.get("/api/v1/instances/cli-model").json()
    assert info["options"]["backend_options"]["ctx_size"] == 256
    refused = subprocess.run(
        [sys.executable, "-m", "llamactl", "deploy", "empty", *connection],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "422" in refused.stderr and "empty" in refused.stderr
