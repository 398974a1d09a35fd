"""``GET /api/v1/instances/{name}/export?target=T``: what reproduces the instance without llamactl, as a tar.

The files are built by ``deploy/export`` from the command a start of the
instance runs (``launch_command``, on 127.0.0.1) and the backend's
``--version`` (asked with a short deadline: vLLM's takes seconds). The tar is
written to a temporary file off the event loop and sent from there, since an
adapter may be hundreds of megabytes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llamactl.backends import BackendOptions
from llamactl.deploy.export import ExportCommand, ExportFiles, ExportSource, build_export, check_target
from llamactl.deploy.export_archive import write_archive
from llamactl.errors import HttpError
from llamactl.instance.launch import BackendSettings, LaunchCommand, launch_command
from llamactl.instance.manager import InstanceManager
from llamactl.instance.provenance import ExecutableVersions
from llamactl.store import StartEntry

EXPORT_HOST = "127.0.0.1"
VERSION_DEADLINE = 15.0
"""Seconds an export waits for the backend's ``--version``; past it the manifest says so."""
CHUNK_BYTES = 1 << 20


class ExportApi:
    def __init__(self, manager: InstanceManager, versions: ExecutableVersions) -> None:
        self.manager = manager
        self.versions = versions

    async def export(self, request: Request) -> Response:
        name = request.path_params["name"]
        target = request.query_params.get("target")
        if not target:
            raise HttpError(400, "invalid_request", "target: required (?target=llama-server)", field="target")
        info = self.manager.get(name)
        options = info.options
        check_target(options.backend_type.value, target)
        settings = self.manager.settings.backends[options.backend_type]

        def command_of(backend_options: BackendOptions, port: int) -> ExportCommand:
            with_options = msgspec.structs.replace(options, backend_options=backend_options)
            # No base environment: the script sets the backend's and the instance's variables only.
            command = launch_command(name, with_options, settings, EXPORT_HOST, port, {})
            return ExportCommand(argv=command.argv, environment=command.environment)

        version = await self._version(launch_command(name, options, settings, EXPORT_HOST, 0), settings)
        source = ExportSource(
            name=name,
            backend_type=options.backend_type.value,
            options=options.backend_options,
            port=info.port,
            backend_version=version.version,
            backend_version_error=version.version_error,
        )
        files = await asyncio.to_thread(build_export, source, target, command_of)
        archive = await asyncio.to_thread(_archive_file, files)
        size = os.fstat(archive.fileno()).st_size
        return StreamingResponse(
            _chunks(archive),  # a plain iterator: Starlette reads it in its thread pool
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{name}-{target}.tar.gz"',
                "Content-Length": str(size),
            },
        )

    async def _version(self, command: LaunchCommand, settings: BackendSettings) -> StartEntry:
        """What a start records of the executable (``instance/provenance``), within ``VERSION_DEADLINE``."""
        entry = self.versions.start_entry(command, settings, "export", time.time())
        try:
            # Shielded inside: a deadline here leaves the run to finish and be remembered for the next.
            return await asyncio.wait_for(entry, VERSION_DEADLINE)
        except TimeoutError:
            return StartEntry(
                time=time.time(),
                reason="export",
                executable=None,
                version_error=f"--version did not answer within {VERSION_DEADLINE:g} s",
            )


def _archive_file(files: ExportFiles) -> BinaryIO:
    """The tar in a file with no name: nothing is left on disk, whenever the answer ends."""
    archive = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _chunks, once sent)
    try:
        write_archive(files, archive)
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    return archive


def _chunks(archive: BinaryIO) -> Iterator[bytes]:
    with archive:
        while chunk := archive.read(CHUNK_BYTES):
            yield chunk
