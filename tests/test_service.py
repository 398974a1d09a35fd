"""`llamactl serve` as a process: restarts what ran, reloads on SIGHUP, stops every backend on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.instance.helpers import alive, assert_none_alive, manager, recorded_pids, standin_options
from tests.serve_process import (
    MANAGEMENT_KEY,
    SERVING,
    ServeProcess,
    free_port,
    standin_backends,
    start_serve,
    write_config,
)

STANDIN_BACKENDS = standin_backends((18200, 18299))


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "timed out"  # type: ignore[operator]


def test_sigterm_stops_every_backend_and_running_instances_come_back(tmp_path: Path) -> None:
    data_dir, pids = tmp_path / "data", tmp_path / "pids"

    async def earlier_life() -> None:
        m = manager(data_dir)
        await m.open()
        m.create("alpha", standin_options(pids))
        await m.start("alpha")
        await m.close()

    asyncio.run(earlier_life())
    with start_serve(tmp_path, STANDIN_BACKENDS) as serve:
        wait_for(lambda: len(recorded_pids(pids)) == 2 and alive(recorded_pids(pids)[1]))
        began = time.monotonic()
        assert serve.stop() == 0
        assert time.monotonic() - began < 10
    assert_none_alive(pids)


def test_open_event_and_log_streams_do_not_hold_up_a_sigterm(tmp_path: Path) -> None:
    """A browser tab left open (the UI's events stream, a followed log) must not cost the grace."""
    pids = tmp_path / "pids"
    with start_serve(tmp_path, STANDIN_BACKENDS) as serve:
        client = httpx.Client(base_url=serve.base_url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"})
        body = {
            "backend_type": "llama_cpp",
            "backend_options": {"model": "/m/a.gguf"},
            "environment": {"STANDIN_PIDS": str(pids)},
        }
        assert client.post("/api/v1/instances/alpha", json=body).status_code == 201
        assert client.post("/api/v1/instances/alpha/start").status_code == 200
        opened: list[str] = []
        ended: list[str] = []

        def read(path: str) -> None:
            with client.stream("GET", path, timeout=30) as stream:
                for _ in stream.iter_bytes():
                    if path not in opened:
                        opened.append(path)
            ended.append(path)

        readers = [
            threading.Thread(target=read, args=(path,))
            for path in ("/api/v1/events", "/api/v1/instances/alpha/logs?follow=true")
        ]
        for reader in readers:
            reader.start()
        wait_for(lambda: len(opened) == 2)
        began = time.monotonic()
        assert serve.stop() == 0
        assert time.monotonic() - began < 5  # not the 10 s grace
        for reader in readers:
            reader.join(5)
        assert sorted(ended) == ["/api/v1/events", "/api/v1/instances/alpha/logs?follow=true"]
    assert_none_alive(pids)


def test_sighup_reconciles_the_declared_instances(tmp_path: Path) -> None:
    data_dir, pids, config = tmp_path / "data", tmp_path / "pids", tmp_path / "llamactl.yaml"
    port = free_port()
    declaration = "  {name}:\n    command: STANDIN_PIDS={pids} llama-server -m /m/{name}.gguf\n"

    def declare(models: str) -> None:
        write_config(config, data_dir, port, STANDIN_BACKENDS + "models:\n" + models)

    declare(declaration.format(name="first", pids=pids))

    def declared() -> list[str]:
        with sqlite3.connect(data_dir / "llamactl.db") as db:
            return [
                row[0] for row in db.execute("SELECT name FROM instances WHERE declared = 1 ORDER BY name")
            ]

    with ServeProcess(config, port) as serve:
        assert declared() == ["first"]
        declare(declaration.format(name="second", pids=pids))
        serve.process.send_signal(signal.SIGHUP)
        wait_for(lambda: declared() == ["second"])
        declare("  broken:\n    command: llama-server -c lots\n")
        serve.process.send_signal(signal.SIGHUP)
        serve.wait_for_stderr("reload refused, nothing changed: models.broken.command")
        assert declared() == ["second"]
        assert serve.stop() == 0
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


def test_stderr_beyond_what_a_pipe_holds_never_blocks_serve(tmp_path: Path) -> None:
    # each unknown variable is a warning line: far more than the 64 KiB a pipe holds, all before serving
    unknown = {f"LLAMACTL_NO_SUCH_SETTING_{index}": "x" for index in range(2000)}
    with start_serve(tmp_path, environment=unknown) as serve:
        text = serve.stderr_text()
        assert len(text.encode()) > 2**16
        assert text.count("unknown variable, ignored") == 2000 and SERVING in text
        assert serve.stop() == 0


def test_the_clients_variables_in_serves_environment_are_not_warned_about(tmp_path: Path) -> None:
    client_variables = {"LLAMACTL_API_KEY": "mgmt-key", "LLAMACTL_URL": "http://127.0.0.1:1"}
    with start_serve(tmp_path, environment=client_variables) as serve:
        assert serve.stop() == 0
        assert "warning" not in serve.stderr_text()


def test_get_config_after_a_reload_shows_the_configuration_in_effect(tmp_path: Path) -> None:
    data_dir, config = tmp_path / "data", tmp_path / "llamactl.yaml"
    port = free_port()
    write_config(config, data_dir, port, STANDIN_BACKENDS)
    with ServeProcess(config, port) as serve:
        headers = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}
        before = httpx.get(f"{serve.base_url}/api/v1/config", headers=headers).json()
        changed = STANDIN_BACKENDS.replace(
            "port_range: [18200, 18299]", "port_range: [18200, 18299], max_queue: 7"
        )
        write_config(
            config, data_dir, port, changed + "models:\n  late:\n    command: llama-server -m /m/l.gguf\n"
        )
        serve.process.send_signal(signal.SIGHUP)
        serve.wait_for_stderr("only models: took effect")
        after = httpx.get(f"{serve.base_url}/api/v1/config", headers=headers).json()
        assert after["instances"]["max_queue"] == before["instances"]["max_queue"] == 256  # not in effect
        names = [i["name"] for i in httpx.get(f"{serve.base_url}/api/v1/instances", headers=headers).json()]
        assert names == ["late"]  # models: took effect
        assert serve.stop() == 0
