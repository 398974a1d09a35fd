"""What a safetensors file's header says, read without touching its tensors.

The format (https://huggingface.co/docs/safetensors): a little-endian u64 N,
then N bytes of JSON mapping each tensor name to ``{dtype, shape,
data_offsets}``, plus an optional ``__metadata__`` of strings. mlx_lm's
``save_model`` writes ``__metadata__: {"format": "mlx"}`` into every shard.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import msgspec

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The safetensors crate's own limit on N; a bigger one is a damaged file."""


class SafetensorsFormatError(ValueError):
    pass


class SafetensorsTensor(msgspec.Struct, frozen=True):
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def n_elements(self) -> int:
        count = 1
        for dimension in self.shape:
            count *= dimension
        return count


class SafetensorsHeader(msgspec.Struct, frozen=True):
    tensors: tuple[SafetensorsTensor, ...]
    metadata: dict[str, str]


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The tensor table of ``path``; ``SafetensorsFormatError`` if it is not a safetensors file."""
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise SafetensorsFormatError(f"{path}: shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise SafetensorsFormatError(f"{path}: a header of {length:,} bytes is past the format's limit")
        raw = file.read(length)
    if len(raw) < length:
        raise SafetensorsFormatError(f"{path}: truncated in its {length:,}-byte header")
    try:
        table = json.loads(raw)
    except ValueError as error:
        raise SafetensorsFormatError(f"{path}: the header is not JSON: {error}") from None
    if not isinstance(table, dict):
        raise SafetensorsFormatError(f"{path}: the header is not a JSON object")
    metadata = table.pop("__metadata__", None) or {}
    tensors: list[SafetensorsTensor] = []
    for name, info in table.items():
        try:
            tensors.append(SafetensorsTensor(name, str(info["dtype"]), tuple(int(d) for d in info["shape"])))
        except (KeyError, TypeError, ValueError):
            raise SafetensorsFormatError(f"{path}: tensor {name!r} has no valid dtype and shape") from None
    if not isinstance(metadata, dict):
        raise SafetensorsFormatError(f"{path}: __metadata__ is not a JSON object")
    return SafetensorsHeader(tuple(tensors), {str(key): str(value) for key, value in metadata.items()})
