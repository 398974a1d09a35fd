"""Put the service's unit or plist in place and tell systemd or launchd; take it away again.

Everything that touches the system comes in through ``Host``: the platform,
the user, the directories written to, the PATH the tools are found on and
the function that runs them. Tests pass tmp dirs and a recorder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamactl.service_unit import (
    LAUNCHD_LABEL,
    STOP_TIMEOUT,
    UNIT_NAME,
    ServiceSpec,
    render_launchd_plist,
    render_systemd_unit,
)

COMMAND_TIMEOUT = STOP_TIMEOUT + 30
"""Seconds a systemctl or launchctl call may take: stopping the service waits for llamactl to stop."""
FILE_MODE = 0o644


class ServiceError(Exception):
    """Something the user must fix, or a systemctl or launchctl call that failed (it said why above)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def run_command(argv: list[str]) -> int:
    """Run a systemctl or launchctl call, its output on ours, and return its exit code."""
    try:
        return subprocess.run(argv, timeout=COMMAND_TIMEOUT, check=False).returncode
    except subprocess.TimeoutExpired as error:
        raise ServiceError(f"`{shlex.join(argv)}` did not finish within {COMMAND_TIMEOUT} s") from error


@dataclass(frozen=True)
class Host:
    """The system a service is installed on."""

    platform: str
    uid: int
    home: Path
    search_path: str
    """The PATH systemctl or launchctl is looked up on."""
    run: Callable[[list[str]], int]
    system_root: Path = Path("/")
    """Where the system-wide directories (``etc/systemd/system``, ``Library``) are."""

    @classmethod
    def current(cls) -> Host:
        return cls(sys.platform, os.geteuid(), Path.home(), os.environ.get("PATH", os.defpath), run_command)


@dataclass(frozen=True)
class Supervisor:
    """How one platform's service manager is told, for the system or for the user."""

    manager: str
    tool: str
    file: Path
    render: Callable[[ServiceSpec], bytes]
    start: list[list[str]]
    """After the file is written."""
    stop: list[str]
    """Before the file is removed."""
    forget: list[list[str]]
    """After the file is removed."""
    status: list[str]


def supervisor_for(host: Host, system: bool) -> Supervisor:
    if host.platform.startswith("linux"):
        return _systemd(host, system)
    if host.platform == "darwin":
        return _launchd(host, system)
    raise ServiceError(
        f"llamactl runs as a service on Linux (systemd) and macOS (launchd), not {host.platform}"
    )


def _systemd(host: Host, system: bool) -> Supervisor:
    scope = [] if system else ["--user"]
    directory = host.system_root / "etc/systemd/system" if system else host.home / ".config/systemd/user"
    return Supervisor(
        manager="systemd",
        tool="systemctl",
        file=directory / UNIT_NAME,
        render=lambda spec: render_systemd_unit(spec).encode(),
        start=[[*scope, "daemon-reload"], [*scope, "enable", "--now", UNIT_NAME]],
        stop=[*scope, "disable", "--now", UNIT_NAME],
        forget=[[*scope, "daemon-reload"]],
        status=[*scope, "status", "--no-pager", UNIT_NAME],
    )


def _launchd(host: Host, system: bool) -> Supervisor:
    domain = "system" if system else f"gui/{host.uid}"
    library = host.system_root / "Library" if system else host.home / "Library"
    file = library / ("LaunchDaemons" if system else "LaunchAgents") / f"{LAUNCHD_LABEL}.plist"
    return Supervisor(
        manager="launchd",
        tool="launchctl",
        file=file,
        render=lambda spec: render_launchd_plist(spec, library / "Logs" / "llamactl.log"),
        start=[["bootstrap", domain, str(file)]],
        stop=["bootout", f"{domain}/{LAUNCHD_LABEL}"],
        forget=[],
        status=["print", f"{domain}/{LAUNCHD_LABEL}"],
    )


def install(host: Host, spec: ServiceSpec) -> Path:
    """Write the unit or plist and start the service; return where it was written.

    Over an earlier install, the service is stopped first, so that the new file
    takes effect (launchd would refuse to load the label twice).
    """
    supervisor = supervisor_for(host, spec.system)
    tool = _usable_tool(host, supervisor, spec.system)
    if spec.config is not None and not spec.config.is_file():
        raise ServiceError(f"the config file {spec.config} does not exist")
    if supervisor.file.exists():
        host.run([tool, *supervisor.stop])  # it may not be running: only the new start must succeed
    supervisor.file.parent.mkdir(parents=True, exist_ok=True)
    supervisor.file.write_bytes(supervisor.render(spec))
    supervisor.file.chmod(FILE_MODE)  # whatever the umask: launchd refuses a file others may write
    for arguments in supervisor.start:
        _run_checked(host, [tool, *arguments])
    return supervisor.file


def uninstall(host: Host, system: bool) -> Path:
    """Stop the service and remove its unit or plist; return where it was."""
    supervisor = supervisor_for(host, system)
    tool = _usable_tool(host, supervisor, system)
    if not supervisor.file.exists():
        raise ServiceError(f"llamactl is not installed as a service: {supervisor.file} does not exist")
    _run_checked(host, [tool, *supervisor.stop])
    supervisor.file.unlink()
    for arguments in supervisor.forget:
        _run_checked(host, [tool, *arguments])
    return supervisor.file


def status(host: Host, system: bool) -> int:
    """The service manager's own report on the service, and its exit code (systemctl: 3 when stopped)."""
    supervisor = supervisor_for(host, system)
    return host.run([_find_tool(host, supervisor), *supervisor.status])


def _usable_tool(host: Host, supervisor: Supervisor, system: bool) -> str:
    tool = _find_tool(host, supervisor)
    if system and host.uid != 0:
        raise ServiceError(
            f"a system-wide service ({supervisor.file}) needs root: run this with sudo, "
            "or pass --user for a service of your own"
        )
    return tool


def _find_tool(host: Host, supervisor: Supervisor) -> str:
    found = shutil.which(supervisor.tool, path=host.search_path)
    if found is None:
        raise ServiceError(f"{supervisor.tool} is not on PATH: is this system run by {supervisor.manager}?")
    return found


def _run_checked(host: Host, argv: list[str]) -> None:
    code = host.run(argv)
    if code != 0:
        raise ServiceError(f"`{shlex.join(argv)}` failed with exit code {code}")
