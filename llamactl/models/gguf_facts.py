"""What a GGUF header says about its model: kind, architecture, size, shape, tokenizer, adapter.

Headers come from any converter of any age, so a fact that is missing or
stored with an unexpected type becomes None rather than an error: a catalogue
shows what it can and the memory estimate falls back where it must.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

from llamactl.models.gguf_header import ArraySummary, GgufHeader, GgufValueType, MetadataValue

ModelKind = Literal["model", "adapter", "mmproj", "imatrix"]
_KIND_BY_TYPE: dict[MetadataValue, ModelKind] = {
    "model": "model",
    "adapter": "adapter",
    "mmproj": "mmproj",
    "imatrix": "imatrix",
}

# general.file_type values: LlamaFileType in gguf 0.19.0's gguf/constants.py (llama.h's llama_ftype),
# named as llama-quantize names them. 4-6 and 33-35 were removed from llama.cpp and are not listed.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# Which layers use the sliding window when the file does not say (no attention.sliding_window_pattern):
# llama.cpp's hparams.set_swa_pattern(n) per architecture in src/llama-model.cpp, where every n-th
# layer is dense and the others slide. An architecture not listed counts as all dense, which can only
# overestimate the KV cache.
SWA_PATTERN_BY_ARCHITECTURE: dict[str, int] = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}

PerLayer = int | tuple[int, ...]
"""One value for every layer, or one per layer (hybrid and sliding-window models)."""


class GgufFacts(msgspec.Struct, frozen=True):
    kind: ModelKind
    architecture: str | None
    name: str | None
    quantization: str | None
    """llama-quantize's name for general.file_type (``Q4_K_M``), else the type of most weights (``Q4_K``)."""
    parameters: int
    tensor_bytes: int
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    feed_forward_length: PerLayer | None
    head_count: PerLayer | None
    head_count_kv: PerLayer | None
    key_length: int | None
    value_length: int | None
    sliding_window: int | None
    sliding_window_layers: tuple[bool, ...] | None
    """For each layer whether it uses the sliding window; None when the model has none."""
    expert_count: int | None
    vocab_size: int | None
    has_chat_template: bool
    adapter_type: str | None
    adapter_lora_alpha: float | None


def _count(value: MetadataValue | None) -> int | None:
    """A non-negative integer, or None for anything else (bools included: they are not counts)."""
    if type(value) is int and value >= 0:
        return value
    return None


def _per_layer(value: MetadataValue | None) -> PerLayer | None:
    if not isinstance(value, tuple):
        return _count(value)
    counts = tuple(_count(item) for item in value)
    return None if not counts or None in counts else tuple(count for count in counts if count is not None)


def _number(value: MetadataValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: MetadataValue | None) -> str | None:
    return value if isinstance(value, str) else None


def _first_layer(value: PerLayer | None) -> int | None:
    """The first layer's value, which llama.cpp takes for per-model sizes (hparams.n_head(0))."""
    return value[0] if isinstance(value, tuple) else value


def _kind(header: GgufHeader, architecture: str | None) -> ModelKind:
    # llama.cpp's converters write general.type; older mmproj files only say architecture "clip".
    # A type this table does not know counts as a model, the kind llama-server loads with -m.
    declared = _KIND_BY_TYPE.get(header.metadata.get("general.type", "model"), "model")
    return "mmproj" if architecture == "clip" else declared


def _quantization(header: GgufHeader) -> str | None:
    file_type = _count(header.metadata.get("general.file_type"))
    if file_type in FILE_TYPE_NAMES:
        return FILE_TYPE_NAMES[file_type]
    elements_by_type: Counter[str] = Counter()
    for tensor in header.tensors:
        elements_by_type[tensor.ggml_type.name] += tensor.n_elements
    return elements_by_type.most_common(1)[0][0] if elements_by_type else None


def _vocab_size(value: MetadataValue | None) -> int | None:
    if isinstance(value, ArraySummary):
        return value.length if value.item_type is GgufValueType.STRING else None
    if isinstance(value, tuple) and all(isinstance(token, str) for token in value):
        return len(value)
    return None


def _sliding_window_layers(
    pattern: MetadataValue | None, architecture: str | None, block_count: int | None
) -> tuple[bool, ...] | None:
    """attention.sliding_window_pattern as per-layer flags: given as flags, or n as in set_swa_pattern(n)."""
    if isinstance(pattern, tuple) and pattern and all(isinstance(flag, bool) for flag in pattern):
        return tuple(flag is True for flag in pattern)
    every = _count(pattern)
    if every is None and architecture is not None:
        every = SWA_PATTERN_BY_ARCHITECTURE.get(architecture)
    if every is None or block_count is None:
        return None
    return tuple(every == 0 or layer % every < every - 1 for layer in range(block_count))


def _head_length(explicit: int | None, embedding: int | None, heads: int | None) -> int | None:
    if explicit is not None:
        return explicit
    if embedding is None or not heads:
        return None
    return embedding // heads


def gguf_facts(header: GgufHeader) -> GgufFacts:
    metadata = header.metadata
    architecture = _text(metadata.get("general.architecture"))

    def arch(key: str) -> MetadataValue | None:
        return metadata.get(f"{architecture}.{key}") if architecture is not None else None

    embedding = _count(arch("embedding_length"))
    block_count = _count(arch("block_count"))
    head_count = _per_layer(arch("attention.head_count"))
    head_count_kv = _per_layer(arch("attention.head_count_kv"))
    sliding_window = _count(arch("attention.sliding_window"))
    return GgufFacts(
        kind=_kind(header, architecture),
        architecture=architecture,
        name=_text(metadata.get("general.name")),
        quantization=_quantization(header),
        parameters=sum(tensor.n_elements for tensor in header.tensors),
        tensor_bytes=sum(tensor.n_bytes for tensor in header.tensors),
        context_length=_count(arch("context_length")),
        block_count=block_count,
        embedding_length=embedding,
        feed_forward_length=_per_layer(arch("feed_forward_length")),
        head_count=head_count,
        head_count_kv=head_count if head_count_kv is None else head_count_kv,
        key_length=_head_length(_count(arch("attention.key_length")), embedding, _first_layer(head_count)),
        value_length=_head_length(
            _count(arch("attention.value_length")), embedding, _first_layer(head_count)
        ),
        sliding_window=sliding_window,
        sliding_window_layers=None
        if sliding_window is None
        else _sliding_window_layers(arch("attention.sliding_window_pattern"), architecture, block_count),
        expert_count=_count(arch("expert_count")),
        vocab_size=_vocab_size(metadata.get("tokenizer.ggml.tokens")),
        has_chat_template=isinstance(metadata.get("tokenizer.chat_template"), str),
        adapter_type=_text(metadata.get("adapter.type")),
        adapter_lora_alpha=_number(metadata.get("adapter.lora.alpha")),
    )
