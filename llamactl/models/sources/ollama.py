"""The Ollama store: ``manifests/<host>/<namespace>/<model>/<tag>`` naming layers in ``blobs/``.

A manifest is a Docker v2 manifest whose layers carry Ollama media types
(``application/vnd.ollama.image.<kind>``, ``server/images.go`` at
ollama/ollama fb307609). The ``model`` layer is a GGUF file when the config
blob's ``model_format`` is empty or ``gguf``; ``adapter`` layers are LoRA
GGUFs (each a ``--lora``, in manifest order), ``projector`` an mmproj,
``params`` a JSON object of default options and ``system`` the default
system prompt. The ``template`` layer is a Go text/template, not Jinja: it
is listed as a file and never offered as a chat template. A manifest of the
newer safetensors layout (``tensor`` layers, no GGUF model layer) is listed
but marked unservable by llama.cpp, with the manifest as its model path.

The config blob's ``architecture`` and ``os`` are the Docker platform
(``amd64``, ``linux``); the model's architecture is its ``model_family``.

A manifest that is not JSON, lacks a blob, or whose model blob is not a GGUF
is passed over and noted; a bad params layer only leaves ``params`` empty.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from llamactl.models.entry import FileType, ModelEntry, ModelFile, ModelFormat, ModelSource, model_id
from llamactl.models.gguf_facts import GgufFacts
from llamactl.models.sources.gguf_models import distinct_size
from llamactl.models.sources.model_dir import read_json_object
from llamactl.models.sources.scan_context import ScanContext
from llamactl.models.sources.tree import FoundFile, resolve_within, walk

MEDIA_TYPE_PREFIX = "application/vnd.ollama.image."
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MANIFEST_DEPTH = 3
"""Dirs between ``manifests/`` and a tag file: host, namespace, model."""
MAX_TEXT_BYTES = 1024 * 1024
_DIGEST = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
_FILE_TYPE_BY_KIND = {"model": FileType.GGUF, "adapter": FileType.ADAPTER, "projector": FileType.MMPROJ}


class Layer(msgspec.Struct, frozen=True):
    media_type: str = msgspec.field(name="mediaType")
    digest: str = ""
    size: int = 0

    @property
    def kind(self) -> str:
        """``model``, ``adapter``, ``tensor``, ...: the media type's last part, before any ``;``."""
        media_type = self.media_type.split(";", 1)[0].strip()
        return media_type.removeprefix(MEDIA_TYPE_PREFIX) if media_type.startswith(MEDIA_TYPE_PREFIX) else ""


class Manifest(msgspec.Struct, frozen=True):
    layers: list[Layer]
    config: Layer | None = None


class _Blob(msgspec.Struct, frozen=True):
    layer: Layer
    file: FoundFile


def scan_ollama(roots: Sequence[Path], context: ScanContext) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real_root in seen or not (real_root / "manifests").is_dir():
            continue
        seen.add(real_root)
        manifests = real_root / "manifests"
        for directory in walk(manifests, real_root, context):
            parts = directory.path.relative_to(manifests).parts
            if len(parts) != MANIFEST_DEPTH:
                continue
            for file in directory.files:
                entry = _entry(real_root, (*parts, file.name), file, context)
                if entry is not None:
                    entries.append(entry)
    return entries


def ollama_name(host: str, namespace: str, model: str) -> str:
    """The name ``ollama list`` shows: the default host and the ``library`` namespace left out."""
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}"
    return model if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}"


def _entry(
    root: Path, name_parts: tuple[str, ...], manifest_file: FoundFile, context: ScanContext
) -> ModelEntry | None:
    host, namespace, model, tag = name_parts
    try:
        with open(manifest_file.real_path, "rb") as file:
            manifest = msgspec.json.decode(file.read(MAX_TEXT_BYTES), type=Manifest)
    except (OSError, msgspec.DecodeError) as error:
        context.skip(manifest_file.path, f"not a readable manifest: {error}")
        return None
    blobs: list[_Blob] = []
    for layer in manifest.layers:
        blob = _blob(root, layer, context)
        if blob is None:
            context.skip(manifest_file.path, f"its {layer.kind or layer.media_type} layer has no blob")
            return None
        blobs.append(blob)
    config = _config(root, manifest.config, context)
    repo = ollama_name(host, namespace, model)
    entry_id = model_id(ModelSource.OLLAMA, repo, tag)
    model_blobs = [blob for blob in blobs if blob.layer.kind == "model"]
    if not model_blobs or config.get("model_format", "") not in ("", "gguf"):
        return _unservable_entry(entry_id, repo, tag, manifest_file, blobs, config)
    facts = context.gguf_facts(model_blobs[0].file)
    if facts is None:
        return None
    return _gguf_entry(entry_id, repo, tag, blobs, facts, config, context)


def _gguf_entry(
    entry_id: str,
    repo: str,
    tag: str,
    blobs: list[_Blob],
    facts: GgufFacts,
    config: dict[str, Any],
    context: ScanContext,
) -> ModelEntry:
    def paths(kind: str) -> list[str]:
        return [str(blob.file.path) for blob in blobs if blob.layer.kind == kind]

    params: dict[str, Any] = {}
    for blob in blobs:
        if blob.layer.kind == "params":
            try:
                params = read_json_object(blob.file.real_path)
            except (OSError, ValueError) as error:
                context.skip(blob.file.path, f"a params layer that is not a JSON object: {error}")
    systems = [blob for blob in blobs if blob.layer.kind == "system"]
    return ModelEntry(
        id=entry_id,
        source=ModelSource.OLLAMA,
        format=ModelFormat.GGUF,
        repo=repo,
        tag=tag,
        name=f"{repo}:{tag}",
        files=_files(blobs),
        size_bytes=distinct_size([blob.file for blob in blobs]),
        architecture=facts.architecture or _text(config, "model_family"),
        parameters=facts.parameters,
        quantization=facts.quantization or _text(config, "file_type"),
        context_length=facts.context_length,
        chat_template=facts.has_chat_template,
        model_path=paths("model")[0],
        mmproj_path=next(iter(paths("projector")), None),
        adapter_paths=tuple(paths("adapter")),
        params=params,
        system_prompt=_read_text(systems[-1].file, context) if systems else None,
        servable_by_llama_cpp=True,
    )


def _unservable_entry(
    entry_id: str, repo: str, tag: str, manifest_file: FoundFile, blobs: list[_Blob], config: dict[str, Any]
) -> ModelEntry:
    model_format = _text(config, "model_format")
    return ModelEntry(
        id=entry_id,
        source=ModelSource.OLLAMA,
        format=ModelFormat.MLX if model_format == "mlx" else ModelFormat.SAFETENSORS,
        repo=repo,
        tag=tag,
        name=f"{repo}:{tag}",
        files=_files(blobs),
        size_bytes=distinct_size([blob.file for blob in blobs]),
        architecture=_text(config, "model_family"),
        quantization=_text(config, "file_type"),
        context_length=_count(config.get("context_length")),
        model_path=str(manifest_file.path),
        servable_by_llama_cpp=False,
    )


def _files(blobs: list[_Blob]) -> tuple[ModelFile, ...]:
    return tuple(
        ModelFile(
            blob.layer.kind or blob.layer.media_type,
            str(blob.file.path),
            blob.file.size,
            _FILE_TYPE_BY_KIND.get(blob.layer.kind, FileType.OTHER),
        )
        for blob in blobs
    )


def _blob(root: Path, layer: Layer, context: ScanContext) -> _Blob | None:
    if not _DIGEST.match(layer.digest):
        return None
    path = root / "blobs" / layer.digest.replace(":", "-")
    if not os.path.lexists(path):
        return None  # the manifest is noted as lacking it
    real = resolve_within(path, root, context)
    if real is None:
        return None
    try:
        info = os.stat(real)
    except OSError:
        return None
    return _Blob(layer, FoundFile(path, real, info.st_size, info.st_mtime_ns))


def _config(root: Path, layer: Layer | None, context: ScanContext) -> dict[str, Any]:
    """The config blob's facts (``model_format``, ``file_type``, ...); empty if there is none to read."""
    blob = None if layer is None else _blob(root, layer, context)
    if blob is None:
        return {}
    try:
        return read_json_object(blob.file.real_path)
    except (OSError, ValueError) as error:
        context.skip(blob.file.path, f"a config blob that is not a JSON object: {error}")
        return {}


def _read_text(file: FoundFile, context: ScanContext) -> str | None:
    try:
        with open(file.real_path, "rb") as handle:
            return handle.read(MAX_TEXT_BYTES).decode("utf-8", errors="replace")
    except OSError as error:
        context.skip(file.path, f"cannot read: {error.strerror or error}")
        return None


def _text(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None
