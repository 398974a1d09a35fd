"""``llamactl models …``: the catalogue of models on the server's machine, and downloads into it."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from llamactl.client import (
    ClientError,
    add_client_command,
    bytes_cell,
    call,
    fail,
    format_json,
    format_table,
    number_cell,
    run_with_client,
)
from llamactl.sizes import format_bytes

if TYPE_CHECKING:
    import httpx

COLUMNS = ("ID", "FORMAT", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE", "EST. MEMORY")
POLL_INTERVAL = 0.5
"""Seconds between two looks at a download job."""
FINISHED = ("completed", "failed", "cancelled")
EXIT_INTERRUPTED = 130
"""What a shell reports for a command ended by Ctrl-C (128 + SIGINT)."""


def add_model_commands(commands: Any) -> None:
    parser = add_client_command(
        commands, "models", "list, inspect, download and remove the models of a running llamactl's machine"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="every model found, as a table")
    listing.add_argument("filter", nargs="?", help="only ids, names and repos holding this (any case)")
    verbs.add_parser("show", help="one model's facts and metadata").add_argument("id")
    pull = verbs.add_parser(
        "pull",
        help="download a model from the Hugging Face hub",
        description="Download org/model into the hub cache: a GGUF quant as tag (org/model-GGUF:Q4_K_M), "
        "or a safetensors revision. Ctrl-C cancels the download.",
    )
    pull.add_argument("repo", metavar="org/model[:tag]")
    pull.add_argument("--format", choices=("gguf", "safetensors"), default="gguf")
    remove = verbs.add_parser("rm", help="remove a downloaded model from the hub cache")
    remove.add_argument("repo", metavar="org/model")
    remove.add_argument("--tag", help="only this tag's snapshot (default: the whole repo)")


def run_model_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _dispatch)


def _dispatch(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.verb == "list":
        params = {"filter": args.filter} if args.filter else {}
        models = call(client, "GET", "/api/v1/models", params=params).json()
        print(format_table(COLUMNS, [_row(model) for model in models]))
    elif args.verb == "show":
        shown = call(client, "GET", f"/api/v1/models/{_id_path(args.id)}").json()
        print(_facts(shown["model"]))
        print()
        print(format_json(shown["details"]))
    elif args.verb == "pull":
        return _pull(client, args.repo, args.format)
    else:
        params = {"repo": args.repo, **({"tag": args.tag} if args.tag else {})}
        call(client, "DELETE", "/api/v1/models", params=params)
        print(f"removed {args.repo}" + (f":{args.tag}" if args.tag else ""))
    return 0


def _id_path(model_id: str) -> str:
    """The id as the path the ``{id:path}`` route takes: ``/`` kept, the rest percent-encoded.

    A dot segment is refused: httpx would resolve it and reach another route.
    """
    if any(part in (".", "..") for part in model_id.split("/")):
        raise ClientError(f"{model_id!r} is not a catalogue id (see `llamactl models list`)")
    return quote(model_id, safe="/")


def _row(model: dict[str, Any]) -> list[str]:
    return [
        model["id"],
        model["format"],
        model.get("architecture") or "-",
        _count(model.get("parameters")),
        model.get("quantization") or "-",
        number_cell(model.get("context_length")),
        format_bytes(model["size_bytes"]),
        bytes_cell(model.get("estimated_bytes")),
    ]


def _facts(model: dict[str, Any]) -> str:
    source = f"{model['source']} ({model['repo']}, tag {model['tag']})"
    facts = [
        ("id", model["id"]),
        ("name", model["name"]),
        ("source", source),
        ("format", model["format"]),
        ("architecture", model.get("architecture") or "-"),
        ("parameters", _count(model.get("parameters"))),
        ("quantization", model.get("quantization") or "-"),
        ("context", number_cell(model.get("context_length"))),
        ("chat template", "yes" if model.get("chat_template") else "no"),
        ("size", format_bytes(model["size_bytes"])),
        ("est. memory", bytes_cell(model.get("estimated_bytes")) + " (at its own context)"),
        ("model path", model["model_path"]),
    ]
    if model.get("mmproj_path"):
        facts.append(("projector", model["mmproj_path"]))
    facts += [("adapter", path) for path in model.get("adapter_paths", [])]
    if model.get("revision"):
        facts.append(("revision", model["revision"]))
    width = max(len(label) for label, _ in facts) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in facts)


def _pull(client: httpx.Client, repo: str, model_format: str) -> int:
    started = call(client, "POST", "/api/v1/models/download", json={"repo": repo, "format": model_format})
    job_path = f"/api/v1/models/jobs/{quote(started.json()['job_id'], safe='')}"
    try:
        job = _follow(client, job_path)
    except KeyboardInterrupt:
        call(client, "DELETE", job_path)
        sys.stderr.write(f"llamactl: cancelled the download of {repo}\n")
        return EXIT_INTERRUPTED
    if job["status"] != "completed":
        return fail(f"the download of {repo} {job['status']}: {job.get('error') or 'no reason given'}")
    print(job["model_path"])
    return 0


def _follow(client: httpx.Client, job_path: str) -> dict[str, Any]:
    """The job once finished, its progress shown on stderr meanwhile."""
    from llamactl.progress_bar import ProgressReport

    report = ProgressReport(sys.stderr)
    try:
        while True:
            job: dict[str, Any] = call(client, "GET", job_path).json()
            progress = job["progress"]
            label = progress["current_file"] or job["status"]
            report.update(progress["bytes_downloaded"], progress["total_bytes"], label)
            if job["status"] in FINISHED:
                return job
            time.sleep(POLL_INTERVAL)
    finally:
        report.finish()


def _count(parameters: int | None) -> str:
    """1.2B, 350M, 86K: parameters as model cards write them."""
    if parameters is None:
        return "-"
    for unit, size in (("T", 10**12), ("B", 10**9)):
        if parameters >= size:
            return f"{parameters / size:.1f}{unit}"
    for unit, size in (("M", 10**6), ("K", 10**3)):
        if parameters >= size:
            return f"{parameters / size:.0f}{unit}"
    return str(parameters)
