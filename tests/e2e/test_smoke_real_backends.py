"""End to end: ``llamactl smoke`` of instances of the real llama-server and mlx_lm.server.

Each instance is created as a user would, its command pasted into
parse-command, and started; the smoke check then runs a second copy of that
command on a port of its own while the instance goes on serving. mlx_lm is
the case the served-name rule is for: it lists the hub cache's models before
the one it serves, and serves that one as ``default_model``, a name it never
lists.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model
from tests.serve_process import Serve, serve_process

BIN = Path(sys.prefix) / "bin"
REAL_BACKENDS = f"""
backends:
  llama-cpp: {{command: {BIN / "llama-server"}}}
  mlx: {{command: {BIN / "mlx_lm.server"}}}
instances:
  port_range: [18780, 18789]
  on_demand_start_timeout: 240
"""
SMOKE_TIMEOUT = 240


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve_process(tmp_path_factory.mktemp("serve"), REAL_BACKENDS, stop_timeout=120) as running:
        running.client.timeout = SMOKE_TIMEOUT + 30
        yield running


def paste_and_start(serve: Serve, name: str, backend: str, command: str) -> dict[str, Any]:
    parsed = serve.client.post(f"/api/v1/backends/{backend}/parse-command", json={"command": command})
    assert parsed.status_code == 200, parsed.text
    assert serve.client.post(f"/api/v1/instances/{name}", json=parsed.json()).status_code == 201
    started = serve.client.post(f"/api/v1/instances/{name}/start")
    assert started.status_code == 200, started.text
    info: dict[str, Any] = started.json()
    return info


def smoke(serve: Serve, name: str) -> dict[str, Any]:
    answer = serve.client.post(f"/api/v1/instances/{name}/smoke", json={"timeout": SMOKE_TIMEOUT})
    assert answer.status_code == 200, answer.text
    entry: dict[str, Any] = answer.json()
    assert entry["ok"] is True, entry
    return entry


def groups_running(model: Path) -> set[int]:
    """The process groups of the live processes whose command line names ``model``."""
    groups = set()
    for process in psutil.process_iter(["cmdline", "status"]):
        if str(model) in (process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(process.pid))
    return groups


def test_llama_server_is_smoked_by_its_model_path_beside_the_running_instance(
    serve: Serve, tmp_path: Path
) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    info = paste_and_start(serve, "tiny", "llama-cpp", f"llama-server -m {model} -c 512 -t 2")
    entry = smoke(serve, "tiny")
    assert entry["model"] == str(model)  # no --alias: llama-server serves and lists it by its path
    assert entry["first_line"]  # whatever the random weights say, a line of it
    timings = entry["timings"]
    assert 0 < timings["ready_seconds"] <= timings["listed_seconds"] < timings["total_seconds"]
    assert groups_running(model) == {info["pid"]}  # the run's copy is gone, the instance runs on
    assert serve.client.get("/api/v1/instances/tiny").json()["status"] == "running"
    history = serve.client.get("/api/v1/instances/tiny/history").json()["history"]
    (started,) = [e for e in history if e["kind"] == "start"]
    assert started["executable"] == str(BIN / "llama-server")
    assert started["version"].startswith("version: ")  # llama-server prints it on stderr
    assert history[-1] == entry
    assert serve.client.post("/api/v1/instances/tiny/stop").status_code == 200


def test_mlx_lm_server_is_smoked_as_default_model_which_it_never_lists(serve: Serve, tmp_path: Path) -> None:
    model = write_tiny_mlx_model(tmp_path / "model")
    (tmp_path / "hf" / "hub").mkdir(parents=True)
    info = paste_and_start(serve, "mac", "mlx", f"HF_HOME={tmp_path / 'hf'} mlx_lm.server --model {model}")
    entry = smoke(serve, "mac")
    assert entry["model"] == "default_model"
    assert entry["first_line"]
    assert groups_running(model) == {info["pid"]}  # the run's copy is gone, the instance runs on
    history = serve.client.get("/api/v1/instances/mac/history").json()["history"]
    (started,) = [e for e in history if e["kind"] == "start"]
    assert started["executable"] == str(BIN / "mlx_lm.server")
    # mlx_lm.server has no --version, and says so
    assert started["version"] is None and "unrecognized arguments: --version" in started["version_error"]
    assert serve.client.post("/api/v1/instances/mac/stop").status_code == 200
