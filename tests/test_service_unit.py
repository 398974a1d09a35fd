"""The systemd unit and launchd plist: reviewed snapshots (regenerate with --snapshot-update), then the
tools' own checks: ``systemd-analyze verify`` (on the CI machines) and ``plutil -lint`` (on macOS)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from llamactl.service import HTTP_GRACE, SHUTDOWN_TIMEOUT
from llamactl.service_unit import (
    STOP_TIMEOUT,
    ServiceSpec,
    render_launchd_plist,
    render_systemd_unit,
    serve_argv,
    service_search_path,
)

VENV_PYTHON = Path("/opt/llamactl/.venv/bin/python")
TOOL_DEADLINE = 30.0


def golden_spec(*, system: bool) -> ServiceSpec:
    return ServiceSpec(
        interpreter=VENV_PYTHON,
        config=Path("/etc/llamactl/config.yaml"),
        working_directory=Path("/var/lib/llamactl"),
        search_path="/opt/llamactl/.venv/bin:/usr/local/bin:/usr/bin:/bin",
        system=system,
    )


def real_spec(tmp_path: Path, *, system: bool, interpreter: Path = Path(sys.executable)) -> ServiceSpec:
    """A spec whose ExecStart exists, as systemd-analyze wants: this test's own interpreter."""
    config = tmp_path / "config.yaml"
    config.write_text("server: {port: 8080}\n")
    return ServiceSpec(
        interpreter=interpreter,
        config=config,
        working_directory=tmp_path,
        search_path=service_search_path(interpreter, os.defpath),
        system=system,
    )


@pytest.mark.parametrize("system", [True, False], ids=["system", "user"])
def test_systemd_unit(system: bool, snapshot: SnapshotAssertion) -> None:
    assert render_systemd_unit(golden_spec(system=system)) == snapshot


@pytest.mark.parametrize("system", [True, False], ids=["system", "user"])
def test_launchd_plist(system: bool, snapshot: SnapshotAssertion) -> None:
    log = Path("/Library/Logs/llamactl.log" if system else "/Users/ada/Library/Logs/llamactl.log")
    assert render_launchd_plist(golden_spec(system=system), log).decode() == snapshot


def test_plist_reads_back_as_the_service_it_describes() -> None:
    spec = golden_spec(system=False)
    assert plistlib.loads(render_launchd_plist(spec, Path("/tmp/llamactl.log"))) == {
        "Label": "dev.llamactl",
        "ProgramArguments": [
            str(VENV_PYTHON),
            "-m",
            "llamactl",
            "serve",
            "--config",
            "/etc/llamactl/config.yaml",
        ],
        "WorkingDirectory": "/var/lib/llamactl",
        "EnvironmentVariables": {"PATH": spec.search_path},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ExitTimeOut": STOP_TIMEOUT,
        "StandardOutPath": "/tmp/llamactl.log",
        "StandardErrorPath": "/tmp/llamactl.log",
    }


def test_without_a_config_the_service_searches_for_one() -> None:
    spec = ServiceSpec(VENV_PYTHON, None, Path("/srv"), "/usr/bin", system=True)
    assert serve_argv(spec) == [str(VENV_PYTHON), "-m", "llamactl", "serve"]
    assert f"ExecStart={VENV_PYTHON} -m llamactl serve\n" in render_systemd_unit(spec)


def test_stop_timeout_outlasts_llamactls_own_shutdown() -> None:
    # systemd and launchd SIGKILL what is left at the timeout: llamactl must be done by then.
    assert STOP_TIMEOUT > HTTP_GRACE + SHUTDOWN_TIMEOUT


def test_words_are_taken_literally_by_systemd() -> None:
    spec = ServiceSpec(
        VENV_PYTHON, Path('/home/ada/my "llm" configs/100%$HOME.yaml'), Path("/srv/50%"), "/a b:/c", True
    )
    unit = render_systemd_unit(spec)
    config_word = '"/home/ada/my \\"llm\\" configs/100%%$$HOME.yaml"'
    assert f"ExecStart={VENV_PYTHON} -m llamactl serve --config {config_word}\n" in unit
    assert "WorkingDirectory=/srv/50%%\n" in unit
    assert 'Environment="PATH=/a b:/c"\n' in unit


def test_service_path_puts_the_interpreters_directory_first_once() -> None:
    assert (
        service_search_path(VENV_PYTHON, "/usr/bin:bin:/opt/llamactl/.venv/bin::/bin")
        == "/opt/llamactl/.venv/bin:/usr/bin:/bin"
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here (the CI machines have it: Debian's systemd package)",
)


def systemd_analyze_verify(unit: str, directory: Path, *, system: bool) -> subprocess.CompletedProcess[str]:
    path = directory / "llamactl.service"
    path.write_text(unit)
    # a user manager wants its runtime directory, which a CI job has none of
    runtime = directory / "runtime"
    runtime.mkdir(mode=0o700)
    return subprocess.run(
        ["systemd-analyze", *([] if system else ["--user"]), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=TOOL_DEADLINE,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_PAGER": ""},
    )


@needs_systemd_analyze
@pytest.mark.parametrize("system", [True, False], ids=["system", "user"])
def test_systemd_analyze_verifies_the_unit(system: bool, tmp_path: Path) -> None:
    result = systemd_analyze_verify(
        render_systemd_unit(real_spec(tmp_path, system=system)), tmp_path, system=system
    )
    assert result.returncode == 0, result.stderr
    # it only warns about a line it ignores; warnings about other units on the machine are not ours
    assert "llamactl.service" not in result.stderr


@needs_systemd_analyze
def test_systemd_analyze_finds_an_interpreter_whose_path_needs_quoting(tmp_path: Path) -> None:
    venv_bin = tmp_path / "my venv 100%" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    spec = real_spec(tmp_path, system=True, interpreter=venv_bin / "python")
    result = systemd_analyze_verify(render_systemd_unit(spec), tmp_path, system=True)
    assert result.returncode == 0, result.stderr
    assert "llamactl.service" not in result.stderr


@needs_systemd_analyze
def test_systemd_analyze_catches_a_missing_interpreter(tmp_path: Path) -> None:
    """The check above can fail: a unit whose ExecStart does not exist is refused."""
    spec = real_spec(tmp_path, system=True, interpreter=tmp_path / "no-such-python")
    result = systemd_analyze_verify(render_systemd_unit(spec), tmp_path, system=True)
    assert result.returncode != 0
    assert "no-such-python" in result.stderr


@pytest.mark.skipif(shutil.which("plutil") is None, reason="plutil is macOS's: not installed here")
@pytest.mark.parametrize("system", [True, False], ids=["system", "user"])
def test_plutil_lints_the_plist(system: bool, tmp_path: Path) -> None:
    path = tmp_path / "dev.llamactl.plist"
    path.write_bytes(render_launchd_plist(real_spec(tmp_path, system=system), tmp_path / "llamactl.log"))
    result = subprocess.run(
        ["plutil", "-lint", str(path)], capture_output=True, text=True, timeout=TOOL_DEADLINE
    )
    assert result.returncode == 0, result.stdout + result.stderr
