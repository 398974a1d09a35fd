"""How much memory a model will take once started, estimated before it starts.

Pure arithmetic on what a header or config.json says: no I/O, no clock. The
estimate admits an instance; the backend's own report (llama-server's buffer
sizes at ``-lv 4``) is the truth that replaces it once the instance runs.

Accuracy, as measured against llama-server b10434 on a CPU:

- weights: exact. The sum of the header's tensor sizes is what llama.cpp maps.
- KV cache: exact for dense attention, f16 and quantized caches, one or many
  slots: the server's KV is unified, so ``-np`` shares the ``-c`` cells rather
  than multiplying them. Sliding-window layers hold only the window; recurrent
  state (Mamba, RWKV layers) is not counted.
- compute: a fit of the CPU compute buffer of dense llama-type models, about
  1 % high with flash attention and within 1.5 % without, for widths of 1024
  and up; tiny models (fixed costs dominate) are off by 10-16 %. GPU buffers,
  MoE and vision graphs were not measured and may differ more.
- the process's own memory above the buffers, once every page of them is
  touched (a prompt that fills the context), was 18-22 MiB on b11434: the
  slack is 24 MiB. Without flash attention the CPU backend also allocates a
  work buffer for the KQ·V product outside every logged buffer, measured at
  2·ubatch·n_head·n_ctx bytes plus about 10 MiB.

Against the measured PSS of a running llama-server (``bench/memory_estimate.py``)
the whole estimate came within 2 % on 100-500 MB f16 models, with and without
flash attention. Quantized weights that llama.cpp repacks for the CPU are held
twice right after load; that is not counted.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from llamactl.errors import LlamactlError
from llamactl.models.gguf_facts import GgufFacts, PerLayer
from llamactl.models.gguf_header import GGML_QUANT_SIZES, GgmlType

MIB = 1024 * 1024
RUNTIME_SLACK_BYTES = 24 * MIB
NO_FLASH_ATTENTION_WORK_BYTES = 10 * MIB
"""Besides 2·ubatch·n_head·n_ctx: the fixed part of the KQ·V work buffer without flash attention."""

# The types llama-server accepts for --cache-type-k / --cache-type-v, sized by ggml's block table.
CACHE_TYPES: dict[str, GgmlType] = {
    "f32": GgmlType.F32,
    "f16": GgmlType.F16,
    "bf16": GgmlType.BF16,
    "q8_0": GgmlType.Q8_0,
    "q4_0": GgmlType.Q4_0,
    "q4_1": GgmlType.Q4_1,
    "iq4_nl": GgmlType.IQ4_NL,
    "q5_0": GgmlType.Q5_0,
    "q5_1": GgmlType.Q5_1,
}


class UnknownCacheTypeError(LlamactlError):
    status = 422
    code = "unknown_cache_type"


class MemoryEstimate(msgspec.Struct, frozen=True):
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    extra_bytes: int
    """Files loaded beside the model (mmproj, LoRA adapters) and the runtime's slack."""
    total_bytes: int


def _summed(weights: int, kv_cache: int, compute: int, extra: int) -> MemoryEstimate:
    return MemoryEstimate(weights, kv_cache, compute, extra, weights + kv_cache + compute + extra)


def _cache_row_bytes(cache_type: str, elements: int, field: str) -> int:
    """Bytes of one cached row of ``elements`` values: ggml_row_size, whole blocks of the cache type."""
    ggml_type = CACHE_TYPES.get(cache_type)
    if ggml_type is None:
        raise UnknownCacheTypeError(
            f"unknown KV cache type {cache_type!r}; known: {', '.join(CACHE_TYPES)}", field=field
        )
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    return -(-elements // block_size) * type_size


def _layer_value(value: PerLayer | None, layer: int) -> int:
    if isinstance(value, tuple):
        return value[layer] if layer < len(value) else 0
    return value or 0


def _largest(value: PerLayer | None) -> int:
    if isinstance(value, tuple):
        return max(value)
    return value or 0


def _layer_count(facts: GgufFacts) -> int:
    if facts.block_count is not None:
        return facts.block_count
    per_layer = facts.head_count_kv
    return len(per_layer) if isinstance(per_layer, tuple) else 0


def gguf_kv_cache_bytes(
    facts: GgufFacts,
    *,
    context: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    ubatch: int = 512,
    parallel: int = 1,
) -> int:
    """Σ over attention layers of cells · (K row + V row), a row being head_count_kv · head length values.

    A layer with no KV heads (a recurrent layer of a hybrid model) holds none. A sliding-window layer
    holds ``min(context, window · parallel + ubatch)`` cells, as llama.cpp sizes it without --swa-full.
    """
    key_length, value_length = facts.key_length or 0, facts.value_length or 0
    swa_layers = facts.sliding_window_layers or ()
    window_cells = min(context, (facts.sliding_window or 0) * parallel + ubatch)
    total = 0
    for layer in range(_layer_count(facts)):
        kv_heads = _layer_value(facts.head_count_kv, layer)
        cells = window_cells if layer < len(swa_layers) and swa_layers[layer] else context
        row_bytes = _cache_row_bytes(cache_type_k, kv_heads * key_length, "cache_type_k") + _cache_row_bytes(
            cache_type_v, kv_heads * value_length, "cache_type_v"
        )
        total += cells * row_bytes
    return total


def gguf_compute_bytes(
    facts: GgufFacts, *, context: int, flash_attention: bool = True, ubatch: int = 512
) -> int:
    """llama-server's CPU compute buffer, fitted on measurements (the module docstring gives its accuracy).

    With flash attention the FFN activations dominate: ubatch · (18·n_ff + 2·n_ctx). Without it the KQ
    matrix does: 4·ubatch · (n_head·n_ctx + n_ctx + 2·n_ff). Per-layer sizes count at their largest,
    since one buffer is reused by every layer.
    """
    ubatch = min(ubatch, context)  # llama.cpp never splits a batch finer than the context holds
    feed_forward, heads = _largest(facts.feed_forward_length), _largest(facts.head_count)
    if flash_attention:
        return ubatch * (18 * feed_forward + 2 * context)
    return 4 * ubatch * (heads * context + context + 2 * feed_forward)


def estimate_gguf(
    facts: GgufFacts,
    *,
    context: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    flash_attention: bool = True,
    ubatch: int = 512,
    parallel: int = 1,
    extra_files_bytes: int = 0,
) -> MemoryEstimate:
    """What llama-server will take for a model of ``facts`` at ``-c context`` (the total over all slots).

    ``parallel`` (``-np``) only widens sliding windows; ``extra_files_bytes`` are the mmproj and LoRA
    GGUF files loaded with it. A header without the attention shape gets a KV cache of 0.
    """
    kv_cache = gguf_kv_cache_bytes(
        facts,
        context=context,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        ubatch=ubatch,
        parallel=parallel,
    )
    compute = gguf_compute_bytes(facts, context=context, flash_attention=flash_attention, ubatch=ubatch)
    extra = extra_files_bytes + RUNTIME_SLACK_BYTES
    if not flash_attention:
        heads = _largest(facts.head_count)
        extra += 2 * min(ubatch, context) * heads * context + NO_FLASH_ATTENTION_WORK_BYTES
    return _summed(facts.tensor_bytes, kv_cache, compute, extra)


def _config_count(config: Mapping[str, object], key: str) -> int | None:
    value = config.get(key)
    return value if type(value) is int and value > 0 else None


def estimate_safetensors(
    config: Mapping[str, object], weights_bytes: int, *, context: int | None = None, dtype_bytes: int = 2
) -> MemoryEstimate:
    """An MLX or vLLM model dir: its safetensors bytes plus a KV cache of 2·n_layer·n_ctx·n_kv·head_dim.

    ``config`` is the parsed config.json; a multimodal one keeps its language model's sizes under
    ``text_config``. ``context`` defaults to max_position_embeddings. Weights are exact, the KV is the
    textbook size that mlx_lm grows into lazily; compute and the Python runtime itself are not
    estimated (vLLM's footprint is its --gpu-memory-utilization / --kv-cache-memory-bytes setting).
    """
    text_config = config.get("text_config")
    if "num_hidden_layers" not in config and isinstance(text_config, Mapping):
        config = text_config
    layers = _config_count(config, "num_hidden_layers")
    heads = _config_count(config, "num_attention_heads")
    kv_heads = _config_count(config, "num_key_value_heads") or heads
    hidden = _config_count(config, "hidden_size")
    head_dim = _config_count(config, "head_dim") or (hidden // heads if hidden and heads else None)
    cells = context if context is not None else _config_count(config, "max_position_embeddings")
    if layers is None or kv_heads is None or head_dim is None or cells is None:
        return _summed(weights_bytes, 0, 0, 0)
    return _summed(weights_bytes, 2 * layers * cells * kv_heads * head_dim * dtype_bytes, 0, 0)
