"""`llamactl serve` as a process: restarts what ran, reloads on SIGHUP, stops every backend on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.instance.helpers import STANDIN, alive, assert_none_alive, manager, recorded_pids, standin_options


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, data_dir: Path, models: str = "", port: int = 0) -> None:
    path.write_text(
        f"""
data_dir: {data_dir}
server:
  port: {port or free_port()}
auth:
  management_keys: [test-management-key]
backends:
  llama-cpp:
    command: {sys.executable}
    args: [{STANDIN}]
instances:
  port_range: [18200, 18299]
{models}
"""
    )


def start_serve(config: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "llamactl", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("llamactl: serving"), line
    return process


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "timed out"  # type: ignore[operator]


def test_sigterm_stops_every_backend_and_running_instances_come_back(tmp_path: Path) -> None:
    data_dir, pids, config = tmp_path / "data", tmp_path / "pids", tmp_path / "llamactl.yaml"
    write_config(config, data_dir)

    async def earlier_life() -> None:
        m = manager(data_dir)
        await m.open()
        m.create("alpha", standin_options(pids))
        await m.start("alpha")
        await m.close()

    asyncio.run(earlier_life())
    serve = start_serve(config)
    wait_for(lambda: len(recorded_pids(pids)) == 2 and alive(recorded_pids(pids)[1]))
    began = time.monotonic()
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=30) == 0
    assert time.monotonic() - began < 10
    assert_none_alive(pids)


def test_sighup_reconciles_the_declared_instances(tmp_path: Path) -> None:
    data_dir, pids, config = tmp_path / "data", tmp_path / "pids", tmp_path / "llamactl.yaml"
    declaration = "  {name}:\n    command: STANDIN_PIDS={pids} llama-server -m /m/{name}.gguf\n"
    write_config(config, data_dir, "models:\n" + declaration.format(name="first", pids=pids))
    serve = start_serve(config)

    def declared() -> list[str]:
        with sqlite3.connect(data_dir / "llamactl.db") as db:
            return [
                row[0] for row in db.execute("SELECT name FROM instances WHERE declared = 1 ORDER BY name")
            ]

    try:
        assert declared() == ["first"]
        write_config(config, data_dir, "models:\n" + declaration.format(name="second", pids=pids))
        serve.send_signal(signal.SIGHUP)
        wait_for(lambda: declared() == ["second"])
        write_config(config, data_dir, "models:\n  broken:\n    command: llama-server -c lots\n")
        serve.send_signal(signal.SIGHUP)
        assert serve.stderr is not None
        assert "reload refused, nothing changed: models.broken.command" in serve.stderr.readline() + (
            serve.stderr.readline()
        )
        assert declared() == ["second"]
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    assert_none_alive(pids)


def test_a_broken_config_exits_non_zero_naming_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "llamactl.yaml"
    config.write_text("instances:\n  max_instances: many\n")
    result = subprocess.run(
        [sys.executable, "-m", "llamactl", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr and "instances.max_instances" in result.stderr
