"""A Hugging Face-style model dir (``config.json`` plus ``*.safetensors``), safetensors or MLX.

The dir is MLX when mlx_lm wrote it: its ``save_model`` stamps every shard's
safetensors metadata with ``"format": "mlx"``, and a quantized MLX model's
``config.json`` has a top-level ``quantization`` object (transformers writes
``quantization_config`` only). Anything else is plain safetensors.

The facts come from ``config.json`` (``model_type``, else ``architectures[0]``;
``max_position_embeddings`` or an older model's name for it, also under
``text_config`` for multimodal models; ``torch_dtype`` or its newer name
``dtype``) and the safetensors headers: parameters are the sum of the
tensors' shape products, unless the index mlx_lm writes gives
``total_parameters``. The tensors are never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from llamactl.models.entry import FileType, ModelEntry, ModelFile, ModelFormat, ModelSource
from llamactl.models.sources.gguf_models import GGUF_SUFFIX, distinct_size
from llamactl.models.sources.safetensors_header import SafetensorsHeader
from llamactl.models.sources.scan_context import ScanContext
from llamactl.models.sources.tree import FoundDir, FoundFile

CONFIG_FILE = "config.json"
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
PRESET_FILE = "preset.ini"
MAX_JSON_BYTES = 64 * 1024 * 1024
"""Far above any real config or tokenizer config; stops a huge file named so from being loaded."""


class ModelDir(msgspec.Struct, frozen=True, kw_only=True):
    directory: FoundDir
    format: ModelFormat
    architecture: str | None
    parameters: int | None
    quantization: str | None
    context_length: int | None
    chat_template: bool
    files: tuple[FoundFile, ...]
    """Every file of the dir but its GGUF files, which are models of their own."""


def is_model_dir(directory: FoundDir) -> bool:
    names = [file.name for file in directory.files]
    return CONFIG_FILE in names and any(name.endswith(SAFETENSORS_SUFFIX) for name in names)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` if it is not one, ``OSError`` if unreadable."""
    with open(path, "rb") as file:
        raw = file.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES:,} bytes")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def read_model_dir(directory: FoundDir, context: ScanContext) -> ModelDir | None:
    """The dir's facts, or None (noted in the context) when its config or a shard's header is bad."""
    by_name = {file.name: file for file in directory.files}
    config_file = by_name[CONFIG_FILE]
    try:
        config = read_json_object(config_file.real_path)
    except (OSError, ValueError) as error:
        context.skip(config_file.path, f"not a readable config.json: {error}")
        return None
    headers: list[SafetensorsHeader] = []
    for file in directory.files:
        if file.name.endswith(SAFETENSORS_SUFFIX):
            header = context.safetensors_header(file)
            if header is None:
                return None
            headers.append(header)
    mlx = is_mlx_model(config, headers)
    return ModelDir(
        directory=directory,
        format=ModelFormat.MLX if mlx else ModelFormat.SAFETENSORS,
        architecture=_architecture(config),
        parameters=_index_parameters(by_name.get(SAFETENSORS_INDEX)) or _parameters(headers, config),
        quantization=_quantization(config, mlx),
        context_length=context_length(config),
        chat_template=_has_chat_template(by_name),
        files=tuple(file for file in directory.files if not file.name.lower().endswith(GGUF_SUFFIX)),
    )


def model_dir_entry(
    model: ModelDir, *, entry_id: str, source: ModelSource, repo: str, tag: str, revision: str | None = None
) -> ModelEntry:
    return ModelEntry(
        id=entry_id,
        source=source,
        format=model.format,
        repo=repo,
        tag=tag,
        name=model.directory.path.name,
        files=tuple(
            ModelFile(file.name, str(file.path), file.size, _file_type(file.name)) for file in model.files
        ),
        size_bytes=distinct_size(list(model.files)),
        architecture=model.architecture,
        parameters=model.parameters,
        quantization=model.quantization,
        context_length=model.context_length,
        chat_template=model.chat_template,
        model_path=str(model.directory.path),
        servable_by_llama_cpp=False,
        revision=revision,
    )


def _file_type(name: str) -> FileType:
    if name.endswith(SAFETENSORS_SUFFIX):
        return FileType.SAFETENSORS
    if name == PRESET_FILE:
        return FileType.PRESET
    return FileType.OTHER


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _architecture(config: dict[str, Any]) -> str | None:
    architectures = config.get("architectures")
    first = architectures[0] if isinstance(architectures, list) and architectures else None
    return _text(config.get("model_type")) or _text(first)


def is_mlx_model(config: dict[str, Any], headers: list[SafetensorsHeader]) -> bool:
    """mlx_lm wrote the dir: its config has a top-level ``quantization`` or its shards say ``format: mlx``."""
    return isinstance(config.get("quantization"), dict) or any(
        header.metadata.get("format") == "mlx" for header in headers
    )


CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
"""The training context's names in config.json, in the order tried: transformers' own, then GPT-2's,
MPT's and ChatGLM's."""


def context_length(config: dict[str, Any]) -> int | None:
    """The training context a config.json gives, at its top or in a multimodal model's ``text_config``."""
    text_config = config.get("text_config")
    for level in (config, text_config if isinstance(text_config, dict) else {}):
        for key in CONTEXT_LENGTH_KEYS:
            if (length := _count(level.get(key))) is not None:
                return length
    return None


def _quantization(config: dict[str, Any], mlx: bool) -> str | None:
    mlx_quantization = config.get("quantization")
    if mlx and isinstance(mlx_quantization, dict) and (bits := _count(mlx_quantization.get("bits"))):
        return f"{bits}bit"
    hf_quantization = config.get("quantization_config")
    if isinstance(hf_quantization, dict) and (method := _text(hf_quantization.get("quant_method"))):
        return method
    return _text(config.get("torch_dtype")) or _text(config.get("dtype"))


def _index_parameters(index: FoundFile | None) -> int | None:
    if index is None:
        return None
    try:
        metadata = read_json_object(index.real_path).get("metadata")
    except (OSError, ValueError):
        return None  # the index is optional: the headers still give the count
    return _count(metadata.get("total_parameters")) if isinstance(metadata, dict) else None


def _parameters(headers: list[SafetensorsHeader], config: dict[str, Any]) -> int:
    """The sum of shape products; an MLX-quantized weight packs ``32 / bits`` values per uint32.

    Its ``.scales`` and ``.biases`` companions are quantization data, not parameters.
    """
    quantization = config.get("quantization")
    bits = _count(quantization.get("bits")) if isinstance(quantization, dict) else None
    names = {tensor.name for header in headers for tensor in header.tensors}
    packed: set[str] = set()
    if bits is not None:
        packed = {name[: -len("scales")] for name in names if name.endswith(".scales")}
    total = 0
    for header in headers:
        for tensor in header.tensors:
            base = tensor.name.rsplit(".", 1)[0] + "."
            if base in packed and tensor.name.endswith((".scales", ".biases")):
                continue
            if base in packed and tensor.dtype == "U32" and bits is not None:
                total += tensor.n_elements * 32 // bits
            else:
                total += tensor.n_elements
    return total


def _has_chat_template(by_name: dict[str, FoundFile]) -> bool:
    if any(name in by_name for name in CHAT_TEMPLATE_FILES):
        return True
    tokenizer_config = by_name.get("tokenizer_config.json")
    if tokenizer_config is None:
        return False
    try:
        return bool(read_json_object(tokenizer_config.real_path).get("chat_template"))
    except (OSError, ValueError):
        return False
