"""``llamactl deploy PATH``: serve a checkpoint through a running llamactl (``POST /api/v1/deploy``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamactl.client import add_client_command, call, run_with_client

if TYPE_CHECKING:
    import httpx

SERVER_TYPES = ("auto", "vllm", "llama_cpp", "mlx_lm", "ollama")


def add_deploy_command(commands: Any) -> None:
    parser = add_client_command(
        commands,
        "deploy",
        "serve a checkpoint: a model dir, a GGUF, a LoRA adapter or a trainer's output dir",
    )
    parser.add_argument("path", type=Path, help="the checkpoint, on the server's machine")
    parser.add_argument("--server-type", choices=SERVER_TYPES, default="auto")
    parser.add_argument("--name", help="the instance's name (default: the checkpoint's)")
    parser.add_argument("--context-length", type=int, metavar="N")
    parser.add_argument("--base-model", metavar="PATH", help="an adapter's base model, if not its own")


def run_deploy_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _deploy)


def _deploy(client: httpx.Client, args: argparse.Namespace) -> int:
    config = {
        key: value
        for key, value in (("context_length", args.context_length), ("base_model", args.base_model))
        if value is not None
    }
    body: dict[str, Any] = {
        # Resolved here: the server resolves a relative path against its own directory, not the user's.
        "checkpoint_path": str(args.path.expanduser().resolve()),
        "server_type": args.server_type,
        "config": config,
    }
    if args.name:
        body["name"] = args.name
    deployed = call(client, "POST", "/api/v1/deploy", json=body).json()
    print(
        f"{deployed['server_id']} is {deployed['status']} on {deployed['backend_type']}: "
        f"send model {deployed['model_id']!r} to {deployed['base_url']}"
    )
    return 0
