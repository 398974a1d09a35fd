"""What an instance is made of: its name rules and options (the Go llamactl's JSON shape)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from llamactl.backends import BackendInputError, BackendType, get_backend
from llamactl.backends.options_base import BackendOptions

NAME_PATTERN = re.compile(r"[a-zA-Z0-9._-]{1,50}")


class InstanceOptions(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Options of one instance, as the API takes them and the database keeps them.

    ``None`` means "use the configured default" (``instances.default_*``);
    ``backend_options`` holds the backend's options in their JSON form, already
    checked against the backend's CLI spec.
    """

    backend_type: BackendType
    backend_options: dict[str, Any] = {}
    auto_restart: bool | None = None
    max_restarts: int | None = None
    restart_delay: int | None = None
    """Seconds before the first restart after a crash; later ones back off exponentially."""
    on_demand_start: bool | None = None
    idle_timeout: int | None = None
    """Minutes without requests before an idle stop; 0 pins the instance (never idle-stopped or evicted)."""
    max_concurrent: int | None = None
    """Requests in flight at once; more wait in the queue. Unset: no limit."""
    max_queue: int | None = None
    """Requests waiting for this instance; past it, 429. Unset: only ``instances.max_queue`` applies."""
    send_loading_state: bool | None = None
    """Streamed requests that wait also get the progress as ``reasoning_content`` (llama-swap's key)."""
    allowed_models: list[str] = []
    """Sub-models (``instance/model``) it may be asked for, besides its served model and adapters."""
    environment: dict[str, str] = {}
    group: str | None = None
    docker_enabled: bool | None = None
    command_override: str | None = None
    nodes: list[str] = []
    """Reserved for multi-node; only the local node exists."""

    def typed_backend_options(self) -> BackendOptions:
        return get_backend(self.backend_type).options_from_json(self.backend_options)


def check_instance_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise BackendInputError(
            f"invalid instance name {name!r}: use 1 to 50 letters, digits, '.', '_' or '-'", field="name"
        )
    return name


def instance_options_from_json(document: Any) -> InstanceOptions:
    """Decode and check options from JSON; errors name the field."""
    try:
        options = msgspec.convert(document, InstanceOptions, strict=False)
    except msgspec.ValidationError as error:
        raise BackendInputError(f"invalid instance options: {error}") from None
    for field, value in (
        ("max_restarts", options.max_restarts),
        ("restart_delay", options.restart_delay),
        ("idle_timeout", options.idle_timeout),
        ("max_queue", options.max_queue),
    ):
        if value is not None and value < 0:
            raise BackendInputError(f"{field} must be 0 or more; got {value}", field=field)
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise BackendInputError(
            f"max_concurrent must be 1 or more (leave it out for no limit); got {options.max_concurrent}",
            field="max_concurrent",
        )
    if options.group is not None:
        check_instance_name(options.group)
    typed = options.typed_backend_options()
    return msgspec.structs.replace(options, backend_options=msgspec.to_builtins(typed))
