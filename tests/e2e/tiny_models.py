"""Tiny random-weight llama models, written locally, for the real backends to serve.

Nothing is downloaded: each writer builds a 2-layer llama model with seeded
random weights, so the same call always writes the same bytes and, at
temperature 0, the backend always gives the same answer. The answers are
gibberish; the tests only need a model the server loads and generates with.

All three share one vocabulary: printable ASCII bytes plus tab and newline,
a few merges and the ChatML special tokens. With all 256 byte tokens the
random model emits invalid UTF-8 and llama-server answers every chat with
HTTP 500; without the ASCII control bytes its replies stay readable. Input
bytes outside the vocabulary are dropped by the tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter, TokenType
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

SEED = 1234
N_LAYERS = 2
N_FF = 128
N_CTX = 512
# vLLM's CPU attention kernels reject head_dim 16, so its model has head_dim 64.
SMALL_EMBD, SMALL_HEADS = 64, 4
VLLM_EMBD, VLLM_HEADS = 128, 2

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BOS, EOS = "<|endoftext|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, "<|im_start|>", EOS)
TEXT_BYTES = (0x09, 0x0A, *range(0x20, 0x7F))
MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s"))

Weights = npt.NDArray[np.float32]
WORD_START = "\u2581"
"""SentencePiece's word boundary, which Llama-2-style vocabularies have in place of a space."""


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character mapping, used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {byte: chr(byte) for byte in printable}
    for extra, byte in enumerate(b for b in range(256) if b not in mapping):
        mapping[byte] = chr(256 + extra)
    return mapping


def _vocabulary() -> list[str]:
    """Byte tokens, then merged tokens, then the special tokens; a token's id is its index."""
    byte_chars = _gpt2_byte_chars()
    tokens = [byte_chars[byte] for byte in TEXT_BYTES]
    tokens += [left + right for left, right in MERGES if left + right not in tokens]
    return [*tokens, *SPECIAL_TOKENS]


class _RandomWeights:
    """Seeded small normal weights, drawn in call order."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(SEED)

    def matrix(self, rows: int, columns: int) -> Weights:
        return (self._rng.standard_normal((rows, columns)) * 0.02).astype(np.float32)

    @staticmethod
    def ones(size: int) -> Weights:
        return np.ones(size, dtype=np.float32)


def write_tiny_gguf(path: Path, context: int = N_CTX) -> Path:
    """Write the tiny model as a GGUF file for llama-server (~0.5 MB, all f32); returns ``path``.

    llama-server caps a slot at the model's training ``context``."""
    write_llama_gguf_weights(
        path,
        embedding=SMALL_EMBD,
        heads=SMALL_HEADS,
        kv_heads=SMALL_HEADS,
        layers=N_LAYERS,
        feed_forward=N_FF,
        context=context,
        f16=False,
        name="tiny-llama",
    )
    return path


def write_llama_gguf_weights(
    path: Path,
    *,
    embedding: int,
    heads: int,
    kv_heads: int,
    layers: int,
    feed_forward: int,
    context: int,
    f16: bool,
    name: str,
) -> int:
    """A llama GGUF of this shape with seeded random weights and the shared vocabulary, that
    llama-server loads and chats with. Matrices are f16 or f32, norms f32. Returns the bytes of the
    tensor data: what llama.cpp's model buffer holds."""
    tokens = _vocabulary()
    weights = _RandomWeights()
    writer = GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1 if f16 else 0)  # f16 matrices, or all f32

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [int(TokenType.CONTROL if token in SPECIAL_TOKENS else TokenType.NORMAL) for token in tokens]
    )
    writer.add_token_merges([f"{left} {right}" for left, right in MERGES])
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    data_bytes = 0

    def add(tensor: str, values: npt.NDArray[np.floating[Any]]) -> None:
        nonlocal data_bytes
        writer.add_tensor(tensor, values)
        data_bytes += values.nbytes

    def matrix(rows: int, columns: int) -> npt.NDArray[np.floating[Any]]:
        drawn = weights.matrix(rows, columns)
        return drawn.astype(np.float16) if f16 else drawn

    # numpy shapes are (rows, columns): ggml's dimensions reversed.
    kv_width = kv_heads * (embedding // heads)
    add("token_embd.weight", matrix(len(tokens), embedding))
    for layer in range(layers):
        block = f"blk.{layer}"
        add(f"{block}.attn_norm.weight", weights.ones(embedding))
        add(f"{block}.attn_q.weight", matrix(embedding, embedding))
        add(f"{block}.attn_k.weight", matrix(kv_width, embedding))
        add(f"{block}.attn_v.weight", matrix(kv_width, embedding))
        add(f"{block}.attn_output.weight", matrix(embedding, embedding))
        add(f"{block}.ffn_norm.weight", weights.ones(embedding))
        add(f"{block}.ffn_gate.weight", matrix(feed_forward, embedding))
        add(f"{block}.ffn_up.weight", matrix(feed_forward, embedding))
        add(f"{block}.ffn_down.weight", matrix(embedding, feed_forward))
    add("output_norm.weight", weights.ones(embedding))
    add("output.weight", matrix(len(tokens), embedding))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return data_bytes


def write_tiny_mlx_model(directory: Path) -> Path:
    """Write the tiny model as a Hugging Face llama directory for mlx_lm.server; returns ``directory``."""
    return _write_hf_llama(directory, SMALL_EMBD, SMALL_HEADS)


def write_tiny_vllm_model(directory: Path) -> Path:
    """Write the tiny model as a Hugging Face llama directory vLLM on CPU serves; returns ``directory``."""
    return _write_hf_llama(directory, VLLM_EMBD, VLLM_HEADS)


def _write_hf_llama(directory: Path, hidden: int, heads: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tokens = _vocabulary()
    bos_id, eos_id = tokens.index(BOS), tokens.index(EOS)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": hidden // heads,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYERS,
        "max_position_embeddings": N_CTX,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": len(tokens),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", {"bos_token_id": bos_id, "eos_token_id": eos_id})
    save_file(_hf_llama_weights(len(tokens), hidden), str(directory / "model.safetensors"))
    _hf_tokenizer(tokens).save(str(directory / "tokenizer.json"))
    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": BOS,
            "add_bos_token": False,
            "model_max_length": N_CTX,
            "chat_template": CHATML_TEMPLATE,
        },
    )
    return directory


def _hf_llama_weights(vocab_size: int, hidden: int) -> dict[str, Weights]:
    weights = _RandomWeights()
    tensors = {"model.embed_tokens.weight": weights.matrix(vocab_size, hidden)}
    for layer in range(N_LAYERS):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = weights.ones(hidden)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{prefix}.self_attn.{name}.weight"] = weights.matrix(hidden, hidden)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = weights.ones(hidden)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = weights.matrix(N_FF, hidden)
        tensors[f"{prefix}.mlp.up_proj.weight"] = weights.matrix(N_FF, hidden)
        tensors[f"{prefix}.mlp.down_proj.weight"] = weights.matrix(hidden, N_FF)
    tensors["model.norm.weight"] = weights.ones(hidden)
    tensors["lm_head.weight"] = weights.matrix(vocab_size, hidden)
    return tensors


def _hf_tokenizer(tokens: list[str]) -> Tokenizer:
    """The GGUF vocabulary as a byte-level BPE ``tokenizer.json``."""
    vocab = {token: index for index, token in enumerate(tokens) if token not in SPECIAL_TOKENS}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Added in id order, so each special token gets the id it has in the GGUF vocabulary.
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    return tokenizer


def _write_json(path: Path, content: dict[str, object]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_tiny_peft_lora(directory: Path, base_model: str, rank: int = 8) -> Path:
    """A PEFT LoRA for ``write_tiny_vllm_model``'s model, as peft 0.x saves one; returns ``directory``.

    Its weights are far larger than the base's, so its greedy tokens differ from the base model's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + 1)
    tensors: dict[str, Weights] = {}
    for layer in range(N_LAYERS):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((rank, VLLM_EMBD)) * 0.5).astype(
                np.float32
            )
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((VLLM_EMBD, rank)) * 0.5).astype(
                np.float32
            )
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    _write_json(directory / "adapter_config.json", config)
    return directory


def with_llama2_tokenizer(model_dir: Path) -> Path:
    """Rewrite the model's byte-level BPE ``tokenizer.json`` as Llama 2's kind, same tokens and ids.

    convert_hf_to_gguf.py names a byte-level BPE's pre-tokenizer by hashing its output on a fixed text
    and refuses any it has not seen (the toy's: a test below). A BPE with byte fallback over ``▁``-words,
    as Llama 2 and Mistral have, needs no such name.
    """
    path = model_dir / "tokenizer.json"
    document = json.loads(path.read_text())
    ids: dict[str, int] = document["model"]["vocab"]
    byte_level = Tokenizer.from_str(path.read_text())

    def piece(token: str) -> str:
        text = byte_level.decode([ids[token]])
        return f"<0x{ord(text):02X}>" if text in ("\t", "\n") else text.replace(" ", WORD_START)

    vocab = {piece(token): index for token, index in ids.items()}
    merges = [(piece(left), piece(right)) for left, right in document["model"]["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend(WORD_START), normalizers.Replace(" ", WORD_START)]
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(WORD_START, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    # In id order, so each special token keeps its id.
    specials = sorted(document["added_tokens"], key=lambda added: added["id"])
    tokenizer.add_special_tokens(
        [AddedToken(added["content"], special=True, normalized=False) for added in specials]
    )
    assert tokenizer.get_vocab(with_added_tokens=True) == {
        **vocab,
        **{added["content"]: added["id"] for added in specials},
    }
    tokenizer.save(str(path))
    return model_dir
