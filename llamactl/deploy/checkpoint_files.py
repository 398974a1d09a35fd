"""A checkpoint's own files, read: JSON configs, safetensors headers, PEFT and mlx_lm adapter configs.

Every failure is an ``InvalidCheckpointError`` that names the file and what
is wrong with it (its JSON, a field's type, a header cut short), so a
deployer can pass the message on as it is. Only headers and configs are
read, never weights.

A PEFT ``adapter_config.json`` is read by peft's own ``LoraConfig`` where
peft is installed (it knows the defaults and checks of the version that
trained the adapter), and as plain JSON under the same names and defaults
otherwise: both give one ``PeftLoraConfig``. peft stays an optional extra.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from llamactl.deploy.checkpoint_kinds import InvalidCheckpointError
from llamactl.errors import validation_field
from llamactl.models.sources.model_dir import read_json_object
from llamactl.models.sources.safetensors_header import (
    SafetensorsFormatError,
    SafetensorsHeader,
    read_safetensors_header,
)

ADAPTER_CONFIG = "adapter_config.json"
TRAINER_STATE = "trainer_state.json"
PEFT_LORA_TYPE = "LORA"

StructT = TypeVar("StructT", bound=msgspec.Struct)


class PeftLoraConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The LoRA settings of a PEFT ``adapter_config.json``, under peft's names and ``LoraConfig``'s defaults.

    Fields an older peft wrote as ``null`` (or did not write) read as their defaults.
    """

    base_model_name_or_path: str | None = None
    r: int = 8
    lora_alpha: float = 8
    target_modules: list[str] | str | None = None
    task_type: str | None = None
    use_dora: bool = False
    use_rslora: bool = False
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None
    modules_to_save: list[str] | None = None


class MlxLoraParameters(msgspec.Struct, frozen=True, kw_only=True):
    rank: int | None = None
    scale: float | None = None
    keys: list[str] | None = None


class MlxAdapterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What serving needs of the ``adapter_config.json`` mlx_lm.lora writes (its training arguments)."""

    model: str | None = None
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    num_layers: int | None = None
    lora_parameters: MlxLoraParameters | None = None


class _TrainerState(msgspec.Struct, frozen=True):
    global_step: int | None = None


class _SafetensorsIndex(msgspec.Struct, frozen=True):
    weight_map: dict[str, str]


def json_object(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except OSError as error:
        raise InvalidCheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise InvalidCheckpointError(f"{path} is not valid JSON: {error}; fix or replace it") from None
    except ValueError as error:  # not an object, not UTF-8, or far too large
        raise InvalidCheckpointError(f"{path}: {error}; fix or replace it") from None


def _converted(value: dict[str, Any], struct_type: type[StructT], path: Path) -> StructT:
    try:
        return msgspec.convert(value, struct_type)
    except msgspec.ValidationError as error:
        message, _ = validation_field(error)
        raise InvalidCheckpointError(f"{path}: {message}") from None


def safetensors_header(path: Path) -> SafetensorsHeader:
    try:
        return read_safetensors_header(path)
    except SafetensorsFormatError as error:
        raise InvalidCheckpointError(f"{error}: not a safetensors file, or one cut short") from None
    except OSError as error:
        raise InvalidCheckpointError(f"cannot read {path}: {error.strerror or error}") from None


def indexed_weight_files(index: Path) -> set[str]:
    """The shard names a ``model.safetensors.index.json`` maps the tensors to."""
    return set(_converted(json_object(index), _SafetensorsIndex, index).weight_map.values())


def trainer_global_step(path: Path) -> int | None:
    """``global_step`` of a ``trainer_state.json``, or None when it records none."""
    step = _converted(json_object(path), _TrainerState, path).global_step
    return step if step is not None and step >= 0 else None


def read_peft_lora_config(directory: Path, config: dict[str, Any]) -> PeftLoraConfig:
    """The dir's ``adapter_config.json``, already read as ``config``, as a LoRA config.

    Refused when its ``peft_type`` is not LoRA.
    """
    path = directory / ADAPTER_CONFIG
    peft_type = config.get("peft_type")
    if peft_type is None:
        raise InvalidCheckpointError(f"{path} has no peft_type: it is not a PEFT adapter config")
    if peft_type != PEFT_LORA_TYPE:
        raise InvalidCheckpointError(
            f"{path} says peft_type {peft_type!r}: only LoRA adapters (peft_type {PEFT_LORA_TYPE!r}) can be"
            " served; merge it into its base model and serve that instead"
        )
    # peft_type is checked in the JSON whether peft is installed or not, so the refusal reads the same.
    by_peft = _read_with_peft(directory)
    return by_peft if by_peft is not None else _converted(config, PeftLoraConfig, path)


def _read_with_peft(directory: Path) -> PeftLoraConfig | None:
    """The config as the installed peft loads it, or None when peft is not installed."""
    try:
        # Imported here rather than at the top: peft is an optional extra, and importing it loads torch
        # and transformers, seconds that inspecting a GGUF file or a model dir should not pay.
        from peft import LoraConfig  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    path = directory / ADAPTER_CONFIG
    try:
        config = LoraConfig.from_pretrained(str(directory))
    except (TypeError, ValueError) as error:  # peft's own checks, and keys its LoraConfig does not take
        raise InvalidCheckpointError(f"{path}: peft cannot load it: {error}") from None
    names = (field.name for field in msgspec.structs.fields(PeftLoraConfig))
    values = {name: _plain(getattr(config, name)) for name in names if hasattr(config, name)}
    return _converted(values, PeftLoraConfig, path)


def _plain(value: object) -> object:
    """A peft config value as its JSON has it: enums as their values, sets as sorted lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


def read_mlx_adapter_config(path: Path, raw: dict[str, Any]) -> MlxAdapterConfig:
    """mlx_lm's adapter config at ``path``, already read as ``raw``.

    Refused when it lacks what mlx_lm's ``load_adapters`` needs to apply the adapter.
    """
    config = _converted(raw, MlxAdapterConfig, path)
    if config.fine_tune_type == "full":
        return config
    if config.num_layers is None:
        raise InvalidCheckpointError(
            f"{path} has no num_layers, which mlx_lm needs to apply the adapter"
            " (an older mlx_lm wrote it as lora_layers: rename that key num_layers)"
        )
    parameters = config.lora_parameters
    if parameters is None or parameters.rank is None or parameters.scale is None:
        raise InvalidCheckpointError(
            f"{path} has no lora_parameters with a rank and a scale, which mlx_lm needs to apply the adapter"
        )
    return config
