"""The lifecycle manager running the real backends, each created from a pasted command.

vLLM, which takes ~30 s to start here, is exercised once, through `llamactl serve`
(tests/e2e/test_serve_real_backends.py).

llama-server, mlx_lm.server and vLLM (CPU) are installed by scripts/install-test-backends.sh;
the models are tiny random-weight ones written by tests/e2e/tiny_models.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from llamactl.backends import BackendType, parse_command
from llamactl.instance.errors import StartFailed, StartTimedOut
from llamactl.instance.launch import BackendSettings
from llamactl.instance.manager import InstanceManager
from llamactl.instance.options import instance_options_from_json
from llamactl.instance.status import InstanceStatus
from llamactl.store import Store
from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model
from tests.instance.helpers import eventually, settings

BIN = Path(sys.prefix) / "bin"


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def real_manager(tmp_path: Path, **overrides: Any) -> InstanceManager:
    backends = {
        BackendType.LLAMA_CPP: BackendSettings(command=str(BIN / "llama-server")),
        BackendType.MLX_LM: BackendSettings(command=str(BIN / "mlx_lm.server")),
        BackendType.VLLM: BackendSettings(command=str(BIN / "vllm"), args=["serve"]),
    }
    options = {"backends": backends, "start_timeout": 180.0, "stop_grace": 10.0, **overrides}
    return InstanceManager(settings(tmp_path, **options), Store(tmp_path / "llamactl.db"))


def pasted(backend: str, command: str, **instance_options: Any) -> Any:
    parsed = parse_command(backend, command)
    return instance_options_from_json(
        {
            "backend_type": parsed.backend_type.value,
            "backend_options": msgspec.to_builtins(parsed.backend_options),
            "environment": parsed.environment,
            **instance_options,
        }
    )


async def chat(m: InstanceManager, name: str, model: str, stream: bool = False) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "temperature": 0,
    }
    async with m.lease(name) as leased, httpx.AsyncClient(base_url=leased.base_url, timeout=60) as client:
        if not stream:
            return await client.post("/v1/chat/completions", json=body)
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            await response.aread()
            return response


def test_llama_server_start_chat_crash_restart_stop(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")

    async def scenario() -> None:
        m = real_manager(tmp_path)
        await m.open()
        m.create(
            "tiny", pasted("llama-cpp", f"llama-server -m {model} --alias tiny -c 512 -t 2", restart_delay=0)
        )
        info = await m.start("tiny")
        assert info.status is InstanceStatus.RUNNING
        response = await chat(m, "tiny", "tiny")
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] is not None
        streamed = await chat(m, "tiny", "tiny", stream=True)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.text.rstrip().endswith("data: [DONE]")
        # a crash (SIGKILL to the server itself) is noticed and the instance restarted
        group = m.get("tiny").pid
        assert group is not None
        server = [pid for pid in group_members(group) if pid != group]
        os.kill(server[0], signal.SIGKILL)
        for _ in range(200):
            if m.get("tiny").restarts == 1 and m.get("tiny").status is InstanceStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert m.get("tiny").restarts == 1 and m.get("tiny").status is InstanceStatus.RUNNING
        assert (await chat(m, "tiny", "tiny")).status_code == 200
        group = m.get("tiny").pid
        assert group is not None
        await m.stop("tiny")
        assert group_members(group) == []
        assert "tiny" in "\n".join(m.log_tail("tiny", 200))
        await m.close()

    asyncio.run(scenario())


def test_llama_server_with_a_missing_model_fails_fast_with_its_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        m = real_manager(tmp_path)
        await m.open()
        m.create("broken", pasted("llama-cpp", f"llama-server -m {tmp_path}/missing.gguf"))
        with pytest.raises(Exception, match="exited with code 1"):
            await m.start("broken")
        assert any("failed to load model" in line for line in m.get("broken").last_log_lines)
        await m.close()

    asyncio.run(scenario())


def test_mlx_lm_server_is_running_only_once_its_model_is_loaded(tmp_path: Path) -> None:
    model_dir = write_tiny_mlx_model(tmp_path / "mlx-model")
    hf_home = tmp_path / "hf"
    (hf_home / "hub").mkdir(parents=True)

    async def scenario() -> None:
        m = real_manager(tmp_path)
        await m.open()
        m.create("mac", pasted("mlx", f"HF_HOME={hf_home} mlx_lm.server --model {model_dir}"))
        assert (await m.start("mac")).status is InstanceStatus.RUNNING
        response = await chat(m, "mac", "default_model")
        assert response.status_code == 200
        await m.close()

    asyncio.run(scenario())


def test_mlx_lm_server_with_a_bad_model_never_becomes_running(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    (hf_home / "hub").mkdir(parents=True)

    async def scenario() -> None:
        # mlx_lm.server keeps running and /health answers, but the model never loads.
        m = real_manager(tmp_path, start_timeout=20.0)
        await m.open()
        m.create(
            "mac", pasted("mlx", f"HF_HOME={hf_home} HF_HUB_OFFLINE=1 mlx_lm.server --model {tmp_path}/none")
        )
        with pytest.raises((StartFailed, StartTimedOut), match=r"ready in time|exited"):
            await m.start("mac")
        # Answered as the start gave up; the half-started server is then stopped.
        await eventually(lambda: m.get("mac").status is InstanceStatus.FAILED, timeout=30)
        await m.close()

    asyncio.run(scenario())
