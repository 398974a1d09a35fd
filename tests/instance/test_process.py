"""One backend process: spawned under the watchdog, stopped with its helper command and signals."""

import asyncio
import sys
from pathlib import Path

from llamactl.instance.log_file import InstanceLog
from llamactl.instance.process import BackendProcess


def test_the_stop_command_runs_before_the_signals(tmp_path: Path) -> None:
    marker = tmp_path / "stopped-by-helper"

    async def scenario() -> None:
        log = InstanceLog(tmp_path / "x.log", 0, 0)
        process = await BackendProcess.spawn(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            {},
            log,
            stop_grace=5,
            stop_argv=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        )
        await asyncio.sleep(0.5)  # past the watchdog's start-up
        code = await process.stop(grace=5)
        assert marker.exists()
        assert code == 128 + 15  # then SIGTERM ended the backend

    asyncio.run(scenario())


def test_a_stop_command_that_cannot_run_does_not_block_the_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = InstanceLog(tmp_path / "x.log", 0, 0)
        process = await BackendProcess.spawn(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            {},
            log,
            stop_grace=5,
            stop_argv=["/nonexistent/docker", "stop", "x"],
        )
        await asyncio.sleep(0.5)
        assert await process.stop(grace=5) == 128 + 15

    asyncio.run(scenario())
