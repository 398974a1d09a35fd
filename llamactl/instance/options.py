"""What an instance is made of: its name rules and options (the Go llamactl's JSON shape).

``InstanceOptions`` is a tagged union on ``backend_type``: each variant holds
its backend's typed options struct, so the options are checked once, where
they come in (the API, the config file, the database), and used as they are
from then on. The JSON shape is the Go llamactl's:
``{"backend_type": "llama_cpp", "backend_options": {...}, ...}``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

import msgspec

from llamactl.backends import (
    BackendInputError,
    BackendType,
    LlamaCppOptions,
    MlxLmOptions,
    VllmOptions,
    get_backend,
)
from llamactl.errors import echo, validation_field

NAME_PATTERN = re.compile(r"[a-zA-Z0-9._-]{1,50}")
NAME_RULE = "use 1 to 50 letters, digits, '.', '_' or '-', not only dots"

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
GroupName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN.pattern)]


class _Options(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, tag_field="backend_type"
):
    """What every instance has, whatever its backend. ``None``: the default (``instances.default_*``)."""

    backend_type: ClassVar[BackendType]
    auto_restart: bool | None = None
    max_restarts: NonNegative | None = None
    restart_delay: NonNegative | None = None
    """Seconds before the first restart after a crash; later ones back off exponentially."""
    on_demand_start: bool | None = None
    idle_timeout: NonNegative | None = None
    """Minutes without requests before an idle stop; 0 pins the instance (never idle-stopped or evicted)."""
    max_concurrent: AtLeastOne | None = None
    """Requests in flight at once; more wait in the queue. Unset: no limit."""
    max_queue: NonNegative | None = None
    """Requests waiting for this instance; past it, 429. Unset: only ``instances.max_queue`` applies."""
    send_loading_state: bool | None = None
    """Streamed requests that wait also get the progress as ``reasoning_content`` (llama-swap's key)."""
    allowed_models: list[str] = []
    """Sub-models (``instance/model``) it may be asked for, besides its served model."""
    environment: dict[str, str] = {}
    group: GroupName | None = None
    docker_enabled: bool | None = None
    command_override: str | None = None
    nodes: list[str] = []
    """Reserved for multi-node; only the local node exists."""


class LlamaCppInstanceOptions(_Options, tag=BackendType.LLAMA_CPP.value):
    backend_type = BackendType.LLAMA_CPP
    backend_options: LlamaCppOptions = msgspec.field(default_factory=LlamaCppOptions)


class MlxLmInstanceOptions(_Options, tag=BackendType.MLX_LM.value):
    backend_type = BackendType.MLX_LM
    backend_options: MlxLmOptions = msgspec.field(default_factory=MlxLmOptions)


class VllmInstanceOptions(_Options, tag=BackendType.VLLM.value):
    backend_type = BackendType.VLLM
    backend_options: VllmOptions = msgspec.field(default_factory=VllmOptions)


InstanceOptions = LlamaCppInstanceOptions | MlxLmInstanceOptions | VllmInstanceOptions
_VARIANTS: dict[BackendType, type[InstanceOptions]] = {
    BackendType.LLAMA_CPP: LlamaCppInstanceOptions,
    BackendType.MLX_LM: MlxLmInstanceOptions,
    BackendType.VLLM: VllmInstanceOptions,
}


def check_instance_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or not name.strip("."):
        # Made only of dots, a name is a path segment that URLs remove: no request could reach it.
        raise BackendInputError(f"invalid instance name {echo(name)}: {NAME_RULE}", field="name")
    return name


def instance_options_from_json(document: Any) -> InstanceOptions:
    """Decode and check options from JSON (the API, the config file); errors name the field.

    ``backend_options`` keys may use any spelling of a flag (see
    ``llamactl.backends.option_input``); they are read by the backend's
    adapter, the rest by msgspec, once.
    """
    if not isinstance(document, dict):
        raise BackendInputError("instance options must be a JSON object")
    if "backend_type" not in document:
        raise BackendInputError("backend_type is required", field="backend_type")
    try:
        backend = get_backend(str(document["backend_type"]))
    except BackendInputError as error:
        raise BackendInputError(f"backend_type: {error.message}", field="backend_type") from None
    backend_options = document.get("backend_options", {})
    if not isinstance(backend_options, dict):
        raise BackendInputError("backend_options must be an object", field="backend_options")
    try:
        typed = backend.options_from_json(backend_options)
    except BackendInputError as error:
        key = f"backend_options.{error.field}" if error.field else "backend_options"
        raise BackendInputError(error.message, field=key) from None
    rest = {key: value for key, value in document.items() if key not in ("backend_type", "backend_options")}
    variant = _VARIANTS[backend.backend_type]
    try:
        options = msgspec.convert(rest, variant, strict=False)
    except msgspec.ValidationError as error:
        message, field = validation_field(error)
        raise BackendInputError(message, field=field) from None
    return msgspec.structs.replace(options, backend_options=typed)
