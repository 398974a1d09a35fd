"""Start a real backend server for a test and make sure it is gone afterwards.

The executables are the ones ``scripts/install-test-backends.sh`` puts in the
venv that runs the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamactl.backends import ReadinessProbe

VENV_BIN = Path(sys.prefix) / "bin"
LLAMA_SERVER = VENV_BIN / "llama-server"
MLX_LM_SERVER = VENV_BIN / "mlx_lm.server"
VLLM = VENV_BIN / "vllm"

STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class RunningBackend:
    process: subprocess.Popen[bytes]
    base_url: str
    seconds_to_ready: float


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_backend(
    argv: list[str], env: dict[str, str] | None, port: int, probe: ReadinessProbe, timeout: float
) -> Iterator[RunningBackend]:
    """Run ``argv`` (listening on 127.0.0.1:``port``) until it answers ``probe`` with 200, yield it, stop it.

    The server runs in its own session so that stopping it reaches every process it started (vLLM
    forks workers); on the way out the whole group gets SIGTERM, then SIGKILL, and must be gone.
    Its output goes to the test's captured stderr.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_ready(process, base_url, probe, started + timeout)
        yield RunningBackend(process, base_url, time.monotonic() - started)
    finally:
        _stop_group(process)


def _wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, probe: ReadinessProbe, deadline: float
) -> None:
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{process.args!r} exited with {process.returncode} while starting")
            try:
                if client.request(probe.method, probe.path, json=probe.json_body).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.args!r} was not ready in time")
            time.sleep(0.05)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    group = process.pid  # start_new_session made the server its group's leader
    _signal_group(group, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    # Children can outlive the leader; whatever is left of the group is killed.
    _signal_group(group, signal.SIGKILL)
    process.wait(STOP_TIMEOUT)
    assert not _group_alive(group), f"processes of group {group} outlived {process.args!r}"


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass  # nothing left


def _group_alive(group: int) -> bool:
    """Whether any process of the group still exists (SIGKILLed ones vanish once their parent reaps them)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
