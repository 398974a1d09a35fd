"""The models llamactl serves: ``GET /v1/models``, and the names each instance answers to.

A request names ``instance`` or ``instance/model``. The second form reaches
only a model the instance declares: its served model name (what the backend
expects in ``model``), the adapters it serves by name, and its ``allowed_models``. Anything else is refused
before it reaches the backend: mlx_lm.server, for one, loads (and downloads)
whatever model it is asked for.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llamactl.backends import AdapterRequest, get_backend
from llamactl.errors import HttpError, echo
from llamactl.instance.manager import InstanceInfo, InstanceManager
from llamactl.server.asgi import Receive, Scope, Send, send_whole
from llamactl.server.auth import Authenticator, Principal


class ModelMeta(msgspec.Struct, omit_defaults=True):
    """What llama-swap's and llama.cpp's router lists carry, from the model's files."""

    n_ctx: int | None = None
    architecture: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    size: int | None = None
    """Bytes of the model's files."""


class ModelEntry(msgspec.Struct, omit_defaults=True):
    id: str
    created: int
    status: str
    object: str = "model"
    owned_by: str = "llamactl"
    context_length: int | None = None
    meta: ModelMeta | None = None
    parent: str | None = None
    """For an adapter (``instance/adapter``), the instance whose model it applies to, as vLLM lists it."""


def model_entries(info: InstanceInfo) -> list[ModelEntry]:
    """The instance, then each adapter it serves by name, as a model of its own: ``instance/adapter``."""
    entry = model_entry(info)
    options = info.options
    adapters = get_backend(options.backend_type).adapter_names(options.backend_options)
    return [entry] + [
        msgspec.structs.replace(entry, id=f"{info.name}/{adapter}", parent=info.name) for adapter in adapters
    ]


def model_entry(info: InstanceInfo) -> ModelEntry:
    """The instance with what its backend says of itself once running, else what its files say."""
    profile = info.model
    if profile is None:
        context = info.served_context
        meta = ModelMeta(n_ctx=context) if context is not None else None
        return ModelEntry(
            id=info.name, created=info.created, status=info.status.value, context_length=context, meta=meta
        )
    context = info.served_context or profile.context_length
    meta = ModelMeta(
        n_ctx=context,
        architecture=profile.architecture,
        quantization=profile.quantization,
        parameters=profile.parameters,
        size=profile.size_bytes or None,
    )
    return ModelEntry(
        id=info.name,
        created=info.created,
        status=info.status.value,
        context_length=context,
        meta=meta,
    )


class ModelList(msgspec.Struct):
    data: list[ModelEntry]
    object: str = "list"


def served_models(info: InstanceInfo) -> list[str]:
    """The names ``instance/<name>`` may use: the served model, the adapters the backend serves by name
    (vLLM's ``--lora-modules``), and ``allowed_models``."""
    options = info.options
    names = [info.served_model] if info.served_model is not None else []
    names += get_backend(options.backend_type).adapter_names(options.backend_options)
    names += options.allowed_models
    return list(dict.fromkeys(names))


def backend_model(info: InstanceInfo, sub_model: str) -> str | None:
    """What ``model`` becomes for the backend: the served name, the sub-model asked for, or what the
    backend serves an adapter under.

    404 for a sub-model the instance does not declare, naming those it does.
    """
    if not sub_model:
        return info.served_model
    models = served_models(info)
    if sub_model not in models:
        declared = ", ".join(repr(model) for model in models) or "none"
        raise HttpError(
            404,
            "model_not_found",
            f"instance {info.name!r} has no model {echo(sub_model)}; its models: {declared}",
            field="model",
        )
    adapter = _adapter_request(info, sub_model)
    if adapter is None:
        return sub_model
    return adapter.model or info.served_model


def adapter_members(info: InstanceInfo, sub_model: str) -> dict[str, Any]:
    """Members a request for the adapter ``sub_model``, or for the base model (``""``), sets in its body
    (llama-server's ``lora`` and ``cache_prompt``)."""
    adapter = _adapter_request(info, sub_model)
    return adapter.members if adapter is not None else {}


def _adapter_request(info: InstanceInfo, sub_model: str) -> AdapterRequest | None:
    """How a request for ``sub_model`` (``""``: the base model) is sent; None for a declared sub-model
    that is no adapter."""
    backend = get_backend(info.options.backend_type)
    if not sub_model:
        return backend.adapter_request(info.options.backend_options, None)
    if sub_model not in backend.adapter_names(info.options.backend_options):
        return None
    return backend.adapter_request(info.options.backend_options, sub_model)


class ModelListing:
    def __init__(self, manager: InstanceManager, auth: Authenticator) -> None:
        self._manager = manager
        self._auth = auth

    async def list_models(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """Every instance the key may use and its adapters, stopped ones included, with their status."""
        entries = [
            entry
            for info in self._manager.list_instances()
            if self._auth.can_use(principal, info.name)
            for entry in model_entries(info)
        ]
        await send_whole(send, msgspec.json.encode(ModelList(data=entries)))
