"""A real database with instances to grant, a settable clock, and a synchronous ``create`` for key tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llamactl.instance.options import instance_options_from_json
from llamactl.server.api_keys import ApiKeyInfo, ApiKeyStore, CreateKeyRequest, PermissionMode
from llamactl.store import InstanceRecord, Store

START = 1_700_000_000.0
INSTANCES = ("alpha", "beta", "gamma")
OPTIONS = instance_options_from_json({"backend_type": "llama_cpp", "backend_options": {"model": "/m.gguf"}})


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def open_store(path: Path, instances: tuple[str, ...] = INSTANCES) -> Store:
    """The database at ``path`` with ``instances`` in it (keys may only name instances that exist)."""
    store = Store(path)
    for name in instances:
        if store.instance_id(name) is None:
            store.save_instance(InstanceRecord(name, START, OPTIONS))
    return store


def create(keys: ApiKeyStore, request: CreateKeyRequest) -> tuple[ApiKeyInfo, str]:
    return asyncio.run(keys.create(request))


def per_instance(*names: str) -> CreateKeyRequest:
    return CreateKeyRequest(name="scoped", permission_mode=PermissionMode.PER_INSTANCE, instances=list(names))
