"""A model on disk as the catalogue found it, for a backend to turn into its own options."""

from __future__ import annotations

from typing import Any

import msgspec


class ModelFiles(msgspec.Struct, frozen=True, kw_only=True):
    model_path: str
    """The GGUF file, or the model dir."""
    projector_path: str | None = None
    """A multimodal projector (llama.cpp's mmproj)."""
    adapter_paths: tuple[str, ...] = ()
    """LoRA adapters to load with it, in order."""
    defaults: dict[str, Any] = {}
    """Default options in Ollama's names (its ``params`` layer: ``num_ctx``, ``temperature``, ...)."""
