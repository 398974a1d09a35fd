"""The three real backends serve the tiny local models: ready, a chat answer, a streamed answer.

Each backend is started directly (no llamactl yet) from the venv that
``scripts/install-test-backends.sh`` set up, and is judged ready by its
llamactl adapter's readiness probe. One start per backend serves all its
tests; its teardown fails the last of them if any process of it is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamactl.backends import BACKENDS, BackendType
from tests.e2e.real_backends import (
    LLAMA_SERVER,
    MLX_LM_SERVER,
    VLLM,
    RunningBackend,
    free_port,
    running_backend,
)
from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model, write_tiny_vllm_model

LOOPBACK = "127.0.0.1"
SERVED_NAME = "tiny"
# Models are local; offline mode makes the Hugging Face libraries fail fast instead of trying the hub.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class Served:
    server: RunningBackend
    model: str
    """The name requests use for the model."""


def _requires(executable: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not executable.exists(), reason=f"no {executable}: run scripts/install-test-backends.sh"
    )


def _serve_llama_cpp(tmp: Path) -> Iterator[Served]:
    model = write_tiny_gguf(tmp / "tiny.gguf")
    port = free_port()
    argv = [str(LLAMA_SERVER), "-m", str(model), "--host", LOOPBACK, "--port", str(port)]
    argv += ["--alias", SERVED_NAME, "--ctx-size", "512", "--threads", "2"]
    probe = BACKENDS[BackendType.LLAMA_CPP].readiness_probe
    with running_backend(argv, None, port, probe, timeout=30) as server:
        yield Served(server, SERVED_NAME)


def _serve_mlx(tmp: Path) -> Iterator[Served]:
    model = write_tiny_mlx_model(tmp / "mlx-model")
    # Without $HF_HOME/hub, GET /v1/models sends its 200 header and then fails.
    (tmp / "hf" / "hub").mkdir(parents=True)
    port = free_port()
    argv = [str(MLX_LM_SERVER), "--model", str(model), "--host", LOOPBACK, "--port", str(port)]
    env = {"HF_HOME": str(tmp / "hf"), **OFFLINE}
    backend = BACKENDS[BackendType.MLX_LM]
    with running_backend(argv, env, port, backend.readiness_probe, timeout=60) as server:
        yield Served(server, "default_model")


def _serve_vllm(tmp: Path) -> Iterator[Served]:
    model = write_tiny_vllm_model(tmp / "vllm-model")
    port = free_port()
    argv = [str(VLLM), "serve", str(model), "--host", LOOPBACK, "--port", str(port)]
    argv += ["--served-model-name", SERVED_NAME, "--max-model-len", "512", "--enforce-eager"]
    # In-process engine and eager mode: ~18 s to ready instead of ~54 s. A 1 GiB KV cache is plenty.
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", **OFFLINE}
    probe = BACKENDS[BackendType.VLLM].readiness_probe
    with running_backend(argv, env, port, probe, timeout=180) as server:
        yield Served(server, SERVED_NAME)


STARTERS = {
    "llama-cpp": (_serve_llama_cpp, LLAMA_SERVER),
    "mlx": (_serve_mlx, MLX_LM_SERVER),
    "vllm": (_serve_vllm, VLLM),
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=_requires(executable)) for name, (_, executable) in STARTERS.items()],
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    start, _ = STARTERS[request.param]
    yield from start(tmp_path_factory.mktemp(request.param))


def _chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Hello there"}],
        "temperature": 0,
        "max_tokens": 8,
        **extra,
    }


def test_a_chat_completion_has_content_and_repeats_at_temperature_zero(served: Served) -> None:
    answers = []
    for _ in range(2):
        response = httpx.post(
            f"{served.server.base_url}/v1/chat/completions", json=_chat_body(model=served.model), timeout=30
        )
        assert response.status_code == 200, response.text
        answers.append(response.json()["choices"][0]["message"]["content"])
    assert answers[0], "empty answer"
    assert answers[0] == answers[1]


def test_a_streamed_chat_completion_arrives_as_sse_chunks(served: Served) -> None:
    body = _chat_body(model=served.model, stream=True)
    with httpx.stream(
        "POST", f"{served.server.base_url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # Other lines are blank separators or SSE comments (mlx_lm.server opens with ": keepalive").
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
