"""``llamactl instances …``: everyday verbs as a thin client of a running llamactl's API."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
URL_VARIABLE = "LLAMACTL_URL"
KEY_VARIABLE = "LLAMACTL_API_KEY"
CLIENT_VARIABLES = (URL_VARIABLE, KEY_VARIABLE)
"""The variables this client reads, so that ``llamactl serve`` knows them too."""
COLUMNS = ("NAME", "BACKEND", "STATUS", "PORT", "MODEL", "SOURCE")


class ClientError(Exception):
    """Something the user must fix: the server said no, or cannot be reached."""


def add_instance_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "instances",
        help="list, create, start, stop, inspect and delete instances of a running llamactl",
        description="Talk to a running `llamactl serve` (--url or $LLAMACTL_URL, default "
        f"{DEFAULT_URL}) with a management key (--key or $LLAMACTL_API_KEY).",
    )
    parser.add_argument("--url", default=os.environ.get(URL_VARIABLE, DEFAULT_URL))
    parser.add_argument("--key", default=os.environ.get(KEY_VARIABLE))
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="every instance, as a table")
    create = verbs.add_parser(
        "create",
        help="create an instance from a pasted command",
        description="Example: llamactl instances create qwen -- llama-server -m /models/qwen.gguf -ngl 99",
    )
    create.add_argument("name")
    create.add_argument("--backend", help="llama-cpp, mlx or vllm (default: told by the executable)")
    create.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server command")
    for verb in ("start", "stop", "restart", "delete", "show"):
        verbs.add_parser(verb, help=f"{verb} an instance").add_argument("name")
    logs = verbs.add_parser("logs", help="the last lines of an instance's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def run_instance_command(args: argparse.Namespace) -> int:
    import httpx  # imported here: every other llamactl command starts faster without it

    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=None) as client:
            return _dispatch(client, args)
    except httpx.ConnectError:
        return _fail(f"cannot reach llamactl at {args.url}: is `llamactl serve` running?")
    except ClientError as error:
        return _fail(str(error))


def _dispatch(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.verb != "list":
        _check_name(args.name)
    if args.verb == "list":
        print(format_table([_row(item) for item in _call(client, "GET", "/api/v1/instances").json()]))
    elif args.verb == "create":
        words = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not words:
            raise ClientError("give the server command after --, e.g. -- llama-server -m model.gguf")
        backend = args.backend or _backend_of(words)
        parsed = _call(
            client, "POST", f"/api/v1/backends/{backend}/parse-command", json={"command": shlex.join(words)}
        ).json()
        created = _call(client, "POST", f"/api/v1/instances/{args.name}", json=parsed).json()
        print(format_table([_row(created)]))
    elif args.verb == "delete":
        _call(client, "DELETE", f"/api/v1/instances/{args.name}")
        print(f"deleted {args.name}")
    elif args.verb == "show":
        info = _call(client, "GET", f"/api/v1/instances/{args.name}").json()
        print(msgspec.json.format(msgspec.json.encode(info), indent=2).decode())
    elif args.verb == "logs":
        _print_logs(client, args)
    else:
        began = time.monotonic()
        info = _call(client, "POST", f"/api/v1/instances/{args.name}/{args.verb}").json()
        print(format_table([_row(info)]))
        print(f"({time.monotonic() - began:.1f} s)")
    return 0


def _print_logs(client: httpx.Client, args: argparse.Namespace) -> None:
    path = f"/api/v1/instances/{args.name}/logs"
    if not args.follow:
        sys.stdout.write(_call(client, "GET", path, params={"lines": args.lines}).text)
        return
    with client.stream("GET", path, params={"lines": args.lines, "follow": "true"}) as response:
        _raise_for_error(response.status_code, response.read() if response.is_error else b"")
        for line in response.iter_lines():
            if line.startswith("data: "):
                print(line.removeprefix("data: "), flush=True)


def _check_name(name: str) -> None:
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


def _backend_of(words: list[str]) -> str:
    from llamactl.backends import BackendInputError, get_backend, parse_command_of_known_backend

    try:
        parsed = parse_command_of_known_backend(shlex.join(words))
    except BackendInputError as error:
        raise ClientError(f"{error.message} (or give --backend)") from None
    return get_backend(parsed.backend_type).config_key


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    _raise_for_error(response.status_code, response.content)
    return response


def _raise_for_error(status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        document = msgspec.json.decode(body)
        detail = document.get("details") or document.get("error")
    except (msgspec.DecodeError, AttributeError):
        detail = body.decode(errors="replace")
    if status == 401:
        raise ClientError(f"the server wants a management key (--key or $LLAMACTL_API_KEY): {detail}")
    raise ClientError(f"{status}: {detail}")


def _row(info: dict[str, Any]) -> list[str]:
    options = info["options"]
    backend_options = options.get("backend_options", {})
    model = backend_options.get("model") or backend_options.get("hf_repo") or ""
    port = info.get("port")
    return [
        info["name"],
        options["backend_type"],
        info["status"],
        str(port) if port is not None else "-",
        model,
        "config" if info.get("declared") else "api",
    ]


def format_table(rows: Sequence[Sequence[str]]) -> str:
    table = [list(COLUMNS), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def _fail(message: str) -> int:
    sys.stderr.write(f"llamactl: error: {message}\n")
    return 2
