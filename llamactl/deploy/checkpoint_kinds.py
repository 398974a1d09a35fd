"""What a checkpoint path turned out to be: a tagged union by ``kind``, and the error that refuses one.

Each kind carries what a deployer needs to pick a backend and build its
argv (a base model for an adapter, a dtype and context for a model dir)
without opening the files again. Paths are resolved absolute strings, so a
result encodes to JSON as it is. The kinds that are dirs say, in
``trainer``, when they are a trainer's ``checkpoint-N`` and which step.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from llamactl.errors import LlamactlError


class InvalidCheckpointError(LlamactlError):
    """A path that is not a servable checkpoint; the message says what was found there."""

    status = 422
    code = "invalid_checkpoint"


class CheckpointNotFoundError(InvalidCheckpointError):
    status = 404
    code = "checkpoint_not_found"


class PassedOverCheckpoint(msgspec.Struct, frozen=True):
    """A later ``checkpoint-N`` of an output dir that holds nothing servable (a save cut short)."""

    path: str
    reason: str


class TrainerCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a dir kind came from when a trainer wrote it."""

    step: int
    """``global_step`` of its ``trainer_state.json``, else the N of its ``checkpoint-N`` name."""
    output_dir: str | None = None
    """The trainer's output dir, when that was the path asked about and this is its latest checkpoint."""
    passed_over: tuple[PassedOverCheckpoint, ...] = ()
    """Later checkpoints of that output dir that were not servable, latest first."""


class _Kind(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    path: str
    """The file or dir to load: for a trainer's output dir, the checkpoint it resolved to."""


class MlxQuantization(msgspec.Struct, frozen=True):
    bits: int
    group_size: int


class HfModelDir(_Kind, frozen=True, kw_only=True, tag="hf_model"):
    """A Hugging Face model dir, ``config.json`` plus safetensors weights, from transformers or mlx_lm."""

    architecture: str | None
    """``architectures[0]`` of config.json (``LlamaForCausalLM``)."""
    model_type: str | None
    """``model_type`` of config.json (``llama``)."""
    dtype: str | None
    """The torch dtype (``bfloat16``): config.json's ``torch_dtype`` or ``dtype``, else the float type
    most weights are stored in."""
    weight_dtypes: tuple[str, ...]
    """Every safetensors dtype the weights use (``BF16``; ``U32`` holds MLX-quantized values)."""
    context_length: int | None
    """The training context: ``max_position_embeddings`` or its older names."""
    mlx: bool
    """mlx_lm wrote it (quantized, or its shards say ``format: mlx``): only mlx_lm serves it as it is."""
    mlx_quantization: MlxQuantization | None
    quant_method: str | None
    """transformers' ``quantization_config.quant_method`` (``awq``, ``gptq``, ``fp8``), when quantized so."""
    weight_files: tuple[str, ...]
    weight_bytes: int
    trainer: TrainerCheckpoint | None = None


class GgufModelFile(_Kind, frozen=True, kw_only=True, tag="gguf_model"):
    """A GGUF model, which llama-server loads with ``-m``."""

    architecture: str | None
    name: str | None
    quantization: str | None
    """llama-quantize's name for the file type (``Q4_K_M``)."""
    context_length: int | None
    parameters: int
    chat_template: bool
    file_bytes: int


class GgufLoraFile(_Kind, frozen=True, kw_only=True, tag="gguf_lora"):
    """A GGUF adapter (``general.type`` ``adapter``), which llama-server loads with ``--lora``."""

    architecture: str | None
    """The architecture of the base model it was converted for."""
    adapter_type: str | None
    """``adapter.type``: ``lora`` from llama.cpp's convert_lora_to_gguf.py."""
    lora_alpha: float | None
    file_bytes: int


class PeftLoraDir(_Kind, frozen=True, kw_only=True, tag="peft_lora"):
    """A PEFT LoRA adapter dir: ``adapter_config.json`` (``peft_type`` ``LORA``) plus its weights."""

    base_model: str | None
    """``base_model_name_or_path``: a hub repo id or the path the adapter was trained on."""
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str | None
    """Module names (sorted), or one regular expression that peft matches against full module names."""
    task_type: str | None
    """``CAUSAL_LM`` for a language model."""
    use_dora: bool
    use_rslora: bool
    """The scale is ``lora_alpha / sqrt(r)`` rather than ``lora_alpha / r``."""
    rank_pattern: dict[str, int]
    """Modules whose rank is not ``r``."""
    alpha_pattern: dict[str, float]
    """Modules whose alpha is not ``lora_alpha``."""
    modules_to_save: tuple[str, ...] | None
    """Modules saved whole beside the LoRA weights (a retrained ``lm_head``)."""
    weights_file: str
    weights_format: Literal["safetensors", "bin"]
    """``bin`` is a pickled ``adapter_model.bin``, which converters may refuse."""
    weight_bytes: int
    trainer: TrainerCheckpoint | None = None


class MlxAdapterDir(_Kind, frozen=True, kw_only=True, tag="mlx_adapter"):
    """An mlx_lm adapter dir: ``adapters.safetensors`` plus the ``adapter_config.json`` mlx_lm.lora wrote."""

    base_model: str | None
    """The ``model`` it was trained on, a hub repo id or a path, when the config records it."""
    fine_tune_type: Literal["lora", "dora", "full"]
    rank: int | None
    scale: float | None
    """The LoRA scale as mlx_lm applies it (not an alpha: mlx_lm does not divide it by the rank)."""
    num_layers: int | None
    """How many of the last layers were trained."""
    keys: tuple[str, ...] | None
    """The modules adapted, when the config names them; None is mlx_lm's default for the model type."""
    weights_file: str
    weight_bytes: int
    trainer: TrainerCheckpoint | None = None


DirCheckpoint = HfModelDir | PeftLoraDir | MlxAdapterDir
Checkpoint = HfModelDir | GgufModelFile | GgufLoraFile | PeftLoraDir | MlxAdapterDir
