"""The memory a model will take as an instance's options load it, read from its files.

The formulas are ``memory_estimate``'s; this module finds what they need on
disk: the GGUF header, or a model dir's config.json and safetensors sizes,
and the sizes of the files loaded beside the model. It reads files, so the
manager runs it in a worker thread. A model it cannot read has no estimate
(None), never an error: the backend will say at start what is wrong with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import msgspec

from llamactl.backends import MemoryInputs
from llamactl.models.gguf_facts import GgufFacts, gguf_facts
from llamactl.models.gguf_header import GgufFormatError, read_gguf_header
from llamactl.models.memory_estimate import MemoryEstimate, estimate_gguf, estimate_safetensors

logger = logging.getLogger(__name__)

FALLBACK_CONTEXT = 4096
"""Tokens, for a GGUF whose header gives no training context."""


def read_facts(path: Path) -> GgufFacts:
    return gguf_facts(read_gguf_header(path))


class ModelProfile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an instance's model is, read from its files: for ``/v1/models`` and for admission."""

    context_length: int | None = None
    """The context the instance will have: its option, else the model's training context."""
    architecture: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    size_bytes: int = 0
    """The model's files on disk, with those loaded beside it."""
    estimate: MemoryEstimate | None = None


def profile_model(
    inputs: MemoryInputs, facts_of: Callable[[Path], GgufFacts] = read_facts
) -> ModelProfile | None:
    """``facts_of`` reads a GGUF's facts: the catalogue passes its cached reader."""
    path = Path(inputs.model_path).expanduser()
    extra = sum(_size_on_disk(Path(name).expanduser()) for name in inputs.extra_files)
    try:
        if path.is_file():
            facts = facts_of(path)
            context = inputs.context or facts.context_length or FALLBACK_CONTEXT
            estimate = estimate_gguf(
                facts,
                context=context,
                cache_type_k=inputs.cache_type_k,
                cache_type_v=inputs.cache_type_v,
                flash_attention=inputs.flash_attention,
                ubatch=inputs.ubatch,
                parallel=inputs.parallel,
                extra_files_bytes=extra,
            )
            return ModelProfile(
                context_length=context,
                architecture=facts.architecture,
                quantization=facts.quantization,
                parameters=facts.parameters,
                size_bytes=_size_on_disk(path) + extra,
                estimate=estimate,
            )
        if (path / "config.json").is_file():
            return _profile_model_dir(path, inputs, extra)
    except (OSError, ValueError, GgufFormatError) as error:
        logger.info("no memory estimate for %s: %s", path, error)
    return None


def estimate_model_memory(
    inputs: MemoryInputs, facts_of: Callable[[Path], GgufFacts] = read_facts
) -> MemoryEstimate | None:
    profile = profile_model(inputs, facts_of)
    return profile.estimate if profile is not None else None


def _profile_model_dir(path: Path, inputs: MemoryInputs, extra: int) -> ModelProfile:
    config = json.loads((path / "config.json").read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'} is not a JSON object")
    weights = sum(_size_on_disk(file) for file in path.glob("*.safetensors"))
    estimate = estimate_safetensors(config, weights, context=inputs.context)
    kv_cache = estimate.kv_cache_bytes if inputs.kv_cache_bytes is None else inputs.kv_cache_bytes
    total = estimate.weights_bytes + kv_cache + estimate.compute_bytes + estimate.extra_bytes + extra
    trained = config.get("max_position_embeddings")
    model_type = config.get("model_type")
    return ModelProfile(
        context_length=inputs.context or (trained if isinstance(trained, int) else None),
        architecture=model_type if isinstance(model_type, str) else None,
        size_bytes=weights + extra,
        estimate=msgspec.structs.replace(
            estimate, kv_cache_bytes=kv_cache, extra_bytes=estimate.extra_bytes + extra, total_bytes=total
        ),
    )


def _size_on_disk(path: Path) -> int:
    """A file's size, or a dir's files' sizes summed (an MLX adapter dir); 0 when it is not there."""
    try:
        if path.is_dir():
            return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
        return path.stat().st_size
    except OSError:
        return 0
