"""Installing, removing and asking after the service, on a host of tmp dirs with a recording systemctl
and launchctl: nothing here touches this machine's service manager or writes outside tmp_path."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llamactl.service_install import Host, ServiceError, install, status, uninstall
from llamactl.service_unit import ServiceSpec, render_launchd_plist, render_systemd_unit

INTERPRETER = Path("/opt/llamactl/.venv/bin/python")
USER_ID = 1000


@dataclass
class Recorder:
    """Stands in for ``run``: keeps every argv, answers with the exit code chosen per verb."""

    codes: dict[str, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        verb = next(word for word in argv[1:] if not word.startswith("-"))
        return self.codes.get(verb, 0)


@dataclass
class FakeHost:
    host: Host
    recorder: Recorder
    tools: Path

    def tool(self, name: str) -> str:
        return str(self.tools / name)


def make_host(tmp_path: Path, *, platform: str = "linux", uid: int = USER_ID, tools: bool = True) -> FakeHost:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if tools:
        for name in ("systemctl", "launchctl"):  # found on PATH, never run: the recorder answers
            (bin_dir / name).write_text("#!/bin/sh\nexit 99\n")
            (bin_dir / name).chmod(0o755)
    recorder = Recorder()
    host = Host(
        platform=platform,
        uid=uid,
        home=tmp_path / "home",
        search_path=str(bin_dir),
        run=recorder,
        system_root=tmp_path / "root",
    )
    return FakeHost(host, recorder, bin_dir)


def make_spec(tmp_path: Path, *, system: bool) -> ServiceSpec:
    config = tmp_path / "config.yaml"
    config.write_text("server: {port: 8080}\n")
    return ServiceSpec(INTERPRETER, config, tmp_path, "/opt/llamactl/.venv/bin:/usr/bin", system=system)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_user_install_writes_the_unit_and_enables_it(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    spec = make_spec(tmp_path, system=False)
    written = install(fake.host, spec)
    assert written == tmp_path / "home/.config/systemd/user/llamactl.service"
    assert written.read_text() == render_systemd_unit(spec)
    assert mode(written) == 0o644
    systemctl = fake.tool("systemctl")
    assert fake.recorder.calls == [
        [systemctl, "--user", "daemon-reload"],
        [systemctl, "--user", "enable", "--now", "llamactl.service"],
    ]


def test_system_install_as_root_writes_under_etc(tmp_path: Path) -> None:
    fake = make_host(tmp_path, uid=0)
    written = install(fake.host, make_spec(tmp_path, system=True))
    assert written == tmp_path / "root/etc/systemd/system/llamactl.service"
    assert mode(written) == 0o644
    systemctl = fake.tool("systemctl")
    assert fake.recorder.calls == [
        [systemctl, "daemon-reload"],
        [systemctl, "enable", "--now", "llamactl.service"],
    ]


def test_file_mode_is_0644_whatever_the_umask_and_an_earlier_file(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    unit = tmp_path / "home/.config/systemd/user/llamactl.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("old")
    unit.chmod(0o600)
    install(fake.host, make_spec(tmp_path, system=False))
    assert mode(unit) == 0o644


def test_reinstall_stops_the_running_service_first_so_the_new_unit_takes_effect(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    spec = make_spec(tmp_path, system=False)
    install(fake.host, spec)
    fake.recorder.calls.clear()
    fake.recorder.codes["disable"] = 1  # not running any more: the reinstall goes on
    install(fake.host, spec)
    systemctl = fake.tool("systemctl")
    assert fake.recorder.calls == [
        [systemctl, "--user", "disable", "--now", "llamactl.service"],
        [systemctl, "--user", "daemon-reload"],
        [systemctl, "--user", "enable", "--now", "llamactl.service"],
    ]


def test_a_failing_enable_is_reported_with_the_command(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    fake.recorder.codes["enable"] = 1
    with pytest.raises(ServiceError, match=r"`.*systemctl --user enable --now llamactl.service` failed.* 1"):
        install(fake.host, make_spec(tmp_path, system=False))


def test_uninstall_disables_removes_and_reloads(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    written = install(fake.host, make_spec(tmp_path, system=False))
    fake.recorder.calls.clear()
    assert uninstall(fake.host, system=False) == written
    assert not written.exists()
    systemctl = fake.tool("systemctl")
    assert fake.recorder.calls == [
        [systemctl, "--user", "disable", "--now", "llamactl.service"],
        [systemctl, "--user", "daemon-reload"],
    ]


def test_uninstall_of_nothing_names_the_missing_file(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    with pytest.raises(ServiceError, match=r"not installed.*/home/\.config/systemd/user/llamactl\.service"):
        uninstall(fake.host, system=False)
    assert fake.recorder.calls == []


@pytest.mark.parametrize("code", [0, 3])
def test_status_asks_systemctl_and_passes_its_exit_code(tmp_path: Path, code: int) -> None:
    fake = make_host(tmp_path)
    fake.recorder.codes["status"] = code
    assert status(fake.host, system=False) == code
    assert fake.recorder.calls == [
        [fake.tool("systemctl"), "--user", "status", "--no-pager", "llamactl.service"]
    ]


def test_no_config_file_is_refused_by_name(tmp_path: Path) -> None:
    fake = make_host(tmp_path)
    spec = ServiceSpec(INTERPRETER, tmp_path / "missing.yaml", tmp_path, "/usr/bin", system=False)
    with pytest.raises(ServiceError, match=r"config file .*missing\.yaml does not exist"):
        install(fake.host, spec)
    assert fake.recorder.calls == []
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_system_install_without_root_is_refused(tmp_path: Path, platform: str) -> None:
    fake = make_host(tmp_path, platform=platform, uid=USER_ID)
    with pytest.raises(ServiceError, match=r"system-wide service .* needs root: .*sudo.*--user"):
        install(fake.host, make_spec(tmp_path, system=True))
    with pytest.raises(ServiceError, match="needs root"):
        uninstall(fake.host, system=True)
    assert fake.recorder.calls == []
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(("platform", "tool"), [("linux", "systemctl"), ("darwin", "launchctl")])
def test_a_missing_service_manager_is_refused_by_name(tmp_path: Path, platform: str, tool: str) -> None:
    fake = make_host(tmp_path, platform=platform, tools=False)
    for action in (
        lambda: install(fake.host, make_spec(tmp_path, system=False)),
        lambda: uninstall(fake.host, system=False),
        lambda: status(fake.host, system=False),
    ):
        with pytest.raises(ServiceError, match=rf"^{tool} is not on PATH"):
            action()
    assert fake.recorder.calls == []


def test_other_platforms_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"Linux \(systemd\) and macOS \(launchd\), not win32"):
        install(make_host(tmp_path, platform="win32").host, make_spec(tmp_path, system=False))


def test_macos_user_install_bootstraps_a_launch_agent(tmp_path: Path) -> None:
    fake = make_host(tmp_path, platform="darwin")
    spec = make_spec(tmp_path, system=False)
    written = install(fake.host, spec)
    assert written == tmp_path / "home/Library/LaunchAgents/dev.llamactl.plist"
    assert written.read_bytes() == render_launchd_plist(spec, tmp_path / "home/Library/Logs/llamactl.log")
    assert mode(written) == 0o644
    launchctl = fake.tool("launchctl")
    assert fake.recorder.calls == [[launchctl, "bootstrap", f"gui/{USER_ID}", str(written)]]
    fake.recorder.calls.clear()
    assert status(fake.host, system=False) == 0
    uninstall(fake.host, system=False)
    assert not written.exists()
    assert fake.recorder.calls == [
        [launchctl, "print", f"gui/{USER_ID}/dev.llamactl"],
        [launchctl, "bootout", f"gui/{USER_ID}/dev.llamactl"],
    ]


def test_macos_system_install_is_a_launch_daemon(tmp_path: Path) -> None:
    fake = make_host(tmp_path, platform="darwin", uid=0)
    spec = make_spec(tmp_path, system=True)
    written = install(fake.host, spec)
    assert written == tmp_path / "root/Library/LaunchDaemons/dev.llamactl.plist"
    assert written.read_bytes() == render_launchd_plist(spec, tmp_path / "root/Library/Logs/llamactl.log")
    assert fake.recorder.calls == [[fake.tool("launchctl"), "bootstrap", "system", str(written)]]
