"""The training-deploy request and answer of ``POST /api/v1/deploy``.

The shape is the one training tools send (``checkpoint_path``, ``server_type``,
``name``, ``config``) and expect back (``success``, ``server_id``, ``status``,
``base_url``, ``port``, ``model_id``, ``model_name``), so a trainer's deploy
step can point at llamactl unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec


class ServerType(StrEnum):
    AUTO = "auto"
    """By what the checkpoint is: HF weights to vLLM, a GGUF to llama-server, MLX to mlx_lm."""
    VLLM = "vllm"
    LLAMA_CPP = "llama_cpp"
    MLX_LM = "mlx_lm"
    OLLAMA = "ollama"
    """The training-deploy note's GGUF path: llama-server, as Ollama itself runs it."""


class DeployConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    context_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """``--ctx-size`` (llama-server) or ``--max-model-len`` (vLLM); mlx_lm grows its cache as it goes."""
    gpu_memory_utilization: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    """vLLM's share of the accelerator's memory; ignored by the other backends."""
    base_model: str | None = None
    """The model an adapter applies to, when its own config does not name one that is on this machine:
    a local path, for vLLM and mlx_lm a model dir, for llama-server a GGUF file."""
    quantization: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]{1,16}$")] | None = None
    """The GGUF type an HF dir is converted to for llama-server: ``F16`` by default; ``F32``, ``BF16`` and
    ``Q8_0`` by llama.cpp's converter (gguf-py's quantizer); llama-quantize's other types (``Q4_K_M``...)
    where a ``llama-quantize`` executable is on PATH."""
    idle_timeout: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Minutes without requests before the instance stops, as for any instance."""
    backend_options: dict[str, Any] = {}
    """Any other option of the chosen backend, by its llamactl key; these win over what deploy sets."""


class DeployRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    checkpoint_path: str
    server_type: ServerType = ServerType.AUTO
    name: str | None = None
    """The instance's name; by default the checkpoint's dir (or file) name, made a valid name."""
    config: DeployConfig = DeployConfig()


class DeployAnswer(msgspec.Struct, frozen=True, kw_only=True):
    success: bool
    server_id: str
    """The instance's name: the id of every other instance route."""
    status: str
    base_url: str
    """llamactl's OpenAI-compatible base URL, where ``model_id`` is served."""
    port: int
    """The backend's own port on loopback."""
    model_id: str
    """What clients send as ``model``: the instance, or ``instance/adapter`` for an adapter."""
    model_name: str
    """The name the backend itself serves the model under."""
    backend_type: str
    checkpoint: Any
    """What the checkpoint was found to be (a ``Checkpoint`` kind)."""
