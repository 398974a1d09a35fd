"""One backend process: spawned under the watchdog, stopped with its helper command and signals."""

import asyncio
import sys
from pathlib import Path

from llamactl.instance.launch import LaunchCommand
from llamactl.instance.log_file import InstanceLog
from llamactl.instance.process import BackendProcess

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_the_stop_command_runs_before_the_signals(tmp_path: Path) -> None:
    marker = tmp_path / "stopped-by-helper"

    async def scenario() -> None:
        log = InstanceLog(tmp_path / "x.log", 0, 0)
        helper = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
        command = LaunchCommand(argv=SLEEPER, environment={}, shown="sleeper", stop_argv=helper)
        process = await BackendProcess.spawn(command, log, stop_grace=5)
        await asyncio.sleep(0.5)  # past the watchdog's start-up
        code = await process.stop(grace=5)
        assert marker.exists()
        assert code == 128 + 15  # then SIGTERM ended the backend

    asyncio.run(scenario())


def test_a_stop_command_that_cannot_run_does_not_block_the_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = InstanceLog(tmp_path / "x.log", 0, 0)
        command = LaunchCommand(
            argv=SLEEPER, environment={}, shown="sleeper", stop_argv=["/nonexistent/docker", "stop", "x"]
        )
        process = await BackendProcess.spawn(command, log, stop_grace=5)
        await asyncio.sleep(0.5)
        assert await process.stop(grace=5) == 128 + 15

    asyncio.run(scenario())


def test_the_log_shows_the_command_as_shown_not_its_argv(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = InstanceLog(tmp_path / "x.log", 0, 0)
        argv = [*SLEEPER, "--api-key", "sk-live-123"]
        command = LaunchCommand(argv=argv, environment={}, shown="sleeper --api-key '***'")
        process = await BackendProcess.spawn(command, log, stop_grace=5)
        await process.stop(grace=5)
        log.close()

    asyncio.run(scenario())
    text = (tmp_path / "x.log").read_text()
    assert "starting: sleeper --api-key '***' at" in text
    assert "sk-live-123" not in text
