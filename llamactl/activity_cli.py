"""``llamactl activity``: the last requests a running llamactl proxied, as a table; ``-f`` follows."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from llamactl.client import (
    add_client_command,
    call,
    column_widths,
    format_row,
    number_cell,
    run_with_client,
    seconds_cell,
)

if TYPE_CHECKING:
    import httpx

COLUMNS = (
    "TIME",
    "INSTANCE",
    "MODEL",
    "KEY",
    "ENDPOINT",
    "STATUS",
    "WAIT",
    "TTFT",
    "DURATION",
    "TOKENS",
)
DEFAULT_COUNT = 20
FOLLOW_INTERVAL = 1.0
"""Seconds between two looks for new requests."""
FOLLOW_BATCH = 1000
"""Records asked for per look: the server's most; a full batch is followed by another at once."""


def add_activity_command(commands: Any) -> None:
    parser = add_client_command(
        commands, "activity", "the last requests llamactl proxied: who, to which instance, how long it took"
    )
    parser.add_argument("--instance", metavar="NAME", help="only this instance's requests")
    parser.add_argument(
        "-n", type=int, default=DEFAULT_COUNT, metavar="N", help=f"how many (default {DEFAULT_COUNT})"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="then show new requests as they come")


def run_activity_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _show_activity)


def _show_activity(client: httpx.Client, args: argparse.Namespace) -> int:
    records = _activity(client, args.instance, {"limit": args.n})
    if not records and not args.follow:
        print("no request recorded" + (f" for instance {args.instance}" if args.instance else ""))
        return 0
    rows = [_row(record) for record in records]
    widths = column_widths(COLUMNS, rows)
    print("\n".join(format_row(row, widths) for row in [COLUMNS, *rows]), flush=True)
    if not args.follow:
        return 0
    last_id = records[-1]["id"] if records else 0
    try:
        while True:
            records = _activity(client, args.instance, {"since": last_id, "limit": FOLLOW_BATCH})
            if records:
                last_id = records[-1]["id"]
                rows = [_row(record) for record in records]
                # A wider cell widens its column from then on; the lines printed stay as they are.
                widths = [max(pair) for pair in zip(widths, column_widths(COLUMNS, rows), strict=True)]
                print("\n".join(format_row(row, widths) for row in rows), flush=True)
            if len(records) < FOLLOW_BATCH:
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:  # the usual end of a follow
        return 0


def _activity(client: httpx.Client, instance: str | None, params: dict[str, int]) -> list[dict[str, Any]]:
    query: dict[str, str | int] = {**params, **({"instance": instance} if instance else {})}
    records: list[dict[str, Any]] = call(client, "GET", "/api/v1/activity", params=query).json()["activity"]
    return records


def _row(record: dict[str, Any]) -> list[str]:
    prompt, completion = record.get("prompt_tokens"), record.get("completion_tokens")
    tokens = (
        "-" if prompt is None and completion is None else f"{number_cell(prompt)}/{number_cell(completion)}"
    )
    return [
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"])),
        record["instance"],
        record.get("model") or "-",
        record.get("key_name") or "-",
        record["endpoint"],
        str(record["status"]),
        seconds_cell(record["queue_wait_seconds"]),
        seconds_cell(record.get("ttft_seconds")),
        seconds_cell(record["duration_seconds"]),
        tokens,
    ]
