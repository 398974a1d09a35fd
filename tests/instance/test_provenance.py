"""What a start records as having run: the resolved executable and its ``--version``, asked once per file."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

from llamactl.instance.launch import BackendSettings, DockerSettings, LaunchCommand, launch_command
from llamactl.instance.provenance import ExecutableVersions
from llamactl.store import StartEntry
from tests.instance.helpers import alive, standin_options

NATIVE = BackendSettings(command="server")
SLEEP = shutil.which("sleep")


def program(directory: Path, name: str, body: str) -> Path:
    """A shell script in ``directory`` that notes each run (its pid) in ``runs``, then does ``body``."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "$$" >> {directory / "runs"}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def runs(directory: Path) -> list[int]:
    runs_file = directory / "runs"
    return [int(pid) for pid in runs_file.read_text().split()] if runs_file.exists() else []


def command_of(name: str, directory: Path) -> LaunchCommand:
    """A start of ``name`` found on a PATH that is ``directory``, as a backend's environment may set it."""
    return LaunchCommand(
        argv=[name, "--port", "8080"], environment={**os.environ, "PATH": str(directory)}, shown=name
    )


def entry(
    versions: ExecutableVersions, command: LaunchCommand, settings: BackendSettings = NATIVE
) -> StartEntry:
    return asyncio.run(asyncio.wait_for(versions.start_entry(command, settings, "by API", 100.0), 30))


def test_the_version_is_asked_once_per_file_however_many_starts_and_again_when_it_changes(
    tmp_path: Path,
) -> None:
    path = program(tmp_path, "server", 'echo "server 1.2"\necho "built with cc"\necho "more"')
    command = command_of("server", tmp_path)

    async def scenario() -> list[StartEntry]:
        versions = ExecutableVersions()
        at_once = await asyncio.gather(
            *(versions.start_entry(command, NATIVE, "on demand", 1.0) for _ in range(20))
        )
        later = await versions.start_entry(command, NATIVE, "restart", 2.0)
        assert len(runs(tmp_path)) == 1
        changed = path.stat().st_mtime_ns + 1_000_000_000
        os.utime(path, ns=(changed, changed))  # an upgrade in place
        upgraded = await versions.start_entry(command, NATIVE, "restart", 3.0)
        assert len(runs(tmp_path)) == 2
        return [*at_once, later, upgraded]

    entries = asyncio.run(asyncio.wait_for(scenario(), 30))
    for found in entries:
        assert found.executable == str(path)  # resolved on the backend's own PATH
        assert found.version == "server 1.2\nbuilt with cc"  # its first two lines
        assert found.version_error is None
    assert [found.reason for found in entries[-2:]] == ["restart", "restart"]
    assert entries[-1].time == 3.0


def test_a_program_without_version_says_why_in_its_last_line(tmp_path: Path) -> None:
    program(
        tmp_path,
        "mlx_lm.server",
        'echo "usage: mlx_lm.server [-h]"\necho "error: unrecognized arguments: --version"\nexit 2',
    )
    found = entry(ExecutableVersions(), command_of("mlx_lm.server", tmp_path))
    assert found.version is None
    assert found.version_error is not None
    assert "exited with code 2: error: unrecognized arguments: --version" in found.version_error


def test_a_version_that_hangs_is_cut_at_its_deadline_killed_and_asked_again(tmp_path: Path) -> None:
    program(tmp_path, "server", f"exec {SLEEP} 60")
    versions = ExecutableVersions(timeout=0.5)
    command = command_of("server", tmp_path)
    found = entry(versions, command)
    assert found.version is None and found.version_error is not None
    assert "did not finish within 0.5 s" in found.version_error
    assert not alive(runs(tmp_path)[0])
    entry(versions, command)  # a timeout is not an answer: the next start asks again
    assert len(runs(tmp_path)) == 2


def test_closing_kills_a_version_under_way(tmp_path: Path) -> None:
    program(tmp_path, "server", f"exec {SLEEP} 60")
    command = command_of("server", tmp_path)

    async def scenario() -> None:
        versions = ExecutableVersions()
        asking = asyncio.ensure_future(versions.start_entry(command, NATIVE, "by API", 1.0))
        while not runs(tmp_path):
            await asyncio.sleep(0.02)
        asking.cancel()  # the start's record is dropped at shutdown; the run is the cache's to end
        await versions.close()
        assert not alive(runs(tmp_path)[0])

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_program_not_found_is_recorded_as_such(tmp_path: Path) -> None:
    found = entry(ExecutableVersions(), command_of("absent-server", tmp_path))
    assert found.executable is None
    assert found.version_error == "absent-server is not found"


def test_in_docker_mode_the_image_is_recorded_and_nothing_is_run(tmp_path: Path) -> None:
    program(tmp_path, "docker", 'echo "Docker version 27"')
    settings = BackendSettings(
        command="llama-server",
        docker=DockerSettings(image="ghcr.io/ggml-org/llama.cpp:server"),
        docker_enabled=True,
    )
    command = launch_command(
        "qwen", standin_options(tmp_path / "pids"), settings, "127.0.0.1", 8080, {"PATH": str(tmp_path)}
    )
    found = entry(ExecutableVersions(), command, settings)
    assert found.executable == str(tmp_path / "docker")
    assert found.image == "ghcr.io/ggml-org/llama.cpp:server"
    assert found.version is None and found.version_error == "not asked in Docker mode"
    assert runs(tmp_path) == []
