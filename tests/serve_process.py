"""A real `llamactl serve` process over the stand-in backend, for end-to-end tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.instance.helpers import STANDIN, assert_none_alive

MANAGEMENT_KEY = "mgmt-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Serve:
    def __init__(self, process: subprocess.Popen[str], base_url: str, pids: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.pids = pids
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30
        )

    def create(self, name: str, faults: str = "", start: bool = True) -> None:
        body = {
            "backend_type": "llama_cpp",
            "backend_options": {"model": "/m/tiny.gguf", "alias": "tiny"},
            "environment": {"STANDIN_PIDS": str(self.pids), "STANDIN_FAULTS": faults},
        }
        assert self.client.post(f"/api/v1/instances/{name}", json=body).status_code == 201
        if start:
            assert self.client.post(f"/api/v1/instances/{name}/start").status_code == 200


STANDIN_BACKENDS = f"""
backends:
  llama-cpp: {{command: {sys.executable}, args: [{STANDIN}]}}
instances: {{port_range: [18400, 18499]}}
"""


@contextmanager
def serve_process(
    tmp_path: Path, config_tail: str = STANDIN_BACKENDS, stop_timeout: float = 30
) -> Iterator[Serve]:
    """`llamactl serve` on a free port; on exit, SIGTERM and a check that no stand-in is left.

    ``config_tail`` is the YAML after ``data_dir``, ``server`` and ``auth``: by
    default the stand-in as llama-cpp backend.
    """
    port = free_port()
    config = tmp_path / "llamactl.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
server: {{port: {port}}}
auth: {{management_keys: [{MANAGEMENT_KEY}]}}
{config_tail}
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "llamactl", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stderr.readline().startswith("llamactl: serving")
    running = Serve(process, f"http://127.0.0.1:{port}", tmp_path / "pids")
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=stop_timeout) == 0
        assert_none_alive(running.pids)
