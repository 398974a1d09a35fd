"""``export_manifest.json``: dlm's fields, and what llamactl adds to them (serving-formats.md §8.1, §9.3).

dlm's: ``target``, ``quant``, ``artifacts`` (path, sha256, size), ``adapter_version``,
``base_model_hf_id``, ``base_model_revision``, ``created_at``, ``created_by``.
llamactl adds what reproduces the run exactly: the argv, the backend's
``--version``, each GGUF artifact's file type, the adapters' rank, alpha and
target modules. The facts are read from the files' headers and configs, never
from their weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import msgspec

from llamactl.models.gguf_facts import gguf_facts
from llamactl.models.gguf_header import GgufFormatError, GgufHeader, read_gguf_header

ADAPTER_VERSION = 1
HF_FORMAT = "hf"
"""dlm's ``quant`` for a model that is not a GGUF (safetensors for vLLM or mlx_lm)."""
UNKNOWN = "unknown"
_HASH_CHUNK = 1 << 20
_SNAPSHOT = re.compile(r"/models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<revision>[^/]+)(?:/|$)")
# llama.cpp's LoRA tensors: blk.<layer>.<module>.weight.lora_a (convert_lora_to_gguf.py).
_LORA_TENSOR = re.compile(r"blk\.\d+\.(?P<module>.+)\.weight\.lora_a")


class Artifact(msgspec.Struct, frozen=True, omit_defaults=True):
    path: str
    """Relative to the export dir."""
    sha256: str
    size_bytes: int
    file_type: str | None = None
    """A GGUF's ``general.file_type`` (``F16``, ``Q4_K_M``)."""


class AdapterFacts(msgspec.Struct, frozen=True):
    path: str
    """The copy in the export dir (relative to it)."""
    source: str
    """Where the instance loads it from."""
    r: int | None
    lora_alpha: float | None
    target_modules: list[str] | None


class ExportManifest(msgspec.Struct, frozen=True, kw_only=True):
    target: str
    quant: str
    artifacts: list[Artifact]
    adapter_version: int = ADAPTER_VERSION
    base_model_hf_id: str | None
    base_model_revision: str | None
    created_at: str
    """UTC, to the second (``2026-12-02T06:44:40Z``)."""
    created_by: str
    instance: str
    backend_type: str
    model: str | None
    """The model as the launch command names it (a path or a hub id): not copied into the export."""
    argv: list[str]
    """The backend's command as the launch script runs it (for ``ollama``: as the instance runs it),
    with ``$PORT``, ``$SCRIPT_DIR`` and secrets as variables."""
    backend_version: str | None
    backend_version_error: str | None
    adapters: list[AdapterFacts]


def encode_manifest(manifest: ExportManifest) -> bytes:
    """As dlm writes it: keys sorted, indented by two."""
    document = msgspec.json.encode(msgspec.to_builtins(manifest, order="sorted"))
    return msgspec.json.format(document, indent=2) + b"\n"


def artifact(path: str, content: bytes | Path) -> Artifact:
    """The entry of one file of the export: its bytes, or the source file it is a copy of."""
    digest = hashlib.sha256()
    if isinstance(content, bytes):
        digest.update(content)
        size = len(content)
    else:
        with open(content, "rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
        size = content.stat().st_size
    header = _gguf_header(content) if isinstance(content, Path) else None
    file_type = gguf_facts(header).quantization if header is not None else None
    return Artifact(path=path, sha256=digest.hexdigest(), size_bytes=size, file_type=file_type)


def model_quant(model: str | None) -> str:
    """A GGUF model's quantization (``Q8_0``); ``hf`` for a safetensors dir or a hub id.

    ``unknown`` for a GGUF that cannot be read here (the instance could not start either).
    """
    if not model:
        return UNKNOWN
    path = Path(model)
    header = _gguf_header(path)
    if header is not None:
        return gguf_facts(header).quantization or UNKNOWN
    return UNKNOWN if path.is_file() or path.suffix == ".gguf" else HF_FORMAT


def hub_origin(model: str | None) -> tuple[str | None, str | None]:
    """The hub repo and revision of a model in the HF cache (``…/models--org--name/snapshots/<rev>/…``)."""
    located = _SNAPSHOT.search(model or "")
    if located is None:
        return None, None
    return f"{located['org']}/{located['name']}", located["revision"]


def adapter_facts(path: str, source: str) -> AdapterFacts:
    """Rank, alpha and target modules from a PEFT or mlx_lm adapter's config, or a GGUF LoRA's header."""
    origin = Path(source)
    config = _json_object(origin / "adapter_config.json") if origin.is_dir() else None
    if config is not None:
        # mlx_lm keeps its rank and modules under lora_parameters, and a scale instead of an alpha.
        parameters = config.get("lora_parameters")
        mlx: dict[str, object] = parameters if isinstance(parameters, dict) else {}
        modules = config.get("target_modules", mlx.get("keys"))
        return AdapterFacts(
            path=path,
            source=source,
            r=_int(config.get("r", mlx.get("rank"))),
            lora_alpha=_float(config.get("lora_alpha")),
            target_modules=[str(m) for m in modules] if isinstance(modules, list) else None,
        )
    header = _gguf_header(origin)
    if header is None:
        return AdapterFacts(path=path, source=source, r=None, lora_alpha=None, target_modules=None)
    lora_a = [(tensor, _LORA_TENSOR.fullmatch(tensor.name)) for tensor in header.tensors]
    found = [(tensor, match["module"]) for tensor, match in lora_a if match is not None]
    return AdapterFacts(
        path=path,
        source=source,
        # lora_a is {n_embd, r} as GGUF orders dimensions (serving-formats.md §4.1).
        r=found[0][0].shape[-1] if found else None,
        lora_alpha=gguf_facts(header).adapter_lora_alpha,
        target_modules=sorted({module for _, module in found}) or None,
    )


def _gguf_header(path: Path) -> GgufHeader | None:
    try:
        return read_gguf_header(path) if path.is_file() else None
    except (OSError, GgufFormatError):
        return None


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
