"""What one dir holds, as a kind: a PEFT or mlx_lm adapter, or a model dir; refused with what it found.

- A dir with adapter files is an adapter: PEFT's when its
  ``adapter_config.json`` has a ``peft_type``, mlx_lm's when it holds
  ``adapters.safetensors`` or mlx_lm's keys. An adapter wins over a
  ``config.json`` beside it, which some trainers copy from the base.
- A dir with ``config.json`` or ``*.safetensors`` is a model dir and needs
  both, and every shard its index names. It is MLX as the catalogue tells:
  ``model_dir.is_mlx_model``.

Whether a trainer wrote the dir is ``checkpoint``'s business: the kinds come
back with no ``trainer``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import msgspec

from llamactl.deploy.checkpoint_files import (
    ADAPTER_CONFIG,
    indexed_weight_files,
    json_object,
    read_mlx_adapter_config,
    read_peft_lora_config,
    safetensors_header,
)
from llamactl.deploy.checkpoint_kinds import (
    DirCheckpoint,
    HfModelDir,
    InvalidCheckpointError,
    MlxAdapterDir,
    MlxQuantization,
    PeftLoraDir,
)
from llamactl.models.sources.gguf_models import GGUF_SUFFIX
from llamactl.models.sources.model_dir import (
    CONFIG_FILE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SUFFIX,
    context_length,
    is_mlx_model,
)

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PICKLED_WEIGHTS = "adapter_model.bin"
MLX_ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_FILES = frozenset({ADAPTER_CONFIG, PEFT_WEIGHTS, PEFT_PICKLED_WEIGHTS, MLX_ADAPTER_WEIGHTS})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
LISTED_NAMES = 10
"""Names a refusal lists of what it found; the rest are counted."""

_MLX_SAVED_ADAPTERS = re.compile(r"\d+_adapters\.safetensors")
"""The adapters mlx_lm.lora saves every --save-every steps, before the final ``adapters.safetensors``."""
_TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


class DirListing(msgspec.Struct, frozen=True):
    files: frozenset[str]
    dirs: frozenset[str]

    def found(self) -> str:
        return listed_names(sorted(self.files) + sorted(name + "/" for name in self.dirs)) or "nothing"


def listed_names(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown if len(names) <= LISTED_NAMES else f"{shown} and {len(names) - LISTED_NAMES} more"


def list_dir(directory: Path) -> DirListing:
    try:
        with os.scandir(directory) as entries:
            children = list(entries)
    except OSError as error:
        raise InvalidCheckpointError(f"cannot list {directory}: {error.strerror or error}") from None
    return DirListing(
        files=frozenset(child.name for child in children if child.is_file()),
        dirs=frozenset(child.name for child in children if child.is_dir()),
    )


def holds_checkpoint_files(listing: DirListing) -> bool:
    """The dir has an adapter's or a model dir's files, complete or not."""
    files = listing.files
    return (
        bool(files & ADAPTER_FILES)
        or CONFIG_FILE in files
        or any(name.endswith(SAFETENSORS_SUFFIX) for name in files)
    )


def read_checkpoint_dir(directory: Path, listing: DirListing) -> DirCheckpoint:
    """The kind of the dir ``listing`` lists; refused, with what it found, if it holds no adapter or model."""
    if listing.files & ADAPTER_FILES:
        return _adapter_dir(directory, listing)
    if holds_checkpoint_files(listing):
        return _model_dir(directory, listing)
    ggufs = sorted(name for name in listing.files if name.lower().endswith(GGUF_SUFFIX))
    if ggufs:
        raise InvalidCheckpointError(
            f"{directory} holds GGUF files, not a model dir: point at one of {listed_names(ggufs)}"
        )
    if not listing.files and not listing.dirs:
        raise InvalidCheckpointError(f"{directory} is empty")
    raise InvalidCheckpointError(f"{directory} holds no model or adapter: found only {listing.found()}")


def _adapter_dir(directory: Path, listing: DirListing) -> PeftLoraDir | MlxAdapterDir:
    files = listing.files
    if ADAPTER_CONFIG not in files:
        weights = sorted(files & ADAPTER_FILES)
        raise InvalidCheckpointError(
            f"{directory}: found {listed_names(weights)} but no {ADAPTER_CONFIG}, which says how to apply it:"
            " copy it from the training run"
        )
    config = json_object(directory / ADAPTER_CONFIG)
    if "peft_type" not in config and (
        MLX_ADAPTER_WEIGHTS in files or "lora_parameters" in config or "fine_tune_type" in config
    ):
        return _mlx_adapter_dir(directory, listing, config)
    return _peft_lora_dir(directory, listing, config)


def _peft_lora_dir(directory: Path, listing: DirListing, adapter_config: dict[str, Any]) -> PeftLoraDir:
    weights_format: Literal["safetensors", "bin"]
    if PEFT_WEIGHTS in listing.files:
        weights_file, weights_format = directory / PEFT_WEIGHTS, "safetensors"
        safetensors_header(weights_file)  # a damaged or cut-short file is refused now, not at load
    elif PEFT_PICKLED_WEIGHTS in listing.files:
        weights_file, weights_format = directory / PEFT_PICKLED_WEIGHTS, "bin"
    else:
        raise InvalidCheckpointError(
            f"{directory}: found {ADAPTER_CONFIG} but no {PEFT_WEIGHTS} (found {listing.found()})"
        )
    config = read_peft_lora_config(directory, adapter_config)
    target_modules = config.target_modules
    return PeftLoraDir(
        path=str(directory),
        base_model=config.base_model_name_or_path,
        r=config.r,
        lora_alpha=config.lora_alpha,
        # peft keeps a list of names as a set: sorted, both reads of a config agree
        target_modules=tuple(sorted(set(target_modules)))
        if isinstance(target_modules, list)
        else target_modules,
        task_type=config.task_type,
        use_dora=config.use_dora,
        use_rslora=config.use_rslora,
        rank_pattern=config.rank_pattern or {},
        alpha_pattern=config.alpha_pattern or {},
        modules_to_save=None if config.modules_to_save is None else tuple(config.modules_to_save),
        weights_file=str(weights_file),
        weights_format=weights_format,
        weight_bytes=_file_bytes(weights_file),
    )


def _mlx_adapter_dir(directory: Path, listing: DirListing, adapter_config: dict[str, Any]) -> MlxAdapterDir:
    if MLX_ADAPTER_WEIGHTS not in listing.files:
        saved = sorted(name for name in listing.files if _MLX_SAVED_ADAPTERS.fullmatch(name))
        hint = f": copy the latest one saved, {saved[-1]}, to {MLX_ADAPTER_WEIGHTS}" if saved else ""
        raise InvalidCheckpointError(
            f"{directory}: found {ADAPTER_CONFIG} but no {MLX_ADAPTER_WEIGHTS}"
            f" (found {listing.found()}){hint}"
        )
    weights_file = directory / MLX_ADAPTER_WEIGHTS
    config = read_mlx_adapter_config(directory / ADAPTER_CONFIG, adapter_config)
    safetensors_header(weights_file)
    parameters = config.lora_parameters
    return MlxAdapterDir(
        path=str(directory),
        base_model=config.model,
        fine_tune_type=config.fine_tune_type,
        rank=None if parameters is None else parameters.rank,
        scale=None if parameters is None else parameters.scale,
        num_layers=config.num_layers,
        keys=None if parameters is None or parameters.keys is None else tuple(parameters.keys),
        weights_file=str(weights_file),
        weight_bytes=_file_bytes(weights_file),
    )


def _model_dir(directory: Path, listing: DirListing) -> HfModelDir:
    files = listing.files
    weight_files = sorted(name for name in files if name.endswith(SAFETENSORS_SUFFIX))
    if CONFIG_FILE not in files:
        raise InvalidCheckpointError(
            f"{directory}: found {listed_names(weight_files)} but no {CONFIG_FILE}, which says what model"
            " they are: copy it from the base model"
        )
    if not weight_files:
        pickled = sorted(name for name in files if name.endswith(PICKLE_SUFFIXES))
        hint = (
            f"; {listed_names(pickled)} is pickled: save the model again with safetensors"
            " (save_pretrained(safe_serialization=True))"
            if pickled
            else ""
        )
        raise InvalidCheckpointError(
            f"{directory}: found {CONFIG_FILE} but no *{SAFETENSORS_SUFFIX} (found {listing.found()}){hint}"
        )
    if SAFETENSORS_INDEX in files:
        missing = sorted(indexed_weight_files(directory / SAFETENSORS_INDEX) - files)
        if missing:
            raise InvalidCheckpointError(
                f"{directory}: {SAFETENSORS_INDEX} names {listed_names(missing)}, which are not there:"
                " the weights are incomplete (a download or save cut short)"
            )
    config = json_object(directory / CONFIG_FILE)
    headers = [safetensors_header(directory / name) for name in weight_files]
    elements_by_dtype: Counter[str] = Counter()
    for header in headers:
        for tensor in header.tensors:
            elements_by_dtype[tensor.dtype] += tensor.n_elements
    quantization = config.get("quantization")
    return HfModelDir(
        path=str(directory),
        architecture=_first_architecture(config),
        model_type=_config_text(config, "model_type"),
        dtype=_config_text(config, "torch_dtype", "dtype") or _stored_dtype(elements_by_dtype),
        weight_dtypes=tuple(sorted(elements_by_dtype)),
        context_length=context_length(config),
        mlx=is_mlx_model(config, headers),
        mlx_quantization=_mlx_quantization(quantization) if isinstance(quantization, dict) else None,
        quant_method=_quant_method(config.get("quantization_config")),
        weight_files=tuple(weight_files),
        weight_bytes=sum(_file_bytes(directory / name) for name in weight_files),
    )


def _config_text(config: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` that is a string, at the top of config.json or in its ``text_config``."""
    text_config = config.get("text_config")
    for level in (config, text_config if isinstance(text_config, dict) else {}):
        for key in keys:
            if isinstance(value := level.get(key), str) and value:
                return value
    return None


def _first_architecture(config: dict[str, Any]) -> str | None:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def _stored_dtype(elements_by_dtype: Counter[str]) -> str | None:
    """The torch name of the float type most weights are stored in (packed MLX integers are not weights)."""
    floats = Counter({dtype: count for dtype, count in elements_by_dtype.items() if dtype in _TORCH_DTYPES})
    return _TORCH_DTYPES[floats.most_common(1)[0][0]] if floats else None


def _mlx_quantization(quantization: dict[str, Any]) -> MlxQuantization | None:
    bits, group_size = quantization.get("bits"), quantization.get("group_size")
    if type(bits) is int and type(group_size) is int:
        return MlxQuantization(bits=bits, group_size=group_size)
    return None


def _quant_method(quantization_config: object) -> str | None:
    if isinstance(quantization_config, dict) and isinstance(
        method := quantization_config.get("quant_method"), str
    ):
        return method
    return None


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise InvalidCheckpointError(f"cannot read {path}: {error.strerror or error}") from None
