"""What an instance's options say about the memory it will take, as each backend reads them.

The estimate itself (``llamactl.models.memory_estimate``) knows model files,
not flags: the adapters translate their options into this one struct.
"""

from __future__ import annotations

import msgspec


class MemoryInputs(msgspec.Struct, frozen=True, kw_only=True):
    model_path: str
    """The GGUF file, or the model dir (safetensors, MLX)."""
    context: int | None = None
    """Tokens of KV cache over all slots; None: the model's own training context."""
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attention: bool = True
    ubatch: int = 512
    parallel: int = 1
    """Slots: they share the context, but each gets its own sliding window."""
    extra_files: tuple[str, ...] = ()
    """Files loaded beside the model (a projector, LoRA adapters): their sizes count."""
    kv_cache_bytes: int | None = None
    """A KV cache size the options set outright (vLLM's ``--kv-cache-memory-bytes``)."""
