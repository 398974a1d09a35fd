"""End to end: ``POST /api/v1/deploy`` of what a trainer leaves behind, served by the real backends.

A tiny random-weight HF Llama (as transformers saves one) goes to vLLM with
``auto``; a trainer's output dir deploys its latest checkpoint. A LoRA made
by peft goes to vLLM over its base as it is, to mlx_lm and to llama-server
converted, and answers as ``instance/adapter`` on each with transformers +
peft's greedy tokens, which differ from the base model's (every backend runs
the float32 weights: llama-server's base is converted with
``quantization: F32``). A GGUF goes to llama-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.deploy.llama_cpp_convert import LLAMA_CPP_BUILD, SCRIPTS_VARIABLE
from tests.deploy.test_llama_cpp_convert import CACHE
from tests.e2e.peft_reference import greedy_reply, write_peft_lora
from tests.e2e.test_serve_real_backends import BIN, Server, real_server, remember_group
from tests.e2e.tiny_models import (
    with_llama2_tokenizer,
    write_tiny_gguf,
    write_tiny_peft_lora,
    write_tiny_vllm_model,
)

# What vLLM needs on a CPU-only machine, set once for the backend as a user would in the config.
BACKENDS = f"""
backends:
  llama-cpp: {{command: {BIN / "llama-server"}}}
  mlx:
    command: {BIN / "mlx_lm.server"}
    environment: {{HF_HUB_OFFLINE: "1"}}
  vllm:
    command: {BIN / "vllm"}
    args: [serve]
    environment: {{VLLM_ENABLE_V1_MULTIPROCESSING: "0", VLLM_CPU_KVCACHE_SPACE: "1", HF_HUB_OFFLINE: "1"}}
instances:
  port_range: [18760, 18779]
  on_demand_start_timeout: 240
"""
# float32 as written: "auto" picks bfloat16, which oneDNN cannot run here without AVX-512.
VLLM_CONFIG = {"context_length": 512, "backend_options": {"dtype": "float32", "enforce_eager": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The converters scripts/install-test-backends.sh put in the cache, not fetched again at test time.
    scripts = {SCRIPTS_VARIABLE: str(CACHE / f"llama.cpp-{LLAMA_CPP_BUILD}")}
    with real_server(tmp_path_factory.mktemp("serve"), BACKENDS, scripts) as running:
        yield running


def deploy(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    answer = server.api.post("/api/v1/deploy", json=body)
    assert answer.status_code == 201, answer.text
    deployed: dict[str, Any] = answer.json()
    remember_group(server, deployed["server_id"])
    return deployed


PROMPT, MAX_TOKENS = "the", 8


def greedy(server: Server, model: str) -> str:
    reply = server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS, temperature=0
    )
    return reply.choices[0].message.content or ""


def stop(server: Server, name: str) -> None:
    assert server.api.post(f"/api/v1/instances/{name}/stop").status_code == 200


def test_a_trainer_output_dir_goes_to_vllm_with_auto_and_its_adapter_answers_as_peft_does_on_each_backend(
    server: Server, tmp_path: Path
) -> None:
    run = tmp_path / "sft-run"
    write_tiny_vllm_model(run / "checkpoint-50")
    # A tokenizer llama.cpp's convert_hf_to_gguf.py knows, for the llama-server deploy below.
    base = with_llama2_tokenizer(write_tiny_vllm_model(run / "checkpoint-100"))
    (run / "checkpoint-150").mkdir()  # a save cut short: passed over
    deployed = deploy(server, {"checkpoint_path": str(run), "config": VLLM_CONFIG})
    assert deployed["backend_type"] == "vllm" and deployed["server_id"] == "sft-run"
    checkpoint = deployed["checkpoint"]
    assert checkpoint["path"] == str(run / "checkpoint-100") and checkpoint["trainer"]["step"] == 100
    base_tokens = greedy_reply(base, None, PROMPT, MAX_TOKENS)
    assert greedy(server, deployed["model_id"]) == base_tokens
    stop(server, "sft-run")

    adapter = write_peft_lora(base, tmp_path / "my-lora")
    adapted = greedy_reply(base, adapter, PROMPT, MAX_TOKENS)
    assert adapted != base_tokens  # the reference itself shows the adapter
    deployed = deploy(server, {"checkpoint_path": str(adapter), "name": "tuned", "config": VLLM_CONFIG})
    assert deployed["model_id"] == "tuned/my-lora" and deployed["model_name"] == "my-lora"
    listed = server.api.get(f"/api/v1/instances/{deployed['server_id']}").json()["options"]
    assert listed["backend_options"]["max_lora_rank"] == 8
    assert greedy(server, deployed["model_id"]) == adapted
    assert greedy(server, "tuned") == base_tokens  # the instance's own name is the base model
    stop(server, "tuned")

    on_mlx = deploy(server, {"checkpoint_path": str(adapter), "server_type": "mlx_lm", "name": "tuned-mlx"})
    assert on_mlx["backend_type"] == "mlx_lm" and on_mlx["model_id"] == "tuned-mlx/my-lora"
    assert greedy(server, on_mlx["model_id"]) == adapted  # converted to mlx_lm's format
    stop(server, "tuned-mlx")

    on_llama = deploy(
        server,
        {
            "checkpoint_path": str(adapter),
            "server_type": "llama_cpp",
            "name": "tuned-gguf",
            "config": {"quantization": "F32"},
        },
    )
    assert on_llama["backend_type"] == "llama_cpp" and on_llama["model_id"] == "tuned-gguf/my-lora"
    assert greedy(server, "tuned-gguf") == base_tokens  # loaded at scale 0: applied only when asked for
    assert greedy(server, on_llama["model_id"]) == adapted  # converted to a GGUF LoRA
    # The same prompt again, which b10434 would answer from the prompt the adapter's request cached.
    assert greedy(server, "tuned-gguf") == base_tokens
    stop(server, "tuned-gguf")


def test_an_adapter_whose_base_model_is_absent_is_refused_and_starts_nothing(
    server: Server, tmp_path: Path
) -> None:
    adapter = write_tiny_peft_lora(tmp_path / "orphan-lora", base_model="org/never-downloaded")
    answer = server.api.post("/api/v1/deploy", json={"checkpoint_path": str(adapter)})
    assert answer.status_code == 422
    assert "org/never-downloaded" in answer.json()["details"] and "models pull" in answer.json()["details"]
    names = [instance["name"] for instance in server.api.get("/api/v1/instances").json()]
    assert "orphan-lora" not in names


def test_a_gguf_goes_to_llama_server(server: Server, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-q.gguf")
    deployed = deploy(server, {"checkpoint_path": str(model), "server_type": "ollama"})
    assert deployed["backend_type"] == "llama_cpp" and deployed["status"] == "running"
    assert greedy(server, deployed["model_id"])
    stop(server, deployed["server_id"])
