"""Start `llamactl serve` with the stand-in backend for the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin_backend.py"
KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


def start_llamactl(workdir: Path, port_range: tuple[int, int]) -> tuple[subprocess.Popen[bytes], str]:
    """A `llamactl serve` whose llama-cpp backend is the stand-in; returns the process and base URL."""
    port = free_port()
    config = workdir / "llamactl.yaml"
    config.write_text(
        f"""
data_dir: {workdir / "data"}
server: {{port: {port}}}
auth: {{management_keys: [{KEY}]}}
backends:
  llama-cpp: {{command: {sys.executable}, args: [{STANDIN}]}}
instances: {{port_range: [{port_range[0]}, {port_range[1]}]}}
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "llamactl", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base + "/api/v1/version", HEADERS)
    return process, base


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
