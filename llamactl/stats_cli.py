"""``llamactl stats``: the instances a running llamactl runs and their memory, then the machine's."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from llamactl.client import (
    add_client_command,
    bytes_cell,
    call,
    format_table,
    number_cell,
    run_with_client,
)
from llamactl.sizes import format_bytes

if TYPE_CHECKING:
    import httpx

    from llamactl.backends import MemoryInputs

COLUMNS = (
    "NAME",
    "BACKEND",
    "STATUS",
    "CONTEXT",
    "SLOTS",
    "QUEUED",
    "IN FLIGHT",
    "EST. MEMORY",
    "REPORTED",
    "MEASURED",
)
AT_REST = ("stopped", "failed")
"""Statuses of instances that hold no memory, left out."""


def add_stats_command(commands: Any) -> None:
    add_client_command(commands, "stats", "the instances running and their memory, then the machine's memory")


def run_stats_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _print_stats)


def _print_stats(client: httpx.Client, args: argparse.Namespace) -> int:
    live = [info for info in call(client, "GET", "/api/v1/instances").json() if info["status"] not in AT_REST]
    if live:
        print(format_table(COLUMNS, [_row(info) for info in live]))
    else:
        print("no instance is running")
    print(_system_line(call(client, "GET", "/api/v1/system").json()))
    return 0


def _memory_inputs(info: dict[str, Any]) -> MemoryInputs | None:
    """What the instance's backend says its options mean for context and slots; None if it cannot say."""
    from llamactl.backends import BackendInputError, get_backend

    options = info["options"]
    try:
        backend = get_backend(options["backend_type"])
        return backend.memory_inputs(backend.options_from_json(options.get("backend_options", {})))
    except BackendInputError:
        return None


def _row(info: dict[str, Any]) -> list[str]:
    inputs = _memory_inputs(info)
    # The server's profile of the model has the context the instance gets (its option, else the
    # model's own); it is read in the background, so the option stands in until it is there.
    context = info.get("model", {}).get("context_length") or (inputs.context if inputs else None)
    memory = info.get("memory", {})
    return [
        info["name"],
        info["options"]["backend_type"],
        info["status"],
        number_cell(context),
        number_cell(inputs.parallel if inputs else None),
        str(info.get("queued", 0)),
        str(info.get("in_flight", 0)),
        bytes_cell(memory.get("estimated_bytes")),
        bytes_cell(memory.get("reported_bytes")),
        bytes_cell(memory.get("measured_bytes")),
    ]


def _system_line(system: dict[str, Any]) -> str:
    memory = system["memory"]
    line = (
        f"system memory: {format_bytes(memory['total_bytes'])} total, "
        f"{format_bytes(memory['available_bytes'])} available ({memory['used_percent']:.0f}% used)"
    )
    budget = system.get("memory_budget_bytes")
    line += f"; budget {format_bytes(budget)}" if budget is not None else "; no memory budget"
    gpus = [
        f"\ngpu {gpu['index']} {gpu['name']}: {format_bytes(gpu['used_bytes'])} used "
        f"of {format_bytes(gpu['total_bytes'])}"
        for gpu in system.get("gpus", [])
    ]
    return line + "".join(gpus)
