"""`llamactl serve` with the stand-in backend for the benchmarks, started by the tests' one launcher."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.instance.helpers import STANDIN
from tests.serve_process import MANAGEMENT_KEY, free_port, standin_backends, start_serve

__all__ = [
    "HEADERS",
    "KEY",
    "STANDIN",
    "create_standin_instance",
    "first_byte_seconds",
    "free_port",
    "rss_megabytes",
    "start_llamactl",
    "wait_until_up",
]

KEY = MANAGEMENT_KEY
HEADERS = {"Authorization": f"Bearer {KEY}"}


def wait_until_up(url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def start_llamactl(
    workdir: Path, port_range: tuple[int, int], instances: str = ""
) -> tuple[subprocess.Popen[str], str]:
    """A serving `llamactl serve` whose llama-cpp backend is the stand-in; the process and base URL.

    ``instances`` is more of the ``instances:`` section, as YAML flow-mapping members.
    """
    serving = start_serve(workdir, standin_backends(port_range, instances))
    return serving.process, serving.base_url


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def create_standin_instance(
    client: httpx.Client, name: str, faults: str = "", pids: Path | None = None
) -> None:
    """An instance ``name`` on the stand-in, misbehaving as ``faults`` says, noting its PIDs in ``pids``."""
    environment = {"STANDIN_FAULTS": faults, **({"STANDIN_PIDS": str(pids)} if pids is not None else {})}
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": f"/m/{name}.gguf"},
        "environment": environment,
    }
    client.post(f"/api/v1/instances/{name}", json=body).raise_for_status()


def first_byte_seconds(client: httpx.Client, model: str) -> float:
    """From sending a streamed chat naming ``model`` until the first byte of its answer."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    began = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        next(response.iter_raw())
        return time.perf_counter() - began
