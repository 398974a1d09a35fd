"""The systemd unit and the launchd plist that run ``llamactl serve`` as a service: pure rendering, no I/O."""

from __future__ import annotations

import math
import os
import plistlib
from pathlib import Path

import msgspec

from llamactl.client import EXIT_BAD_INPUT
from llamactl.service import HTTP_GRACE, SHUTDOWN_TIMEOUT

UNIT_NAME = "llamactl.service"
LAUNCHD_LABEL = "dev.llamactl"
STOP_MARGIN = 20.0
"""Seconds beyond llamactl's own shutdown bound for the interpreter to exit and the database to close."""
STOP_TIMEOUT = math.ceil(HTTP_GRACE + SHUTDOWN_TIMEOUT + STOP_MARGIN)
"""Seconds systemd (TimeoutStopSec) and launchd (ExitTimeOut) wait after SIGTERM before SIGKILL.

Longer than llamactl's own bound (requests in flight, then every backend), so
the SIGKILL to whatever is left only comes when that bound itself failed.
"""


class ServiceSpec(msgspec.Struct, frozen=True):
    """What the service runs, and where; every path absolute."""

    interpreter: Path
    """The Python that runs llamactl: a venv's own ``bin/python`` keeps the venv."""
    config: Path | None
    """``serve --config``; without it the service searches as ``llamactl serve`` does."""
    working_directory: Path
    search_path: str
    """The service's PATH, where the backends' executables are looked up."""
    system: bool
    """System-wide (multi-user.target, a launch daemon) rather than the user's own."""


def serve_argv(spec: ServiceSpec) -> list[str]:
    argv = [str(spec.interpreter), "-m", "llamactl", "serve"]
    if spec.config is not None:
        argv += ["--config", str(spec.config)]
    return argv


def service_search_path(interpreter: Path, caller_path: str) -> str:
    """The interpreter's directory (a venv's bin, where ``./scripts/test.sh`` puts the backends), then the
    installing user's PATH: the service finds the backends that user's shell finds. Relative entries are
    dropped, since they would be taken from the service's working directory."""
    entries = [str(interpreter.parent), *caller_path.split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(entry for entry in entries if os.path.isabs(entry)))


def render_systemd_unit(spec: ServiceSpec) -> str:
    exec_start = " ".join(_exec_word(word) for word in serve_argv(spec))
    # A user manager cannot see the system's network-online.target, so only the system unit waits for it.
    network = ["Wants=network-online.target", "After=network-online.target"] if spec.system else []
    return "\n".join(
        [
            "# Written by `llamactl service install`; `llamactl service uninstall` removes it.",
            "[Unit]",
            "Description=llamactl: control plane for local LLM servers",
            *network,
            "",
            "[Service]",
            "Type=exec",
            f"ExecStart={exec_start}",
            "# SIGHUP makes llamactl reload the config file's models:.",
            "ExecReload=/bin/kill -HUP $MAINPID",
            f"WorkingDirectory={_specifiers_escaped(str(spec.working_directory))}",
            f"Environment={_quoted(_specifiers_escaped('PATH=' + spec.search_path))}",
            "Restart=on-failure",
            f"# Exit code {EXIT_BAD_INPUT} is a bad config: a restart would fail the same way.",
            f"RestartPreventExitStatus={EXIT_BAD_INPUT}",
            "# SIGTERM to llamactl alone: it lets requests finish, then stops each backend's group itself",
            "# (and each backend's watchdog stops its group should llamactl die); SIGKILL ends what is left.",
            "KillMode=mixed",
            f"# Longer than llamactl's own bound: {HTTP_GRACE:g} s for requests in flight, then "
            f"{SHUTDOWN_TIMEOUT:g} s",
            f"# for the backends, and {STOP_MARGIN:g} s more to exit.",
            f"TimeoutStopSec={STOP_TIMEOUT}",
            "",
            "[Install]",
            f"WantedBy={'multi-user.target' if spec.system else 'default.target'}",
            "",
        ]
    )


def render_launchd_plist(spec: ServiceSpec, log_file: Path) -> bytes:
    return plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": serve_argv(spec),
            "WorkingDirectory": str(spec.working_directory),
            "EnvironmentVariables": {"PATH": spec.search_path},
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ExitTimeOut": STOP_TIMEOUT,
            "StandardOutPath": str(log_file),
            "StandardErrorPath": str(log_file),
        }
    )


def _exec_word(word: str) -> str:
    """One word of ExecStart=, taken literally: systemd would expand ``$NAME`` in it."""
    return _quoted(_specifiers_escaped(word).replace("$", "$$"))


def _specifiers_escaped(value: str) -> str:
    """``value`` with systemd's specifiers (``%h``, ``%n``, …) kept literal."""
    return value.replace("%", "%%")


def _quoted(word: str) -> str:
    """``word`` as one word of a unit's line: in double quotes, C-escaped, when it has to be."""
    if word and not any(character in word for character in " \t\n\"'\\"):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
