"""One running backend process: spawn, watch, stop. No decisions are made here.

The backend runs under ``watchdog.py`` as leader of its own process group, so
a stop signals the whole tree (wrapper scripts, vLLM's engine workers) and
the tree dies with llamactl even when llamactl is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from llamactl.instance.launch import LaunchCommand
from llamactl.instance.log_file import InstanceLog

WATCHDOG = Path(__file__).with_name("watchdog.py")


class BackendProcess:
    """A spawned backend. ``exited`` completes with the exit code when the process ends."""

    def __init__(self, process: asyncio.subprocess.Process, log: InstanceLog, stop_argv: list[str]) -> None:
        self._process = process
        self._stop_argv = stop_argv
        self.native = not stop_argv
        """Run on this machine, not in a container (whose port docker publishes from its own process)."""
        self.pid = process.pid
        self.log = log
        self._drains = [
            asyncio.ensure_future(log.drain(stream, label))
            for stream, label in ((process.stdout, "stdout"), (process.stderr, "stderr"))
            if stream is not None
        ]
        self.exited: asyncio.Future[int] = asyncio.ensure_future(self._wait())

    @classmethod
    async def spawn(cls, command: LaunchCommand, log: InstanceLog, stop_grace: float) -> BackendProcess:
        log.write_marker("starting: " + command.shown)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # isolated: no user site, no environment-driven imports
            "-S",  # no site module: the watchdog needs only the standard library, and starts 50 ms sooner
            str(WATCHDOG),
            str(stop_grace),
            "--",
            *command.argv,
            # A pipe nobody writes to: its EOF tells the watchdog llamactl is gone.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command.environment,
            start_new_session=True,
        )
        return cls(process, log, command.stop_argv)

    async def _wait(self) -> int:
        code = await self._process.wait()
        # The backend's tree must not outlive it: whatever it forked into the group goes too.
        self.signal_group(signal.SIGKILL)
        # A grandchild that left the group may still hold the pipes open; it must not hold up the exit.
        await asyncio.wait(self._drains, timeout=1.0)
        self.log.write_marker(f"exited with code {code}")
        return code

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is already gone
            os.killpg(self.pid, signum)

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds, reap, and return the exit code."""
        if self.running and self._stop_argv:
            await _run_bounded(self._stop_argv, grace)
        if self.running:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout=grace)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.exited


async def _run_bounded(argv: list[str], timeout: float) -> None:
    """Run a helper command (``docker stop``); its failure only means the signals below do the work."""
    try:
        helper = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    except OSError:
        return
    try:
        await asyncio.wait_for(helper.wait(), timeout)
    except TimeoutError:
        helper.kill()
        await helper.wait()


def start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (/proc/PID/stat field 22), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return int(stat.rsplit(")", 1)[1].split()[19])


def kill_leftover_group(pgid: int, recorded_ticks: int) -> bool:
    """Kill a process group a previous llamactl left running; True if there was one.

    The group is ours if its leader is the process recorded (same start time),
    or if the leader is gone but members remain: a group ID only ever comes
    from a leader with that PID, so no other program can own such a group.
    """
    leader_ticks = start_ticks(pgid)
    if leader_ticks is not None and leader_ticks != recorded_ticks:
        return False  # the PID was recycled for another program
    if not group_is_alive(pgid):
        return False
    os.killpg(pgid, signal.SIGKILL)
    return True


def group_is_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
