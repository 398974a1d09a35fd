"""An instance's history (``GET …/history``) and its smoke check (``POST …/smoke``), which adds to it."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from llamactl.instance.manager import InstanceManager
from llamactl.instance.smoke import DEFAULT_TIMEOUT, MAX_TIMEOUT, SmokeRunner
from llamactl.server.json_body import json_response, read_json
from llamactl.store import InstanceHistoryEntry, Store


class SmokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT)] = DEFAULT_TIMEOUT
    """Seconds the whole check may take, the model's load included."""


class InstanceHistory(msgspec.Struct, frozen=True):
    history: list[InstanceHistoryEntry]
    """Oldest first: the instance's starts, with what ran, and its smoke checks (the last
    ``HISTORY_PER_INSTANCE`` of them)."""


class HistoryApi:
    def __init__(self, manager: InstanceManager, store: Store, smoke_runner: SmokeRunner) -> None:
        self.manager = manager
        self.store = store
        self.smoke_runner = smoke_runner

    async def smoke(self, request: Request) -> Response:
        """The check's entry, 200 whether it passed or not: ``ok`` says which."""
        name = request.path_params["name"]
        self.manager.get(name)  # 404 before the body is read
        # A bare POST takes the defaults; a body is JSON, as every other.
        bare = (
            request.headers.get("content-length") in (None, "0")
            and "transfer-encoding" not in request.headers
        )
        body = SmokeRequest() if bare else await read_json(request, SmokeRequest)
        return json_response(await self.smoke_runner.run(name, body.timeout))

    async def history(self, request: Request) -> Response:
        info = self.manager.get(request.path_params["name"])
        # Off the event loop: a read waits for the writes queued before it.
        entries = await asyncio.to_thread(self.store.history, info.id)
        return json_response(InstanceHistory(entries))
