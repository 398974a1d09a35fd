"""An instance made from a catalogue entry: ``POST /api/v1/instances/{name}`` with ``{"model": "<id>"}``.

The backend follows the model's format: a GGUF goes to llama.cpp, an MLX dir
to mlx_lm, other safetensors dirs to the configured backend for them (vLLM,
or mlx_lm on a Mac). The entry's files (projector, adapters) and defaults
(Ollama's params) become that backend's options, and whatever the request
sets itself (``backend_type``, ``backend_options``, any instance option) wins.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llamactl.backends import BackendInputError, BackendType, ModelFiles, get_backend
from llamactl.instance.options import InstanceOptions, instance_options_from_json
from llamactl.models.entry import ModelEntry, ModelFormat

CATALOGUE_FIELD = "model"
"""The body member that names a catalogue entry (the Go llamactl's bodies have none at the top)."""


def default_backend(entry: ModelEntry, safetensors_backend: BackendType) -> BackendType:
    if entry.format is ModelFormat.GGUF:
        return BackendType.LLAMA_CPP
    if entry.format is ModelFormat.MLX:
        return BackendType.MLX_LM
    return safetensors_backend


def model_files(entry: ModelEntry) -> ModelFiles:
    return ModelFiles(
        model_path=entry.model_path,
        projector_path=entry.mmproj_path,
        adapter_paths=entry.adapter_paths,
        defaults=entry.params,
    )


def options_from_catalogue(
    entry: ModelEntry, body: dict[str, Any], safetensors_backend: BackendType
) -> InstanceOptions:
    """The options of an instance serving ``entry``, with the body's own settings over them."""
    chosen = body.get("backend_type")
    if chosen is None:
        backend = get_backend(default_backend(entry, safetensors_backend).value)
    else:
        try:
            backend = get_backend(str(chosen))
        except BackendInputError as error:
            raise BackendInputError(f"backend_type: {error.message}", field="backend_type") from None
    if backend.backend_type is BackendType.LLAMA_CPP and not entry.servable_by_llama_cpp:
        raise BackendInputError(
            f"{entry.id} is {entry.format.value}, which llama.cpp cannot serve: leave backend_type out "
            "or choose mlx_lm or vllm",
            field="backend_type",
        )
    overrides = body.get("backend_options", {})
    if not isinstance(overrides, dict):
        raise BackendInputError("backend_options must be an object", field="backend_options")
    served = msgspec.to_builtins(backend.options_for_model(model_files(entry)))
    rest = {key: value for key, value in body.items() if key not in (CATALOGUE_FIELD, "backend_options")}
    return instance_options_from_json(
        {**rest, "backend_type": backend.backend_type.value, "backend_options": {**served, **overrides}}
    )
