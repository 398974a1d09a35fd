"""The thin client of a running llamactl's API that ``llamactl instances``, ``models``, ``stats`` and
``activity`` share.

Each command is added with ``add_client_command``, which gives it ``--url``
and ``--key``, and runs through ``run_with_client``, which turns an
unreachable server and a ``ClientError`` into one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from llamactl.sizes import format_bytes

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
URL_VARIABLE = "LLAMACTL_URL"
KEY_VARIABLE = "LLAMACTL_API_KEY"
CLIENT_VARIABLES = (URL_VARIABLE, KEY_VARIABLE)
"""The variables this client reads, so that ``llamactl serve`` knows them too."""
EXIT_BAD_INPUT = 2
CONNECTION_HELP = (
    f"Talk to a running `llamactl serve` (--url or ${URL_VARIABLE}, default {DEFAULT_URL}) "
    f"with a management key (--key or ${KEY_VARIABLE})."
)

ClientCommand = Callable[["httpx.Client", argparse.Namespace], int]


class ClientError(Exception):
    """Something the user must fix: the server said no, or cannot be reached."""


def add_client_command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """The parser of a command that talks to a running llamactl, with its ``--url`` and ``--key``."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=CONNECTION_HELP)
    parser.add_argument("--url", default=os.environ.get(URL_VARIABLE, DEFAULT_URL))
    parser.add_argument("--key", default=os.environ.get(KEY_VARIABLE))
    return parser


def run_with_client(args: argparse.Namespace, command: ClientCommand) -> int:
    """``command`` with a client of ``args.url`` carrying ``args.key``; its errors as one line on stderr."""
    import httpx  # imported here: every other llamactl command starts faster without it

    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=None) as client:
            return command(client, args)
    except httpx.ConnectError:
        return fail(f"cannot reach llamactl at {args.url}: is `llamactl serve` running?")
    except ClientError as error:
        return fail(str(error))


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    raise_for_error(response.status_code, response.content)
    return response


def raise_for_error(status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        document = msgspec.json.decode(body)
        detail = document.get("details") or document.get("error")
    except (msgspec.DecodeError, AttributeError):
        detail = body.decode(errors="replace")
    if status == 401:
        raise ClientError(f"the server wants a management key (--key or ${KEY_VARIABLE}): {detail}")
    raise ClientError(f"{status}: {detail}")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` under ``columns``, each column as wide as its widest cell, two spaces apart."""
    widths = column_widths(columns, rows)
    return "\n".join(format_row(row, widths) for row in [columns, *rows])


def column_widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    """The width of each column: its widest cell, the heading's included."""
    return [max(len(row[column]) for row in [columns, *rows]) for column in range(len(columns))]


def format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One line of a table whose columns have these widths."""
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def number_cell(value: int | None) -> str:
    """A table cell of a figure the server may not know: ``-`` when absent."""
    return "-" if value is None else str(value)


def bytes_cell(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def format_json(document: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(document), indent=2).decode()


def fail(message: str) -> int:
    sys.stderr.write(f"llamactl: error: {message}\n")
    return EXIT_BAD_INPUT


def seconds_cell(value: float | None) -> str:
    """1.25s, or 37ms under a second; ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:.2f}s" if value >= 1 else f"{value * 1000:.0f}ms"


def check_name_for_url(name: str) -> None:
    """Refuse a name the server would refuse before it goes into a URL.

    httpx resolves dot segments, so ``delete ../auth/keys/3`` would otherwise
    send ``DELETE /api/v1/auth/keys/3``.
    """
    from llamactl.backends import BackendInputError
    from llamactl.instance.options import check_instance_name

    try:
        check_instance_name(name)
    except BackendInputError as error:
        raise ClientError(error.message) from None
