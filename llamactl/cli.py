"""The ``llamactl`` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from llamactl import __version__
from llamactl.activity_cli import add_activity_command, run_activity_command
from llamactl.client import fail
from llamactl.deploy_cli import add_deploy_command, run_deploy_command
from llamactl.export_cli import add_export_command, run_export_command
from llamactl.instances_cli import add_instance_commands, run_instance_command
from llamactl.models_cli import add_model_commands, run_model_command
from llamactl.service_cli import add_service_commands, run_service_command
from llamactl.smoke_cli import add_smoke_commands, run_history_command, run_smoke_command
from llamactl.stats_cli import add_stats_command, run_stats_command

BACKEND_NAMES = ("llama-cpp", "mlx", "vllm")


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command_name is None:
        parser.print_help()
        return 0
    handlers = {
        "parse": _parse,
        "command": _command,
        "serve": _serve,
        "instances": run_instance_command,
        "models": run_model_command,
        "stats": run_stats_command,
        "activity": run_activity_command,
        "service": run_service_command,
        "deploy": run_deploy_command,
        "export": run_export_command,
        "smoke": run_smoke_command,
        "history": run_history_command,
    }
    return handlers[args.command_name](args)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamactl",
        description="Control plane for local LLM servers: llama.cpp, MLX and vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"llamactl {__version__}")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run llamactl: supervise the instances until stopped",
        description="Run llamactl on the config found (or the built-in defaults): start the instances "
        "that were running, reconcile those declared in the config file, stop every backend on "
        "SIGTERM or Ctrl-C, reload the config file's models on SIGHUP.",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="the config file (default: searched)")

    add_instance_commands(commands)
    add_model_commands(commands)
    add_stats_command(commands)
    add_activity_command(commands)
    add_deploy_command(commands)
    add_export_command(commands)
    add_smoke_commands(commands)
    add_service_commands(commands)

    parse = commands.add_parser(
        "parse",
        help="turn a pasted backend command into instance options (JSON)",
        description="Print the instance options (backend_type, backend_options, environment) "
        "of a pasted server command as JSON.",
    )
    parse.add_argument("backend", choices=BACKEND_NAMES)
    parse.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        metavar="COMMAND | -",
        help="the command, as one quoted string or as separate words; - reads it from standard input",
    )

    command = commands.add_parser(
        "command",
        help="print the shell command that instance options build",
        description="Print the shell command that the options in FILE.json build, quoted to paste "
        "into a shell. FILE.json holds backend options, or an object with backend_options and "
        "environment such as `llamactl parse` prints.",
    )
    command.add_argument("backend", choices=BACKEND_NAMES)
    command.add_argument("file", metavar="FILE.json", help="the options file; - reads standard input")
    return parser


def _parse(args: argparse.Namespace) -> int:
    import msgspec

    from llamactl.backends import BackendInputError, parse_command

    words: list[str] = args.words
    if words == ["-"]:
        text = sys.stdin.read()
    elif len(words) == 1:
        text = words[0]
    else:
        text = shlex.join(words)
    try:
        parsed = parse_command(args.backend, text)
    except BackendInputError as error:
        return fail(error.message)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(parsed), indent=2).decode() + "\n")
    return 0


def _command(args: argparse.Namespace) -> int:
    import msgspec

    from llamactl.backends import BackendInputError, get_backend

    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        return fail(f"cannot read {args.file}: {error.strerror}")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        return fail(f"{args.file} is not valid JSON: {error}")
    if not isinstance(document, dict):
        return fail(f"{args.file} must hold a JSON object")
    backend = get_backend(args.backend)
    options_json = document.get("backend_options", document)
    environment = document.get("environment", {}) if "backend_options" in document else {}
    try:
        options = backend.options_from_json(options_json)
        words = backend.command_line(options)
    except BackendInputError as error:
        return fail(error.message)
    assignments = [f"{name}={shlex.quote(str(value))}" for name, value in environment.items()]
    sys.stdout.write(" ".join([*assignments, shlex.join(words)]) + "\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from llamactl.config import ConfigError, LoadedConfig, load_config
    from llamactl.service import serve

    def read_config() -> LoadedConfig:
        return load_config(args.config, os.environ, Path.cwd(), Path.home())

    try:
        loaded = read_config()
    except ConfigError as error:
        return fail(error.message)
    for warning in loaded.warnings:
        sys.stderr.write(f"llamactl: warning: {warning}\n")
    try:
        import uvloop  # libuv's event loop roughly halves the proxy's own cost per request
    except ImportError:
        return asyncio.run(serve(loaded, read_config))
    return uvloop.run(serve(loaded, read_config))


def run() -> None:
    sys.exit(main())
