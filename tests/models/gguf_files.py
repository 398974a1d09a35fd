"""GGUF files for the model tests, written with the ``gguf`` package's ``GGUFWriter``.

Only headers are written: the tensor data is left as a hole (the file is
extended sparse to its full size), so an 8B-shaped model takes megabytes on
disk and a second to write, and every file is still a valid GGUF whose
tensor data reads as zeros.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, TokenType

F32 = GGMLQuantizationType.F32
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


@dataclass(frozen=True)
class LlamaShape:
    """A llama model's hyperparameters; ``kv_heads`` may give one count per layer."""

    embedding: int = 64
    feed_forward: int = 128
    heads: int = 4
    kv_heads: int | Sequence[int] = 4
    layers: int = 2
    vocab: int = 32
    merges: int = 8
    context: int = 2048
    matrix_type: GGMLQuantizationType = GGMLQuantizationType.F16
    output_type: GGMLQuantizationType | None = None
    """The type of ``output.weight``; None: ``matrix_type``."""
    file_type: int | None = 1
    name: str | None = "test-llama"
    chat_template: bool = True


# The reference's measured shapes (shared reference serving-formats.md §5.2), all f16 matrices.
MID = LlamaShape(embedding=1024, feed_forward=2816, heads=16, kv_heads=4, layers=8)
BIG = LlamaShape(embedding=2048, feed_forward=5632, heads=16, kv_heads=8, layers=4)
# Llama 3 8B as Q4_K_M roughly lays it out: 291 tensors, 8,030,261,248 parameters.
LLAMA3_8B = LlamaShape(
    embedding=4096,
    feed_forward=14336,
    heads=32,
    kv_heads=8,
    layers=32,
    vocab=128256,
    merges=280147,
    context=8192,
    matrix_type=GGMLQuantizationType.Q4_K,
    output_type=GGMLQuantizationType.Q6_K,
    file_type=15,
    name="Meta Llama 3 8B Instruct",
)


def tensor_bytes(shape: Sequence[int], ggml_type: GGMLQuantizationType) -> int:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    return int(np.prod(shape, dtype=np.int64)) // block_size * type_size


class HeaderWriter:
    """A ``GGUFWriter`` whose tensors are declared by shape and type, with no data written."""

    def __init__(self, arch: str) -> None:
        self.writer = GGUFWriter(None, arch)
        self.data_bytes = 0

    def tensor(self, name: str, shape: Sequence[int], ggml_type: GGMLQuantizationType = F32) -> None:
        """Declare a tensor; ``shape`` in numpy order (rows, columns), the reverse of ggml's."""
        n_bytes = tensor_bytes(shape, ggml_type)
        self.writer.add_tensor_info(name, shape, np.dtype(np.float32), n_bytes, raw_dtype=ggml_type)
        self.data_bytes += GGUFWriter.ggml_pad(n_bytes, self.writer.data_alignment)

    def write(self, path: Path) -> Path:
        self.writer.write_header_to_file(path)
        self.writer.write_kv_data_to_file()
        self.writer.write_ti_data_to_file()
        assert self.writer.fout is not None
        header_end = self.writer.fout[0].tell()
        self.writer.close()
        data_offset = GGUFWriter.ggml_pad(header_end, self.writer.data_alignment)
        os.truncate(path, data_offset + self.data_bytes)
        return path


def write_llama_gguf(path: Path, shape: LlamaShape = LlamaShape()) -> Path:
    """A llama model of ``shape`` (tokens ``t0``, ``t1``, …; merges ``a b``); returns ``path``."""
    header = HeaderWriter("llama")
    writer = header.writer
    if shape.name is not None:
        writer.add_name(shape.name)
    if shape.file_type is not None:
        writer.add_file_type(shape.file_type)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads if isinstance(shape.kv_heads, int) else list(shape.kv_heads))
    writer.add_rope_dimension_count(shape.embedding // shape.heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list([f"t{index}" for index in range(shape.vocab)])
    writer.add_token_types([int(TokenType.NORMAL)] * shape.vocab)
    writer.add_token_merges([f"m{index % 97} x{index}" for index in range(shape.merges)])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    if shape.chat_template:
        writer.add_chat_template(CHAT_TEMPLATE)

    head_dim = shape.embedding // shape.heads
    matrix = shape.matrix_type
    header.tensor("token_embd.weight", (shape.vocab, shape.embedding), matrix)
    for layer in range(shape.layers):
        kv_heads = shape.kv_heads if isinstance(shape.kv_heads, int) else shape.kv_heads[layer]
        block = f"blk.{layer}"
        header.tensor(f"{block}.attn_norm.weight", (shape.embedding,))
        header.tensor(f"{block}.attn_q.weight", (shape.embedding, shape.embedding), matrix)
        header.tensor(f"{block}.attn_k.weight", (kv_heads * head_dim, shape.embedding), matrix)
        header.tensor(f"{block}.attn_v.weight", (kv_heads * head_dim, shape.embedding), matrix)
        header.tensor(f"{block}.attn_output.weight", (shape.embedding, shape.embedding), matrix)
        header.tensor(f"{block}.ffn_norm.weight", (shape.embedding,))
        header.tensor(f"{block}.ffn_gate.weight", (shape.feed_forward, shape.embedding), matrix)
        header.tensor(f"{block}.ffn_up.weight", (shape.feed_forward, shape.embedding), matrix)
        header.tensor(f"{block}.ffn_down.weight", (shape.embedding, shape.feed_forward), matrix)
    header.tensor("output_norm.weight", (shape.embedding,))
    header.tensor("output.weight", (shape.vocab, shape.embedding), shape.output_type or matrix)
    return header.write(path)


def write_mmproj_gguf(path: Path, embedding: int = 64, layers: int = 2) -> Path:
    """A vision projector as llama.cpp's converters write one: architecture ``clip``, type ``mmproj``."""
    header = HeaderWriter("clip")
    writer = header.writer
    writer.add_type("mmproj")
    writer.add_name("test-mmproj")
    writer.add_file_type(1)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.embedding_length", embedding)
    writer.add_uint32("clip.vision.block_count", layers)
    writer.add_uint32("clip.vision.attention.head_count", 4)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    header.tensor("v.patch_embd.weight", (embedding, 3, 14, 14), GGMLQuantizationType.F16)
    for layer in range(layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            header.tensor(f"v.blk.{layer}.{name}.weight", (embedding, embedding), GGMLQuantizationType.F16)
    header.tensor("mm.0.weight", (embedding, embedding), GGMLQuantizationType.F16)
    return header.write(path)


def write_lora_gguf(path: Path, shape: LlamaShape = LlamaShape(), rank: int = 8, alpha: float = 16.0) -> Path:
    """A LoRA adapter for a model of ``shape`` on attn_q and attn_v, as convert_lora_to_gguf.py writes one."""
    header = HeaderWriter("llama")
    writer = header.writer
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_name("test-lora")
    writer.add_file_type(0)
    kv_heads = shape.kv_heads if isinstance(shape.kv_heads, int) else shape.kv_heads[0]
    outputs = {"attn_q": shape.embedding, "attn_v": kv_heads * (shape.embedding // shape.heads)}
    for layer in range(shape.layers):
        for name, out_features in outputs.items():
            header.tensor(f"blk.{layer}.{name}.weight.lora_a", (rank, shape.embedding))
            header.tensor(f"blk.{layer}.{name}.weight.lora_b", (out_features, rank))
    return header.write(path)


def write_every_value_type_gguf(path: Path) -> Path:
    """A file with a key of every metadata type, short, long and nested arrays, and odd tensor types."""
    header = HeaderWriter("llama")
    writer = header.writer
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4_000_000_000)
    writer.add_int32("test.i32", -2_000_000_000)
    writer.add_float32("test.f32", 0.1)
    writer.add_uint64("test.u64", 2**63 + 5)
    writer.add_int64("test.i64", -(2**62))
    writer.add_float64("test.f64", 1e300)
    writer.add_bool("test.true", True)
    writer.add_bool("test.false", False)
    writer.add_string("test.text", "héllo ✓ wörld")
    writer.add_string("test.empty", "")
    writer.add_array("test.short_strings", ["a", "", "ünïcode"])
    writer.add_array("test.short_ints", [1, 2, 3])
    writer.add_array("test.short_floats", [0.5, -1.25])
    writer.add_array("test.short_bools", [True, False, True])
    writer.add_array("test.nested", [[1, 2], [3], ["x", "y"]])
    writer.add_array("test.per_layer", list(range(100)))
    writer.add_array("test.long_ints", list(range(1000)))
    writer.add_array("test.long_floats", [index / 3 for index in range(700)])
    writer.add_array("test.long_strings", [f"s{index}" * (index % 5) for index in range(300)])
    writer.add_array("test.long_nested", [[index, index + 1] for index in range(70)])
    writer.add_string("test.after_the_long_arrays", "still read")
    header.tensor("a.q8", (3, 64), GGMLQuantizationType.Q8_0)
    header.tensor("b.q4k", (2, 256), GGMLQuantizationType.Q4_K)
    header.tensor("c.iq4nl", (1, 32), GGMLQuantizationType.IQ4_NL)
    header.tensor("d.bf16", (5,), GGMLQuantizationType.BF16)
    header.tensor("e.i32", (2, 3, 4), GGMLQuantizationType.I32)
    header.tensor("f.4d", (2, 2, 2, 8), GGMLQuantizationType.F16)
    return header.write(path)
