"""``POST /api/v1/deploy``: a checkpoint path in, an instance answering chats out.

The checkpoint is inspected (``deploy/checkpoint``), a backend and its options
are chosen (``deploy/plan``), and the result is an ordinary instance: created,
started and waited for, listed by the API, the UI and ``/v1/models``, and
stopped when idle like any other. A start that fails deletes the instance
again, so a refused deploy leaves neither a process nor an entry behind.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from llamactl.backends import BackendType, get_backend
from llamactl.deploy.checkpoint import TRAINER_CHECKPOINT, inspect_checkpoint
from llamactl.deploy.checkpoint_kinds import Checkpoint
from llamactl.deploy.plan import Staging, plan_deploy
from llamactl.deploy.request import DeployAnswer, DeployRequest
from llamactl.instance.errors import InstanceConflict
from llamactl.instance.manager import InstanceManager
from llamactl.instance.options import check_instance_name, instance_options_from_json
from llamactl.models.entry import ModelFormat, ModelSource
from llamactl.server.json_body import json_response, read_json
from llamactl.server.models_api import ModelsApi

_UNNAMEABLE = re.compile(r"[^a-zA-Z0-9._-]+")


class DeployApi:
    def __init__(
        self,
        manager: InstanceManager,
        models: ModelsApi,
        backend_commands: dict[str, list[str]],
        staging: Staging,
    ) -> None:
        self.manager = manager
        self.models = models
        self.backend_commands = backend_commands
        """Each backend's configured command line, by config key: a deploy needs its executable."""
        self.staging = staging
        self._staging_lock = asyncio.Lock()
        """One deploy converts at a time: two conversions of a model would double the disk and memory."""

    async def deploy(self, request: Request) -> Response:
        body = await read_json(request, DeployRequest)
        checkpoint = await asyncio.to_thread(inspect_checkpoint, body.checkpoint_path)
        # The name is checked before any conversion, which can take minutes.
        name = check_instance_name(body.name or default_name(checkpoint))
        if any(info.name == name for info in self.manager.list_instances()):
            raise InstanceConflict(
                f"an instance named {name!r} exists: give the deploy another name", field="name"
            )
        await self.models.rescan()  # an adapter's base model may be in the catalogue
        async with self._staging_lock:  # conversions take seconds to minutes: off the event loop
            plan = await asyncio.to_thread(
                plan_deploy, checkpoint, body, self._runnable, self._find_base, self.staging
            )
        self.manager.create(name, instance_options_from_json(plan.options))
        try:
            info = await self.manager.start(name)
        except BaseException:
            await self._remove(name)
            raise
        served = info.served_model or name
        answer = DeployAnswer(
            success=True,
            server_id=name,
            status=info.status.value,
            base_url=f"{str(request.base_url).rstrip('/')}/v1",
            port=info.port or 0,
            model_id=f"{name}/{plan.adapter}" if plan.adapter else name,
            model_name=plan.adapter or served,
            backend_type=plan.backend_type.value,
            checkpoint=checkpoint,
        )
        return json_response(answer, status=201)

    def _runnable(self, backend_type: BackendType) -> bool:
        command = self.backend_commands.get(get_backend(backend_type.value).config_key)
        return command is not None and shutil.which(command[0]) is not None

    def _find_base(self, base: str) -> str | None:
        """A local dir as it is, else a hub repo id's safetensors snapshot in the catalogue."""
        path = Path(base).expanduser()
        if path.is_absolute() or base.startswith((".", "~")):
            return str(path.resolve()) if path.exists() else None
        for entry in self.models.catalogue.entries():
            if (
                entry.source is ModelSource.HUGGINGFACE
                and entry.format is not ModelFormat.GGUF
                and entry.repo.lower() == base.lower()
            ):
                return entry.model_path
        return None

    async def _remove(self, name: str) -> None:
        """The instance a failed deploy made, gone: stopped (its process group with it), then deleted."""
        await asyncio.shield(self._stop_and_delete(name))

    async def _stop_and_delete(self, name: str) -> None:
        await self.manager.stop(name)
        await self.manager.delete(name)


def default_name(checkpoint: Checkpoint) -> str:
    """The checkpoint's own name, made an instance name: its file without ``.gguf``, or its dir.

    A trainer's ``checkpoint-N`` is named after its output dir, which says more.
    """
    path = Path(checkpoint.path)
    if TRAINER_CHECKPOINT.fullmatch(path.name) and path.parent.name:
        path = path.parent
    name = _UNNAMEABLE.sub("-", path.name.removesuffix(".gguf")).strip("-.")[:50]
    return name or "deployed"
