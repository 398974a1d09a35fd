"""``llamactl service install | uninstall | status``: run ``llamactl serve`` under systemd or launchd."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamactl.client import fail

if TYPE_CHECKING:
    from llamactl.service_install import Host
    from llamactl.service_unit import ServiceSpec

SCOPE_HELP = "the service of this user (default: the system's, which needs root)"


def add_service_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "service",
        help="run llamactl as a systemd or launchd service",
        description="Install `llamactl serve` as a systemd unit (Linux) or a launchd plist (macOS) that "
        "starts at boot (or login, with --user) and restarts on failure, and start it. It runs this "
        "Python, in this directory, with this PATH after the Python's own directory. `systemctl reload` "
        "(SIGHUP) reloads the config file's models:.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    install = verbs.add_parser("install", help="write the unit or plist, enable and start the service")
    install.add_argument("--user", action="store_true", help=SCOPE_HELP)
    install.add_argument(
        "--config", type=Path, metavar="FILE", help="the config file (default: searched as serve does)"
    )
    uninstall = verbs.add_parser("uninstall", help="stop and disable the service, remove its file")
    uninstall.add_argument("--user", action="store_true", help=SCOPE_HELP)
    status = verbs.add_parser("status", help="the service manager's report (its exit code too)")
    status.add_argument("--user", action="store_true", help=SCOPE_HELP)


def run_service_command(args: argparse.Namespace) -> int:
    # imported here: the unit's timeout comes from llamactl.service, which imports the whole server
    from llamactl import service_install
    from llamactl.service_install import Host, ServiceError

    host = Host.current()
    scope = " --user" if args.user else ""
    try:
        if args.verb == "status":
            return service_install.status(host, system=not args.user)
        if args.verb == "uninstall":
            removed = service_install.uninstall(host, system=not args.user)
            print(f"llamactl: stopped the service and removed {removed}")
            return 0
        written = service_install.install(host, _spec(args, host))
    except ServiceError as error:
        return fail(error.message)
    print(f"llamactl: wrote {written} and started the service (`llamactl service status{scope}`)")
    return 0


def _spec(args: argparse.Namespace, host: Host) -> ServiceSpec:
    from llamactl.service_unit import ServiceSpec, service_search_path

    cwd = Path.cwd()
    # absolute, not resolved: a venv's python is a symlink, and resolving it would leave the venv
    interpreter = Path(sys.executable).absolute()
    config = None if args.config is None else Path(os.path.normpath(cwd / args.config.expanduser()))
    return ServiceSpec(
        interpreter=interpreter,
        config=config,
        working_directory=cwd,
        search_path=service_search_path(interpreter, host.search_path),
        system=not args.user,
    )
