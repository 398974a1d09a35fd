"""Model facts from GGUF headers: one of each kind, and headers that lack or mistype what they should say."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.models.gguf_facts import GgufFacts, gguf_facts
from llamactl.models.gguf_header import (
    ArraySummary,
    GgmlType,
    GgufHeader,
    GgufValueType,
    TensorInfo,
    read_gguf_header,
)
from tests.models.gguf_files import (
    LLAMA3_8B,
    LlamaShape,
    write_llama_gguf,
    write_lora_gguf,
    write_mmproj_gguf,
)


def _facts(path: Path) -> GgufFacts:
    return gguf_facts(read_gguf_header(path))


def _header(metadata: dict[str, object], tensors: tuple[TensorInfo, ...] = ()) -> GgufHeader:
    return GgufHeader(3, metadata, tensors, 32, 64, 64)  # type: ignore[arg-type]


def test_a_llama_model(tmp_path: Path) -> None:
    facts = _facts(write_llama_gguf(tmp_path / "llama.gguf", LlamaShape(vocab=100)))
    assert facts == GgufFacts(
        kind="model",
        architecture="llama",
        name="test-llama",
        quantization="F16",
        parameters=100 * 64 * 2 + 2 * (2 * 64 + 4 * 64 * 64 + 3 * 64 * 128) + 64,
        tensor_bytes=2 * (100 * 64 * 2 + 2 * (4 * 64 * 64 + 3 * 64 * 128)) + 4 * (2 * 2 * 64 + 64),
        context_length=2048,
        block_count=2,
        embedding_length=64,
        feed_forward_length=128,
        head_count=4,
        head_count_kv=4,
        key_length=16,
        value_length=16,
        sliding_window=None,
        sliding_window_layers=None,
        expert_count=None,
        vocab_size=100,
        has_chat_template=True,
        adapter_type=None,
        adapter_lora_alpha=None,
    )


def test_an_8b_llama_as_q4_k_m(tmp_path: Path) -> None:
    facts = _facts(write_llama_gguf(tmp_path / "8b.gguf", LLAMA3_8B))
    assert (facts.quantization, facts.parameters, facts.vocab_size) == ("Q4_K_M", 8_030_261_248, 128_256)
    assert (facts.head_count, facts.head_count_kv, facts.key_length) == (32, 8, 128)


def test_per_layer_kv_heads_and_defaults(tmp_path: Path) -> None:
    shape = LlamaShape(layers=3, kv_heads=(4, 0, 2), file_type=None, name=None, chat_template=False)
    facts = _facts(write_llama_gguf(tmp_path / "hybrid.gguf", shape))
    assert facts.head_count_kv == (4, 0, 2)
    assert facts.name is None
    assert facts.has_chat_template is False
    assert facts.quantization == "F16"  # no general.file_type: the type of most weights


def test_a_vision_projector(tmp_path: Path) -> None:
    facts = _facts(write_mmproj_gguf(tmp_path / "mmproj.gguf"))
    assert (facts.kind, facts.architecture, facts.name) == ("mmproj", "clip", "test-mmproj")
    assert facts.block_count is None  # clip keeps its sizes under clip.vision.*
    assert facts.tensor_bytes == 2 * (64 * 3 * 14 * 14 + 9 * 64 * 64)


def test_an_old_projector_without_general_type_is_known_by_its_architecture() -> None:
    assert gguf_facts(_header({"general.architecture": "clip"})).kind == "mmproj"


def test_a_lora_adapter(tmp_path: Path) -> None:
    facts = _facts(write_lora_gguf(tmp_path / "lora.gguf", rank=8, alpha=16.0))
    assert (facts.kind, facts.adapter_type, facts.adapter_lora_alpha) == ("adapter", "lora", 16.0)
    assert facts.quantization == "F32"
    assert facts.vocab_size is None


@pytest.mark.parametrize("kind", ["model", "adapter", "mmproj", "imatrix"])
def test_general_type_gives_the_kind(kind: str) -> None:
    assert gguf_facts(_header({"general.architecture": "llama", "general.type": kind})).kind == kind


def test_an_unknown_general_type_is_a_model() -> None:
    assert gguf_facts(_header({"general.type": "hologram"})).kind == "model"


def test_an_empty_header_gives_nothing_but_never_fails() -> None:
    facts = gguf_facts(_header({}))
    assert (facts.kind, facts.architecture, facts.quantization, facts.parameters) == ("model", None, None, 0)
    assert facts.head_count_kv is None and facts.key_length is None and facts.vocab_size is None


def test_mistyped_values_become_none() -> None:
    metadata = {
        "general.architecture": "llama",
        "general.name": 7,
        "general.file_type": "Q4_K_M",
        "llama.block_count": "32",
        "llama.embedding_length": -4096,
        "llama.context_length": True,
        "llama.attention.head_count": (32, "x"),
        "llama.attention.head_count_kv": 1.5,
        "llama.feed_forward_length": (),
        "tokenizer.ggml.tokens": ArraySummary(GgufValueType.INT32, 100),
        "tokenizer.chat_template": ("not", "a", "string"),
        "adapter.lora.alpha": "16",
    }
    facts = gguf_facts(_header(metadata))
    assert facts.name is None and facts.quantization is None
    assert facts.block_count is None and facts.embedding_length is None and facts.context_length is None
    assert facts.head_count is None and facts.head_count_kv is None and facts.feed_forward_length is None
    assert facts.vocab_size is None and facts.has_chat_template is False and facts.adapter_lora_alpha is None


def test_an_unknown_file_type_falls_back_to_the_weights_type() -> None:
    tensors = (
        TensorInfo("a", GgmlType.F32, (10,), 0, 10, 40),
        TensorInfo("b", GgmlType.Q6_K, (256, 4), 64, 1024, 840),
    )
    assert gguf_facts(_header({"general.file_type": 999}, tensors)).quantization == "Q6_K"


def test_explicit_head_lengths_win_over_the_default() -> None:
    metadata = {
        "general.architecture": "qwen3",
        "qwen3.embedding_length": 1024,
        "qwen3.attention.head_count": 16,
        "qwen3.attention.key_length": 128,
        "qwen3.attention.value_length": 128,
    }
    facts = gguf_facts(_header(metadata))
    assert (facts.key_length, facts.value_length, facts.head_count_kv) == (128, 128, 16)


@pytest.mark.parametrize(
    ("architecture", "pattern", "layers"),
    [
        ("gemma3", None, (True, True, True, True, True, False, True, True)),
        ("gemma2", None, (True, False, True, False, True, False, True, False)),
        ("llama", 4, (True, True, True, False, True, True, True, False)),
        (
            "llama",
            (True, False, False, True, True, True, True, True),
            (True, False, False, True, True, True, True, True),
        ),
        ("llama", None, None),
    ],
)
def test_sliding_window_layers(architecture: str, pattern: object, layers: tuple[bool, ...] | None) -> None:
    metadata: dict[str, object] = {
        "general.architecture": architecture,
        f"{architecture}.block_count": 8,
        f"{architecture}.attention.sliding_window": 1024,
    }
    if pattern is not None:
        metadata[f"{architecture}.attention.sliding_window_pattern"] = pattern
    facts = gguf_facts(_header(metadata))
    assert (facts.sliding_window, facts.sliding_window_layers) == (1024, layers)


def test_no_sliding_window_means_no_sliding_layers() -> None:
    facts = gguf_facts(_header({"general.architecture": "gemma3", "gemma3.block_count": 6}))
    assert facts.sliding_window is None and facts.sliding_window_layers is None
