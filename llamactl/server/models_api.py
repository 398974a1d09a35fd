"""``/api/v1/models``: the catalogue of models on this machine, and downloads (the Go llamactl's paths).

Listing rescans the stores (a rescan of an unchanged tree reads no header)
in a worker thread, one scan at a time; each entry carries what an instance
made from it would take at its default context.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from llamactl.backends import BackendType, get_backend
from llamactl.errors import HttpError
from llamactl.instance.from_catalogue import (
    CATALOGUE_FIELD,
    default_backend,
    model_files,
    options_from_catalogue,
)
from llamactl.instance.options import InstanceOptions
from llamactl.models.catalogue import Catalogue, ModelDetails, ModelNotFoundError
from llamactl.models.download_request import DownloadRequest
from llamactl.models.downloads import DownloadJob, DownloadJobs
from llamactl.models.entry import ModelEntry
from llamactl.models.hub_cache import delete_model
from llamactl.models.model_memory import estimate_model_memory
from llamactl.server.json_body import json_response, read_json


class CatalogueModel(ModelEntry, frozen=True, kw_only=True):
    estimated_bytes: int | None = None
    """What an instance made from it would take at its default context (the model's own)."""


class CatalogueModelDetails(msgspec.Struct, frozen=True, kw_only=True):
    model: CatalogueModel
    details: ModelDetails


class DownloadStarted(msgspec.Struct, frozen=True):
    job_id: str
    repo: str
    tag: str


class DownloadJobList(msgspec.Struct, frozen=True):
    jobs: list[DownloadJob]


class ModelsApi:
    def __init__(
        self, catalogue: Catalogue, downloads: DownloadJobs, safetensors_backend: BackendType
    ) -> None:
        self.catalogue = catalogue
        self.downloads = downloads
        self.safetensors_backend = safetensors_backend
        self._scanning = asyncio.Lock()

    async def rescan(self) -> None:
        """Bring the catalogue up to date with the disk (one scan at a time, off the event loop)."""
        async with self._scanning:
            await asyncio.to_thread(self.catalogue.scan)

    async def list_models(self, request: Request) -> Response:
        await self.rescan()
        wanted = request.query_params.get("filter")
        return json_response(await asyncio.to_thread(self._listed, self.catalogue.entries(wanted)))

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["id"]
        await self.rescan()
        details = self.catalogue.details(model_id)
        [model] = await asyncio.to_thread(self._listed, [details.entry])
        return json_response(CatalogueModelDetails(model=model, details=details))

    async def delete_model(self, request: Request) -> Response:
        repo = request.query_params.get("repo")
        if not repo:
            raise HttpError(400, "invalid_request", "repo is required", field="repo")
        await asyncio.to_thread(delete_model, self.downloads.cache_dir, repo, request.query_params.get("tag"))
        return Response(status_code=204)

    async def download(self, request: Request) -> Response:
        job = self.downloads.start(await read_json(request, DownloadRequest))
        return json_response(DownloadStarted(job.id, job.repo, job.tag), status=202)

    async def list_jobs(self, request: Request) -> Response:
        return json_response(DownloadJobList(self.downloads.jobs()))

    async def get_job(self, request: Request) -> Response:
        return json_response(self.downloads.job(request.path_params["id"]))

    async def delete_job(self, request: Request) -> Response:
        self.downloads.cancel_or_delete(request.path_params["id"])
        return Response(status_code=204)

    async def instance_options(self, body: dict[str, Any]) -> InstanceOptions:
        """The options of an instance serving the catalogue entry ``body["model"]`` names."""
        model_id = body[CATALOGUE_FIELD]
        if not isinstance(model_id, str):
            raise HttpError(400, "invalid_request", "model: a catalogue id, as text", field="model")
        try:
            entry = self.catalogue.get(model_id)
        except ModelNotFoundError:
            await self.rescan()  # it may have arrived since the last listing
            entry = self.catalogue.get(model_id)
        return options_from_catalogue(entry, body, self.safetensors_backend)

    def _listed(self, entries: list[ModelEntry]) -> list[CatalogueModel]:
        """Each entry with its estimate (headers come from the catalogue's cache)."""
        listed = []
        for entry in entries:
            backend = get_backend(default_backend(entry, self.safetensors_backend).value)
            inputs = backend.memory_inputs(backend.options_for_model(model_files(entry)))
            estimate = None if inputs is None else estimate_model_memory(inputs, self.catalogue.gguf_facts_of)
            estimated = estimate.total_bytes if estimate is not None else None
            listed.append(CatalogueModel(**msgspec.structs.asdict(entry), estimated_bytes=estimated))
        return listed
