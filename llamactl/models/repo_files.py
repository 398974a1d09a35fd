"""Which files of a hub repo a download fetches: the GGUF quant a tag names, or a safetensors model.

As the Go llamactl chooses them (``pkg/models/downloader.go``), but with every
shard of the chosen GGUF, and nothing when a tag matches no file (Go falls back
to the default quant without saying so).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_QUANTS = ("Q4_K_M", "Q4_0")
"""The quants taken when no tag names one, in order (Go's default)."""
SAFETENSORS_COMPANIONS = (".json", ".txt", ".model", ".py", ".jinja", ".tiktoken")
"""The config, tokenizer and code files fetched with safetensors weights."""
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def select_gguf_files(sizes: dict[str, int], tag: str) -> list[str]:
    """The GGUF files of a repo (its paths, with their sizes) to fetch for ``tag`` (``""``: the default)."""
    ggufs = sorted(path for path in sizes if path.lower().endswith(".gguf"))
    models = [path for path in ggufs if "mmproj" not in path.lower()]
    projectors = [path for path in ggufs if "mmproj" in path.lower()]
    chosen = [path for path in models if _names_quant(path, tag)] if tag else _default_gguf(models)
    if not chosen:
        return []
    extras = sorted(path for path in sizes if path == "preset.ini" or path.lower().endswith(".jinja"))
    projector = _pick_projector(projectors, tag)
    return [*chosen, *([projector] if projector else []), *extras]


def _names_quant(path: str, quant: str) -> bool:
    return (
        re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9]|_[A-Za-z0-9])", path, re.I) is not None
    )


def _default_gguf(models: Sequence[str]) -> list[str]:
    for quant in DEFAULT_QUANTS:
        for path in models:
            if _names_quant(path, quant):
                return _with_shards(models, path)
    unsharded = [path for path in models if not _SHARD.search(path)]
    if unsharded:
        return unsharded[:1]
    return _with_shards(models, models[0]) if models else []


def _with_shards(models: Sequence[str], path: str) -> list[str]:
    """``path`` and, when it is one shard of a split model, every shard of it."""
    if not _SHARD.search(path):
        return [path]
    stem = _SHARD.sub("", path)
    return [other for other in models if _SHARD.search(other) and _SHARD.sub("", other) == stem]


def _pick_projector(projectors: Sequence[str], tag: str) -> str | None:
    """One mmproj file: the one naming the tag's quant, else an F16 one, else the first."""
    for wanted in (tag, "f16"):
        for path in projectors:
            if wanted and _names_quant(path, wanted):
                return path
    return projectors[0] if projectors else None


def select_safetensors_files(sizes: dict[str, int]) -> list[str]:
    """Config, tokenizer and code files, and the weights (``.safetensors``, else ``.bin``); [] without any."""
    paths = sorted(path for path in sizes if not path.startswith(".git"))
    weights = [path for path in paths if path.lower().endswith(".safetensors")] or [
        path for path in paths if path.lower().endswith(".bin")
    ]
    if not weights:
        return []
    companions = [path for path in paths if path.lower().endswith(SAFETENSORS_COMPANIONS)]
    return sorted({*companions, *weights})
