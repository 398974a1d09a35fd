"""Which backend serves a checkpoint, and with what options, after the conversions it needs.

``auto`` follows the training-deploy note: HF weights go to vLLM as they are
(no GGUF conversion), a GGUF to llama-server, MLX to mlx_lm. Where the machine
cannot run vLLM, an HF dir goes to mlx_lm (it loads safetensors too), and
only where neither runs is it converted to GGUF for llama-server; ``ollama``
and ``llama_cpp`` ask for that conversion. A PEFT LoRA goes to vLLM over its
base model as it is, or converted to mlx_lm's format or to a GGUF LoRA. A
GGUF LoRA goes to llama-server over a GGUF base, an mlx_lm adapter to mlx_lm.
Whatever cannot be served is refused with the reason and what to do instead.

The decisions are plain code over the inspected checkpoint; the machine is
asked only through ``runnable``, ``find_base`` and ``staging`` (the
conversions), which the tests replace. An adapter becomes a model name
clients can ask for, ``instance/adapter``: its name is on the instance's
``allowed_models``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from llamactl.backends import BackendType
from llamactl.deploy.checkpoint_kinds import (
    Checkpoint,
    GgufLoraFile,
    GgufModelFile,
    HfModelDir,
    MlxAdapterDir,
    PeftLoraDir,
)
from llamactl.deploy.request import DeployRequest, ServerType
from llamactl.errors import LlamactlError

DEFAULT_QUANTIZATION = "F16"
"""What an HF model is converted to for llama-server: its weights as trained, in half the bytes of F32."""
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""``--max-lora-rank``'s choices (vLLM's ``MaxLoRARanks``)."""


class DeployRefused(LlamactlError):
    """A checkpoint this machine cannot serve as asked; the message says what to do instead."""

    status = 422
    code = "deploy_refused"


class DeployPlan(msgspec.Struct, frozen=True, kw_only=True):
    backend_type: BackendType
    options: dict[str, Any]
    """The instance's options as the API takes them (``backend_type``, ``backend_options``, ...)."""
    adapter: str | None = None
    """The adapter's model name on the instance, when the checkpoint is one."""


Runnable = Callable[[BackendType], bool]
"""Whether this machine can start a backend (its configured command is found)."""
FindBase = Callable[[str], str | None]
"""The local path of a base model named by an adapter (a path or a hub repo id), or None."""


class Staging(Protocol):
    """Conversions a backend needs before it can load a checkpoint, each done once and cached.

    Each returns the path of what it made, named so that the adapter's name survives (a backend's
    adapter names come from file and dir names); each refuses with ``DeployRefused``.
    """

    def gguf_model(self, model_dir: str, quantization: str) -> str:
        """An HF model dir as a GGUF of type ``quantization`` (llama.cpp's convert_hf_to_gguf.py, then
        llama-quantize for the types the converter does not write)."""
        ...

    def gguf_lora(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        """A PEFT LoRA as a GGUF LoRA over its HF base dir (llama.cpp's convert_lora_to_gguf.py)."""
        ...

    def mlx_adapter(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        """A PEFT LoRA as an mlx_lm adapter dir (transposed, renamed, scale = alpha / r)."""
        ...


def plan_deploy(
    checkpoint: Checkpoint, request: DeployRequest, runnable: Runnable, find_base: FindBase, staging: Staging
) -> DeployPlan:
    """The backend and options that serve ``checkpoint`` as ``request`` asks; ``DeployRefused`` if none.

    Conversions (``staging``) run here, so this is called off the event loop.
    """
    wanted = _wanted_backend(request.server_type)
    if isinstance(checkpoint, HfModelDir):
        backend = _model_dir_backend(checkpoint, wanted, runnable)
        if backend is BackendType.LLAMA_CPP:
            gguf = staging.gguf_model(checkpoint.path, _quantization(request))
            return _plan(request, backend, {"model": gguf, "jinja": True})
        _no_quantization(request, f"{backend.value} serves {checkpoint.path} as it is")
        return _plan(request, backend, {"model": checkpoint.path})
    if isinstance(checkpoint, GgufModelFile):
        _no_quantization(
            request, f"{checkpoint.path} is a GGUF already ({checkpoint.quantization or 'of unknown type'})"
        )
        _only(wanted, BackendType.LLAMA_CPP, "a GGUF file", "llama_cpp (or auto)")
        _require(runnable, BackendType.LLAMA_CPP)
        return _plan(request, BackendType.LLAMA_CPP, {"model": checkpoint.path, "jinja": True})
    if isinstance(checkpoint, PeftLoraDir):
        return _peft_plan(checkpoint, request, wanted, runnable, find_base, staging)
    if isinstance(checkpoint, GgufLoraFile):
        _only(wanted, BackendType.LLAMA_CPP, "a GGUF LoRA", "llama_cpp (or auto)")
        _require(runnable, BackendType.LLAMA_CPP)
        _no_quantization(request, "a GGUF LoRA is served over the GGUF base given")
        base = request.config.base_model
        if base is None:
            raise DeployRefused(
                f"{checkpoint.path} is a GGUF LoRA, which names no base model file: set config.base_model "
                "to the GGUF it was trained on"
            )
        found = find_base(base)
        if found is None:
            raise DeployRefused(f"config.base_model {base!r} does not exist: give the path of a GGUF file")
        adapter = _adapter_name(checkpoint.path)
        return _plan(request, BackendType.LLAMA_CPP, _llama_cpp_lora(found, checkpoint.path), adapter)
    assert isinstance(checkpoint, MlxAdapterDir)
    _only(wanted, BackendType.MLX_LM, "an mlx_lm adapter", "mlx_lm (or auto)")
    _require(runnable, BackendType.MLX_LM)
    _no_quantization(request, "mlx_lm serves its base as it is")
    base = _base_path(request.config.base_model or checkpoint.base_model, checkpoint.path, find_base)
    adapter = _adapter_name(checkpoint.path)
    return _plan(request, BackendType.MLX_LM, {"model": base, "adapter_path": checkpoint.path}, adapter)


def _wanted_backend(server_type: ServerType) -> BackendType | None:
    if server_type is ServerType.AUTO:
        return None
    if server_type is ServerType.OLLAMA:
        return BackendType.LLAMA_CPP
    return BackendType(server_type.value)


def _model_dir_backend(checkpoint: HfModelDir, wanted: BackendType | None, runnable: Runnable) -> BackendType:
    if checkpoint.mlx:
        _only(wanted, BackendType.MLX_LM, "an MLX model dir", "mlx_lm (or auto)")
        _require(runnable, BackendType.MLX_LM)
        return BackendType.MLX_LM
    if wanted is not None:
        _require(runnable, wanted)
        return wanted
    # As the weights are first (vLLM, then mlx_lm), converted to GGUF only where neither runs.
    for backend in (BackendType.VLLM, BackendType.MLX_LM, BackendType.LLAMA_CPP):
        if runnable(backend):
            return backend
    raise DeployRefused(
        f"{checkpoint.path} needs vLLM, mlx_lm or llama-server, and none is installed here: install vllm, "
        "or set backends.vllm.command to its executable"
    )


def _peft_plan(
    checkpoint: PeftLoraDir,
    request: DeployRequest,
    wanted: BackendType | None,
    runnable: Runnable,
    find_base: FindBase,
    staging: Staging,
) -> DeployPlan:
    """vLLM serves a PEFT LoRA as it is; mlx_lm and llama-server after a conversion, in that order."""
    if wanted is None:
        order = (BackendType.VLLM, BackendType.MLX_LM, BackendType.LLAMA_CPP)
        wanted = next((backend for backend in order if runnable(backend)), BackendType.VLLM)
    _require(runnable, wanted)
    if checkpoint.use_dora:
        raise DeployRefused(f"{checkpoint.path} is a DoRA adapter (use_dora), which no backend here serves")
    adapter = _adapter_name(checkpoint.path)
    base_given = request.config.base_model
    if wanted is BackendType.LLAMA_CPP and base_given is not None and base_given.endswith(".gguf"):
        base_gguf = find_base(base_given)
        if base_gguf is None:
            raise DeployRefused(
                f"config.base_model {base_given!r} does not exist: give a GGUF file or a model dir"
            )
        _no_quantization(request, f"the GGUF base {base_given} is served as it is")
        # The adapter is converted against the HF base it names: its tensor shapes come from there.
        hf_base = _base_path(checkpoint.base_model, checkpoint.path, find_base)
        lora = staging.gguf_lora(checkpoint, hf_base, adapter)
        return _plan(request, wanted, _llama_cpp_lora(base_gguf, lora), adapter)
    base = _base_path(base_given or checkpoint.base_model, checkpoint.path, find_base)
    if wanted is BackendType.LLAMA_CPP:
        lora = staging.gguf_lora(checkpoint, base, adapter)
        base_gguf = staging.gguf_model(base, _quantization(request))
        return _plan(request, wanted, _llama_cpp_lora(base_gguf, lora), adapter)
    _no_quantization(request, f"{wanted.value} serves the adapter's base as it is")
    if wanted is BackendType.MLX_LM:
        staged = staging.mlx_adapter(checkpoint, base, adapter)
        return _plan(request, wanted, {"model": base, "adapter_path": staged}, adapter)
    rank = max([checkpoint.r, *checkpoint.rank_pattern.values()])
    max_rank = next((allowed for allowed in VLLM_LORA_RANKS if allowed >= rank), None)
    if max_rank is None:
        raise DeployRefused(
            f"{checkpoint.path} has rank {rank}, over vLLM's largest --max-lora-rank of {VLLM_LORA_RANKS[-1]}"
        )
    options: dict[str, Any] = {
        "model": base,
        "enable_lora": True,
        "lora_modules": [f"{adapter}={checkpoint.path}"],
        "max_lora_rank": max_rank,
    }
    return _plan(request, wanted, options, adapter)


def _llama_cpp_lora(base_gguf: str, lora: str) -> dict[str, Any]:
    # Loaded at scale 0, so the instance's own name is the base model and instance/adapter applies it
    # per request (--lora-init-without-apply still applies it on b10434: the reference, §0).
    return {"model": base_gguf, "lora_scaled": [f"{lora}:0"], "jinja": True}


def _plan(
    request: DeployRequest, backend: BackendType, backend_options: dict[str, Any], adapter: str | None = None
) -> DeployPlan:
    config = request.config
    if config.context_length is not None:
        if backend is BackendType.LLAMA_CPP:
            backend_options["ctx_size"] = config.context_length
        elif backend is BackendType.VLLM:
            backend_options["max_model_len"] = config.context_length
    if config.gpu_memory_utilization is not None and backend is BackendType.VLLM:
        backend_options["gpu_memory_utilization"] = config.gpu_memory_utilization
    options: dict[str, Any] = {
        "backend_type": backend.value,
        "backend_options": {**backend_options, **config.backend_options},
    }
    if adapter is not None:
        options["allowed_models"] = [adapter]
    if config.idle_timeout is not None:
        options["idle_timeout"] = config.idle_timeout
    return DeployPlan(backend_type=backend, options=options, adapter=adapter)


def _quantization(request: DeployRequest) -> str:
    return (request.config.quantization or DEFAULT_QUANTIZATION).upper()


def _no_quantization(request: DeployRequest, why: str) -> None:
    if request.config.quantization is not None:
        raise DeployRefused(
            f"config.quantization applies to an HF model converted to GGUF for llama-server, and {why}: "
            "leave it out, or use server_type llama_cpp with an HF model dir"
        )


def _only(wanted: BackendType | None, backend: BackendType, what: str, instead: str) -> None:
    if wanted is not None and wanted is not backend:
        raise DeployRefused(
            f"{what} is served by {backend.value} only, not {wanted.value}: use server_type {instead}"
        )


def _require(runnable: Runnable, backend: BackendType) -> None:
    if not runnable(backend):
        raise DeployRefused(
            f"{backend.value} is not installed here (its command was not found): install it, or set "
            f"its command in the config's backends section"
        )


def _base_path(base: str | None, adapter_path: str, find_base: FindBase) -> str:
    if not base:
        raise DeployRefused(
            f"{adapter_path} names no base model: set config.base_model to the model dir it was trained on"
        )
    found = find_base(base)
    if found is None:
        raise DeployRefused(
            f"the adapter's base model {base!r} is not on this machine: download it "
            f"(llamactl models pull {base}), or set config.base_model to its local dir"
        )
    return found


def _adapter_name(path: str) -> str:
    """The adapter's model name: its dir or file name, without a ``.gguf`` suffix."""
    name = path.rstrip("/").rpartition("/")[2]
    return name.removesuffix(".gguf") or "adapter"
