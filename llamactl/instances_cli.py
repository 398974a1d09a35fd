"""``llamactl instances …``: everyday verbs as a thin client of a running llamactl's API."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llamactl.client import (
    ClientError,
    add_client_command,
    call,
    check_name_for_url,
    format_json,
    format_table,
    raise_for_error,
    run_with_client,
)

if TYPE_CHECKING:
    import httpx

COLUMNS = ("NAME", "BACKEND", "STATUS", "PORT", "MODEL", "SOURCE")


class _VerbParser(argparse.ArgumentParser):
    """A verb's parser; one made with ``takes_pasted_command`` keeps the words after the first ``--``,
    exactly as typed, as ``command`` (a server command pasted there).

    argparse cannot say this itself: a ``REMAINDER`` after ``NAME`` would also
    swallow ``--model ID``, and ``nargs="*"`` drops every later ``--``.
    """

    def __init__(self, *, takes_pasted_command: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.takes_pasted_command = takes_pasted_command

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it; argparse calls this form
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.takes_pasted_command:
            return super().parse_known_args(args, namespace)
        before, pasted = _split_at_separator(list(sys.argv[1:] if args is None else args))
        parsed, extras = super().parse_known_args(before, namespace)
        if extras:
            self.error(f"unrecognized arguments: {shlex.join(extras)} (put the server command after --)")
        parsed.command = pasted
        return parsed, []


def _split_at_separator(words: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in words:
        return words, []
    at = words.index("--")
    return words[:at], words[at + 1 :]


def add_instance_commands(commands: Any) -> None:
    parser = add_client_command(
        commands, "instances", "list, create, start, stop, inspect and delete instances of a running llamactl"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_VerbParser)
    verbs.add_parser("list", help="every instance, as a table")
    create = verbs.add_parser(
        "create",
        help="create an instance from a catalogue model or a pasted command",
        usage="%(prog)s [-h] [--backend BACKEND] NAME (--model ID | -- COMMAND ...)",
        description="Make NAME serve a model of the catalogue (--model ID, as `llamactl models list` "
        "shows it), or run the server command pasted after --. Examples: llamactl instances create "
        "qwen --model ollama:qwen3:0.6b; llamactl instances create qwen -- llama-server -m "
        "/models/qwen.gguf -ngl 99",
        takes_pasted_command=True,
    )
    create.add_argument("name")
    create.add_argument("--backend", help="llama-cpp, mlx or vllm (default: told by the model or executable)")
    create.add_argument("--model", metavar="ID", help="a catalogue id, as `llamactl models list` shows")
    for verb in ("start", "stop", "restart", "delete", "show"):
        verbs.add_parser(verb, help=f"{verb} an instance").add_argument("name")
    logs = verbs.add_parser("logs", help="the last lines of an instance's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def run_instance_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _dispatch)


def _dispatch(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.verb != "list":
        check_name_for_url(args.name)
    if args.verb == "list":
        rows = [_row(item) for item in call(client, "GET", "/api/v1/instances").json()]
        print(format_table(COLUMNS, rows))
    elif args.verb == "create":
        body = _catalogue_body(args) if args.model is not None else _pasted_body(client, args)
        created = call(client, "POST", f"/api/v1/instances/{args.name}", json=body).json()
        print(format_table(COLUMNS, [_row(created)]))
    elif args.verb == "delete":
        call(client, "DELETE", f"/api/v1/instances/{args.name}")
        print(f"deleted {args.name}")
    elif args.verb == "show":
        print(format_json(call(client, "GET", f"/api/v1/instances/{args.name}").json()))
    elif args.verb == "logs":
        _print_logs(client, args)
    else:
        began = time.monotonic()
        info = call(client, "POST", f"/api/v1/instances/{args.name}/{args.verb}").json()
        print(format_table(COLUMNS, [_row(info)]))
        print(f"({time.monotonic() - began:.1f} s)")
    return 0


def _catalogue_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body that makes an instance of catalogue model ``--model``: the server picks the backend
    by the model's format unless ``--backend`` names one."""
    from llamactl.backends import BackendInputError, get_backend

    if args.command:
        raise ClientError("give --model ID or a server command after --, not both")
    body: dict[str, Any] = {"model": args.model}
    if args.backend is not None:
        try:
            body["backend_type"] = get_backend(args.backend).backend_type.value
        except BackendInputError as error:
            raise ClientError(error.message) from None
    return body


def _pasted_body(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    words: list[str] = args.command
    if not words:
        raise ClientError(
            "give --model ID (see `llamactl models list`) or the server command after --, "
            "e.g. -- llama-server -m model.gguf"
        )
    backend = args.backend or _backend_of(words)
    parsed: dict[str, Any] = call(
        client, "POST", f"/api/v1/backends/{backend}/parse-command", json={"command": shlex.join(words)}
    ).json()
    return parsed


def _print_logs(client: httpx.Client, args: argparse.Namespace) -> None:
    path = f"/api/v1/instances/{args.name}/logs"
    if not args.follow:
        sys.stdout.write(call(client, "GET", path, params={"lines": args.lines}).text)
        return
    with client.stream("GET", path, params={"lines": args.lines, "follow": "true"}) as response:
        raise_for_error(response.status_code, response.read() if response.is_error else b"")
        for line in response.iter_lines():
            if line.startswith("data: "):
                print(line.removeprefix("data: "), flush=True)


def _backend_of(words: list[str]) -> str:
    from llamactl.backends import BackendInputError, get_backend, parse_command_of_known_backend

    try:
        parsed = parse_command_of_known_backend(shlex.join(words))
    except BackendInputError as error:
        raise ClientError(f"{error.message} (or give --backend)") from None
    return get_backend(parsed.backend_type).config_key


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
