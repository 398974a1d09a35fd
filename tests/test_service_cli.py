"""`llamactl service …` as a user types it, with a fake home and a PATH whose only systemctl records
its arguments: the real service manager is never reached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI_DEADLINE = 60.0

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="drives the systemd path; launchd's is covered with an injected host in test_service_install.py",
)


def llamactl(tmp_path: Path, *args: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamactl", *args],
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE,
        cwd=tmp_path,
        env={"HOME": str(tmp_path / "home"), "PATH": str(path)},
    )


def fake_systemctl(tmp_path: Path, *, status_code: int = 0) -> tuple[Path, Path]:
    """A directory holding a systemctl that appends its arguments to a file, and that file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "systemctl-calls"
    script = bin_dir / "systemctl"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> \'{record}\'\n[ "$2" = status ] && exit {status_code}\nexit 0\n'
    )
    script.chmod(0o755)
    return bin_dir, record


def test_install_status_uninstall_of_a_user_service(tmp_path: Path) -> None:
    bin_dir, record = fake_systemctl(tmp_path, status_code=3)
    (tmp_path / "config.yaml").write_text("server: {port: 8080}\n")

    installed = llamactl(tmp_path, "service", "install", "--user", "--config", "config.yaml", path=bin_dir)
    assert installed.returncode == 0, installed.stderr
    unit = tmp_path / "home/.config/systemd/user/llamactl.service"
    assert f"wrote {unit}" in installed.stdout
    text = unit.read_text()
    # the running interpreter, not resolved (a venv's python is a symlink), and the config made absolute
    assert (
        f"ExecStart={Path(sys.executable).absolute()} -m llamactl serve --config {tmp_path}/config.yaml\n"
        in (text)
    )
    assert f"WorkingDirectory={tmp_path}\n" in text
    assert f"Environment=PATH={Path(sys.executable).absolute().parent}:{bin_dir}\n" in text

    stopped = llamactl(tmp_path, "service", "status", "--user", path=bin_dir)
    assert stopped.returncode == 3  # systemctl's "not running", passed on
    removed = llamactl(tmp_path, "service", "uninstall", "--user", path=bin_dir)
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert record.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now llamactl.service",
        "--user status --no-pager llamactl.service",
        "--user disable --now llamactl.service",
        "--user daemon-reload",
    ]


def test_refusals_are_one_line_naming_the_problem_and_exit_2(tmp_path: Path) -> None:
    bin_dir, record = fake_systemctl(tmp_path)
    no_config = llamactl(tmp_path, "service", "install", "--user", "--config", "absent.yaml", path=bin_dir)
    assert no_config.returncode == 2
    assert no_config.stderr == f"llamactl: error: the config file {tmp_path}/absent.yaml does not exist\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    no_systemctl = llamactl(tmp_path, "service", "install", "--user", path=empty)
    assert no_systemctl.returncode == 2
    assert (
        no_systemctl.stderr == "llamactl: error: systemctl is not on PATH: is this system run by systemd?\n"
    )
    assert not record.exists()
    assert not (tmp_path / "home").exists()
