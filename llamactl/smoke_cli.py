"""``llamactl smoke NAME`` and ``llamactl history NAME``: an instance's smoke check, and what it records."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from llamactl.client import (
    add_client_command,
    call,
    check_name_for_url,
    format_table,
    run_with_client,
    seconds_cell,
)

if TYPE_CHECKING:
    import httpx

HISTORY_COLUMNS = ("TIME", "KIND", "RESULT", "DURATION", "DETAIL")
EXIT_FAILED = 1
"""``llamactl smoke``'s status when the check ran and failed (2: it could not be run)."""


def add_smoke_commands(commands: Any) -> None:
    smoke = add_client_command(
        commands, "smoke", "start an instance's command on another port, ask one chat, and say how it went"
    )
    smoke.add_argument("name")
    smoke.add_argument("--timeout", type=float, metavar="SECONDS", help="for the whole check (default 300)")
    history = add_client_command(
        commands, "history", "an instance's starts (with the executable and its version) and smoke checks"
    )
    history.add_argument("name")


def run_smoke_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _smoke)


def run_history_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _history)


def _smoke(client: httpx.Client, args: argparse.Namespace) -> int:
    check_name_for_url(args.name)
    body = {} if args.timeout is None else {"timeout": args.timeout}
    entry = call(client, "POST", f"/api/v1/instances/{args.name}/smoke", json=body).json()
    print("\n".join(smoke_report(args.name, entry)))
    return 0 if entry["ok"] else EXIT_FAILED


def smoke_report(name: str, entry: dict[str, Any]) -> list[str]:
    """What ``llamactl smoke`` prints: the outcome, the answer or the reason, the timings, the log tail."""
    timings = entry["timings"]
    steps = [
        f"{label} {seconds_cell(timings.get(key))}"
        for label, key in (("ready", "ready_seconds"), ("listed", "listed_seconds"), ("chat", "chat_seconds"))
        if timings.get(key) is not None
    ]
    steps.append(f"total {seconds_cell(timings['total_seconds'])}")
    model = f" (model {entry['model']})" if entry.get("model") else ""
    if entry["ok"]:
        return [f"{name}: ok{model}", f"answer: {entry['first_line']}", ", ".join(steps)]
    lines = [f"{name}: failed{model}: {entry['reason']}", ", ".join(steps)]
    if entry.get("log_tail"):
        lines += ["last log lines:", *(f"  {line}" for line in entry["log_tail"])]
    return lines


def _history(client: httpx.Client, args: argparse.Namespace) -> int:
    check_name_for_url(args.name)
    entries = call(client, "GET", f"/api/v1/instances/{args.name}/history").json()["history"]
    if not entries:
        print(f"no history recorded for {args.name}")
    else:
        print(format_table(HISTORY_COLUMNS, [history_row(entry) for entry in entries]))
    return 0


def history_row(entry: dict[str, Any]) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
    if entry["kind"] == "start":
        what = entry.get("executable") or "(not found)"
        if entry.get("image"):
            what += f" image {entry['image']}"
        version = entry.get("version")
        detail = f"{what}: {version.splitlines()[0]}" if version else f"{what} ({entry.get('version_error')})"
        return [when, "start", entry["reason"], "-", detail]
    if entry["kind"] == "smoke":
        result = "ok" if entry["ok"] else "failed"
        detail = entry["first_line"] if entry["ok"] else entry["reason"]
        return [when, "smoke", result, seconds_cell(entry["timings"]["total_seconds"]), detail or ""]
    return [when, str(entry["kind"]), "-", "-", ""]  # a kind this client does not know yet
