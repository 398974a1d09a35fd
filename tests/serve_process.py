"""The one launcher of a real `llamactl serve` process, for the tests and the benchmarks (bench/).

llamactl's stderr is read all the time by a thread into a buffer the test can
inspect: a pipe nobody reads fills up (64 KiB on Linux) and then blocks
llamactl on its next log line, which would hang the test with it. Every wait
has a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx

from tests.instance.helpers import STANDIN, assert_none_alive

MANAGEMENT_KEY = "mgmt-key"
SERVING = "llamactl: serving"
"""The line llamactl writes once its port accepts connections."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_in(ports: range) -> int:
    """The first port of ``ports`` free on loopback: a test's own range, clear of the others'."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {ports}")


def standin_backends(port_range: tuple[int, int] = (18400, 18499), instances: str = "") -> str:
    """The config YAML that makes the stand-in the llama-cpp backend, its instances on ``port_range``.

    ``instances`` is more of the ``instances:`` section, as YAML flow-mapping members.
    """
    more = f", {instances}" if instances else ""
    return f"""
backends:
  llama-cpp: {{command: {sys.executable}, args: [{STANDIN}]}}
instances: {{port_range: [{port_range[0]}, {port_range[1]}]{more}}}
"""


STANDIN_BACKENDS = standin_backends()


def write_config(path: Path, data_dir: Path, port: int, tail: str = STANDIN_BACKENDS) -> None:
    """A config serving on ``port`` with ``MANAGEMENT_KEY``; ``tail`` is the YAML after
    ``data_dir``, ``server`` and ``auth``: by default the stand-in as llama-cpp backend."""
    path.write_text(
        f"""
data_dir: {data_dir}
server: {{port: {port}}}
auth: {{management_keys: [{MANAGEMENT_KEY}]}}
{tail}
"""
    )


class ServeProcess:
    """`llamactl serve --config CONFIG`, started and serving on ``port`` once constructed.

    As a context manager it kills a llamactl still running on exit, so a
    failed test leaves no server behind; ``stop()`` is the orderly way out.
    """

    def __init__(
        self,
        config: Path,
        port: int,
        environment: Mapping[str, str] | None = None,
        startup_timeout: float = 60,
    ) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self._lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llamactl", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(environment or {})},
        )
        self._reader = threading.Thread(target=self._drain, name="llamactl-serve-stderr", daemon=True)
        self._reader.start()
        try:
            self.wait_for_stderr(SERVING, startup_timeout)
        except BaseException:
            self.kill()
            raise

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stderr_text(self) -> str:
        """Everything llamactl has written to stderr so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_for_stderr(self, text: str, timeout: float = 30) -> str:
        """Wait until ``text`` is in stderr and return stderr so far; fail at the deadline or at its end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in (written := "".join(self._lines)):
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    ending = "exited" if self._closed else f"is silent after {timeout} s"
                    raise AssertionError(f"llamactl serve {ending} without {text!r}; its stderr:\n{written}")
                self._changed.wait(remaining)
            return written

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager stops it, and its exit status; killed if it outlives ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.kill()


class Serve:
    """A serving llamactl with a management client, and the file where the stand-ins note their pids."""

    def __init__(self, serving: ServeProcess, pids: Path) -> None:
        self.serving = serving
        self.process = serving.process
        self.base_url = serving.base_url
        self.pids = pids
        self.client = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30
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


def start_serve(
    workdir: Path, config_tail: str = STANDIN_BACKENDS, environment: Mapping[str, str] | None = None
) -> ServeProcess:
    """`llamactl serve` on a free port with its config and data in ``workdir``."""
    port = free_port()
    config = workdir / "llamactl.yaml"
    write_config(config, workdir / "data", port, config_tail)
    return ServeProcess(config, port, environment)


@contextmanager
def serve_process(
    tmp_path: Path,
    config_tail: str = STANDIN_BACKENDS,
    stop_timeout: float = 30,
    environment: Mapping[str, str] | None = None,
) -> Iterator[Serve]:
    """`llamactl serve` on a free port; on exit, SIGTERM and a check that no stand-in is left.

    ``config_tail`` is the YAML after ``data_dir``, ``server`` and ``auth``: by
    default the stand-in as llama-cpp backend.
    """
    with start_serve(tmp_path, config_tail, environment) as serving:
        running = Serve(serving, tmp_path / "pids")
        try:
            yield running
        finally:
            running.client.close()
            if serving.process.poll() is None:
                assert serving.stop(stop_timeout) == 0
            assert_none_alive(running.pids)


def cli_environment(serve: Serve) -> dict[str, str]:
    """The environment in which ``llamactl`` commands reach ``serve`` with the management key."""
    return {**os.environ, "LLAMACTL_URL": serve.base_url, "LLAMACTL_API_KEY": MANAGEMENT_KEY}


def run_cli(serve: Serve, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``llamactl ARGS`` against ``serve``, its output captured, within ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "llamactl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_environment(serve),
    )
