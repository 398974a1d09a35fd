"""End to end: `llamactl serve` as a process, the real backends, the official openai client.

Each instance is created the way a user would: its real command pasted into
parse-command, the result posted as the instance. One serve process is shared
by the module; vLLM is started once (about 20 s on these machines).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.test_lifecycle_real_backends import group_members
from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model, write_tiny_vllm_model
from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process

BIN = Path(sys.prefix) / "bin"


class Server:
    """A `llamactl serve` over the real backends, with the helpers these tests share."""

    def __init__(self, serve: Serve) -> None:
        self.base_url = serve.base_url
        self.api = serve.client
        self.api.timeout = httpx.Timeout(300)  # vLLM takes ~30 s to start here
        self.groups: list[int] = []
        """Process groups of the backends started, checked for leftovers at the end."""

    def paste(self, name: str, backend: str, command: str) -> dict[str, object]:
        parsed = self.api.post(f"/api/v1/backends/{backend}/parse-command", json={"command": command})
        assert parsed.status_code == 200, parsed.text
        created = self.api.post(f"/api/v1/instances/{name}", json=parsed.json())
        assert created.status_code == 201, created.text
        body: dict[str, object] = created.json()
        return body

    def openai(self, key: str = MANAGEMENT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0, timeout=300)


REAL_BACKENDS = f"""
backends:
  llama-cpp: {{command: {BIN / "llama-server"}}}
  mlx: {{command: {BIN / "mlx_lm.server"}}}
  vllm: {{command: {BIN / "vllm"}, args: [serve]}}
instances:
  port_range: [18700, 18799]
  on_demand_start_timeout: 240
"""


@contextmanager
def real_server(
    directory: Path, config: str = REAL_BACKENDS, environment: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """`llamactl serve` over the real backends; on exit, a check that no backend it started is left."""
    with serve_process(directory, config, stop_timeout=120, environment=environment) as serve:
        running = Server(serve)
        yield running
    assert [pid for group in running.groups for pid in group_members(group)] == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with real_server(tmp_path_factory.mktemp("serve")) as running:
        yield running


def remember_group(server: Server, name: str) -> None:
    group = server.api.get(f"/api/v1/instances/{name}").json().get("pid")
    if group is not None:
        server.groups.append(group)


def test_llama_server_pasted_chat_stream_models_logs(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    created = server.paste("tiny", "llama-cpp", f"llama-server -m {model} --alias tiny -c 512 -t 2")
    assert created["status"] == "stopped"
    client = server.openai()
    # on-demand start: the first request starts the stopped instance
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content is not None
    remember_group(server, "tiny")
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
    )
    assert len(chunks) >= 2 and chunks[-1].choices[0].finish_reason is not None
    models = {m.id: m for m in client.models.list().data}
    assert "tiny" in models
    props = server.api.get("/llama-cpp/tiny/props")  # llama-server's own endpoint
    assert props.status_code == 200 and "default_generation_settings" in props.json()
    logs = server.api.get("/api/v1/instances/tiny/logs?lines=400").text
    assert "starting:" in logs and "llama-server" in logs
    assert server.api.post("/api/v1/instances/tiny/stop").json()["status"] == "stopped"


def test_keys_and_permissions_with_the_openai_client(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = write_tiny_gguf(tmp_path_factory.mktemp("gguf2") / "tiny.gguf")
    server.paste("other", "llama-cpp", f"llama-server -m {model} -c 256 -t 2")
    created = server.api.post(
        "/api/v1/auth/keys", json={"name": "app", "permission_mode": "per_instance", "instances": ["other"]}
    )
    key = created.json()["key"]
    limited = server.openai(key)
    assert [m.id for m in limited.models.list().data] == ["other"]
    reply = limited.completions.create(model="other", prompt="hello", max_tokens=4, temperature=0)
    assert reply.choices[0].text is not None
    remember_group(server, "other")
    with pytest.raises(openai.PermissionDeniedError):
        limited.completions.create(model="tiny", prompt="hello", max_tokens=4)
    with pytest.raises(openai.AuthenticationError):
        server.openai("wrong-key").models.list()
    with pytest.raises(openai.NotFoundError):
        server.openai().completions.create(model="missing", prompt="x", max_tokens=1)


def test_mlx_lm_server_pasted_and_chatted(server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("mlx")
    model = write_tiny_mlx_model(base / "model")
    (base / "hf" / "hub").mkdir(parents=True)
    server.paste("mac", "mlx", f"HF_HOME={base / 'hf'} mlx_lm.server --model {model}")
    reply = server.openai().chat.completions.create(
        model="mac", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    remember_group(server, "mac")
    stream = server.openai().chat.completions.create(
        model="mac", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert len(list(stream)) >= 1
    assert server.api.post("/api/v1/instances/mac/stop").json()["status"] == "stopped"


def test_vllm_pasted_and_chatted(server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = write_tiny_vllm_model(tmp_path_factory.mktemp("vllm") / "model")
    command = (
        "VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 "
        f"vllm serve {model} --served-model-name tiny-vllm --enforce-eager --max-model-len 512"
        # float32 as written: "auto" picks bfloat16, which oneDNN cannot run here without AVX-512
        " --dtype float32"
    )
    server.paste("big", "vllm", command)
    started = server.api.post("/api/v1/instances/big/start")
    assert started.status_code == 200, started.text
    remember_group(server, "big")
    reply = server.openai().chat.completions.create(
        model="big", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.model == "tiny-vllm"  # the request's "big" was rewritten to vLLM's served name
    stream = server.openai().chat.completions.create(
        model="big", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert len(list(stream)) >= 2
    # vLLM stays running: the module's SIGTERM must stop it with everything else
