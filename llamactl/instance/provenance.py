"""What ran at a start: the resolved executable and its ``--version``, for the instance's history.

``--version`` runs once per executable file (its path and modification time),
however many instances start it, off the event loop's way and with a deadline:
vLLM's takes over ten seconds, and a program that ignores the flag may start
serving instead. A start never waits for it; its entry is written when it is
known.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

from llamactl.instance.launch import BackendSettings, LaunchCommand
from llamactl.store import StartEntry

VERSION_TIMEOUT = 30.0
VERSION_LINES = 2
"""Lines of ``--version`` kept: llama-server's second says what it was built with."""
MAX_LINE_CHARS = 200
MAX_OUTPUT_BYTES = 64 * 1024
"""Bytes of ``--version`` read: a program that ignores the flag may print much more."""


@dataclass(frozen=True)
class _Version:
    text: str | None
    error: str | None
    final: bool = True
    """Known for as long as the file is unchanged; a timeout is not, and is asked again."""


class ExecutableVersions:
    """The ``--version`` of each executable file, asked once; its runs are killed at ``close``."""

    def __init__(self, timeout: float = VERSION_TIMEOUT) -> None:
        self._timeout = timeout
        self._known: dict[tuple[str, int], asyncio.Task[_Version]] = {}

    async def start_entry(
        self, command: LaunchCommand, settings: BackendSettings, reason: str, when: float
    ) -> StartEntry:
        """The history entry of a start of ``command`` at ``when`` (Unix seconds)."""
        if command.stop_argv and settings.docker is not None:
            # Docker mode: what runs is the image. Its --version would be a `docker run`, which may
            # pull gigabytes first.
            return StartEntry(
                time=when,
                reason=reason,
                executable=shutil.which(command.argv[0], path=command.environment.get("PATH")),
                image=settings.docker.image,
                version_error="not asked in Docker mode",
            )
        # As the watchdog finds it: on the backend's own PATH.
        executable = shutil.which(command.argv[0], path=command.environment.get("PATH"))
        if executable is None:
            return StartEntry(
                time=when, reason=reason, executable=None, version_error=f"{command.argv[0]} is not found"
            )
        version = await self._version(executable, command.environment)
        return StartEntry(
            time=when,
            reason=reason,
            executable=executable,
            version=version.text,
            version_error=version.error,
        )

    async def close(self) -> None:
        for task in self._known.values():
            task.cancel()
        for task in self._known.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _version(self, executable: str, environment: dict[str, str]) -> _Version:
        try:
            key = (executable, os.stat(executable).st_mtime_ns)
        except OSError as error:
            return _Version(None, f"cannot read {executable}: {error.strerror}")
        task = self._known.get(key)
        if task is None:
            task = asyncio.ensure_future(_run_version(executable, environment, self._timeout))
            self._known[key] = task
        # Shared by every start of this file: one caller that is cancelled must not cancel it.
        version = await asyncio.shield(task)
        if not version.final and self._known.get(key) is task:
            del self._known[key]
        return version


async def _run_version(executable: str, environment: dict[str, str], timeout: float) -> _Version:
    shown = f"`{executable} --version`"
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            "--version",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # llama-server prints its version on stderr
            env=environment,
            start_new_session=True,  # its own group, killed whole
        )
    except OSError as error:
        return _Version(None, f"cannot run {shown}: {error.strerror}")
    try:
        async with asyncio.timeout(timeout):
            output = await _read_bounded(process, MAX_OUTPUT_BYTES)
            code = await process.wait()
    except TimeoutError:
        return _Version(None, f"{shown} did not finish within {timeout:g} s", final=False)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    lines = [line.strip()[:MAX_LINE_CHARS] for line in output.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if code != 0:
        # Its last line says why (mlx_lm.server: "error: unrecognized arguments: --version").
        return _Version(None, f"{shown} exited with code {code}" + (f": {lines[-1]}" if lines else ""))
    return _Version("\n".join(lines[:VERSION_LINES]) or None, None if lines else f"{shown} printed nothing")


async def _read_bounded(process: asyncio.subprocess.Process, limit: int) -> bytes:
    assert process.stdout is not None
    output = b""
    while len(output) < limit and (chunk := await process.stdout.read(limit - len(output))):
        output += chunk
    return output
