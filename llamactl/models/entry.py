"""A catalogue entry: one servable model found on disk, in the shape ``GET /api/v1/models`` answers.

``repo``, ``tag``, ``files`` and ``size_bytes`` keep the Go llamactl's shape
(``pkg/models/scanner.go``): for the Hugging Face cache ``tag`` is the ref
that names the snapshot (``main``), or its commit when no ref does. The rest
is ours. Paths are strings so an entry encodes to JSON as it is.

Ids are ``<source>:<repo>[:<variant>][@<revision>]``:

- ``hf:<org>/<name>`` for a safetensors or MLX snapshot, ``hf:<org>/<name>:<stem>`` for a GGUF in it
  (``<stem>``: its path in the snapshot without ``.gguf`` and without a shard's ``-00001-of-00003``);
  a snapshot that ``refs/main`` does not name gets ``@<first 12 hex of its commit>``;
- ``ollama:<name>:<tag>``, with Ollama's own short name (``llama3.2``, ``user/m``, ``hf.co/org/X-GGUF``);
- ``lmstudio:<publisher>/<model>[:<stem>]``;
- ``path:<root dir name>/<dir below it>[:<stem>]`` for the dirs the user names.

Characters other than letters, digits and ``._-/:@+`` become ``_``, so an id
needs no quoting on a command line and percent-encodes into one URL path
segment. Ids are opaque: nothing parses them. Two models that would get the
same id (rare: only after that replacement, or two named roots with one name)
are told apart by ``+2``, ``+3`` in the order of their ``model_path``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import msgspec


class ModelSource(StrEnum):
    PATH = "path"
    HUGGINGFACE = "huggingface"
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"


SOURCE_ID_PREFIX = {
    ModelSource.PATH: "path",
    ModelSource.HUGGINGFACE: "hf",
    ModelSource.OLLAMA: "ollama",
    ModelSource.LMSTUDIO: "lmstudio",
}


class ModelFormat(StrEnum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    MLX = "mlx"


class FileType(StrEnum):
    """The Go llamactl's file types (gguf, mmproj, preset, other) and ours (adapter, safetensors)."""

    GGUF = "gguf"
    MMPROJ = "mmproj"
    ADAPTER = "adapter"
    SAFETENSORS = "safetensors"
    PRESET = "preset"
    OTHER = "other"


class ModelFile(msgspec.Struct, frozen=True):
    name: str
    """The file's name as its store shows it (an Ollama layer: its media type's last part)."""
    path: str
    """Where the store lists it (a Hugging Face snapshot path, not the blob it links to)."""
    size_bytes: int
    type: FileType


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: ModelSource
    format: ModelFormat
    repo: str
    tag: str
    name: str
    """A display name: the GGUF's ``general.name``, else the file stem or the dir name."""
    files: tuple[ModelFile, ...]
    size_bytes: int
    """The bytes on disk of the files, each blob counted once."""
    architecture: str | None = None
    """GGUF ``general.architecture``; for a safetensors or MLX dir its ``config.json`` ``model_type``."""
    parameters: int | None = None
    quantization: str | None = None
    """A GGUF file type (``Q4_K_M``), MLX bits (``4bit``), a quantization method, or the dtype."""
    context_length: int | None = None
    """The training context (GGUF ``<arch>.context_length``, ``max_position_embeddings``)."""
    chat_template: bool = False
    """The model carries a Jinja chat template (never an Ollama Go template)."""
    model_path: str
    """What a backend loads: the GGUF file (the first shard of a split one) or the model dir."""
    mmproj_path: str | None = None
    adapter_paths: tuple[str, ...] = ()
    """Ollama's adapter layers, in manifest order (each a ``--lora``)."""
    params: dict[str, Any] = {}
    """Ollama's params layer, decoded (``temperature``, ``stop``, ``num_ctx``, ...)."""
    system_prompt: str | None = None
    """Ollama's system layer."""
    servable_by_llama_cpp: bool
    revision: str | None = None
    """The Hugging Face commit of the snapshot."""


class SkippedFile(msgspec.Struct, frozen=True):
    """A file or dir a scan passed over, and why: corrupt, unreadable, or leaving its root."""

    path: str
    reason: str


_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9._\-/:@+]")


def model_id(source: ModelSource, repo: str, variant: str | None = None, revision: str | None = None) -> str:
    """The id scheme of the module docstring (without the ``+2`` a catalogue adds to a clash)."""
    text = f"{SOURCE_ID_PREFIX[source]}:{repo}"
    if variant:
        text += f":{variant}"
    if revision:
        text += f"@{revision}"
    return _UNSAFE_ID_CHARACTERS.sub("_", text)
