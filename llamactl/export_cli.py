"""``llamactl export NAME --target T DIR``: what reproduces an instance without llamactl, unpacked into DIR.

It downloads ``GET /api/v1/instances/{name}/export?target=T`` (a gzipped tar)
and unpacks it into DIR, which must be new or empty, all at once
(``deploy/export_archive``).
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamactl.client import (
    ClientError,
    add_client_command,
    check_name_for_url,
    raise_for_error,
    run_with_client,
)
from llamactl.deploy.export import MANIFEST
from llamactl.deploy.export_archive import check_destination, unpack_archive
from llamactl.errors import LlamactlError

if TYPE_CHECKING:
    import httpx

TARGETS = ("llama-server", "vllm", "mlx-serve", "ollama")
_CHUNK = 1 << 20


def add_export_command(commands: Any) -> None:
    parser = add_client_command(
        commands,
        "export",
        "write what runs an instance without llamactl: a launch script, its adapters, a manifest",
    )
    parser.add_argument("name", help="the instance")
    parser.add_argument("--target", choices=TARGETS, required=True)
    parser.add_argument("directory", type=Path, metavar="DIR", help="a new or empty dir")


def run_export_command(args: argparse.Namespace) -> int:
    return run_with_client(args, _export)


def _export(client: httpx.Client, args: argparse.Namespace) -> int:
    check_name_for_url(args.name)
    directory: Path = args.directory.expanduser().absolute()
    try:
        check_destination(directory)  # before a download that may be large
        with tempfile.TemporaryFile() as archive:
            path = f"/api/v1/instances/{args.name}/export"
            with client.stream("GET", path, params={"target": args.target}) as response:
                if response.status_code >= 400:
                    raise_for_error(response.status_code, response.read())
                for chunk in response.iter_bytes(_CHUNK):
                    archive.write(chunk)
            archive.seek(0)
            names = unpack_archive(archive, directory)
    except LlamactlError as error:
        raise ClientError(error.message) from None
    print(f"wrote {len(names)} files into {directory}:")
    for name in names:
        print(f"  {name}")
    for script in (name for name in names if name.endswith(".sh")):
        print(f"run it: {shlex.quote(str(directory / script))} (set PORT to choose its port)")
    print(f"what it holds, with sha256s: {directory / MANIFEST}")
    return 0
