"""Checkpoint inspection: each kind from files written here as their tools write them, and every refusal."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
from safetensors.numpy import save_file

from llamactl.deploy.checkpoint import inspect_checkpoint
from llamactl.deploy.checkpoint_kinds import (
    Checkpoint,
    GgufLoraFile,
    GgufModelFile,
    HfModelDir,
    InvalidCheckpointError,
    MlxAdapterDir,
    MlxQuantization,
    PeftLoraDir,
    TrainerCheckpoint,
)
from llamactl.errors import LlamactlError
from tests.e2e.tiny_models import N_CTX, write_tiny_vllm_model
from tests.models.gguf_files import LlamaShape, write_llama_gguf, write_lora_gguf, write_mmproj_gguf
from tests.models.stores import build_hf_cache, write_mlx_model

BASE_MODEL = "meta-llama/Llama-3.2-1B-Instruct"
# adapter_config.json as peft 0.13 saves a LoraConfig (save_pretrained: every field, sorted)
PEFT_CONFIG: dict[str, object] = {
    "alpha_pattern": {},
    "auto_mapping": None,
    "base_model_name_or_path": BASE_MODEL,
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layer_replication": None,
    "layers_pattern": None,
    "layers_to_transform": None,
    "loftq_config": {},
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 8,
    "rank_pattern": {},
    "revision": None,
    "target_modules": ["v_proj", "q_proj"],
    "task_type": "CAUSAL_LM",
    "use_dora": False,
    "use_rslora": False,
}
MLX_BASE_MODEL = "mlx-community/Llama-3.2-1B-Instruct-4bit"
# adapter_config.json as mlx_lm.lora saves it: its training arguments
MLX_ADAPTER_CONFIG: dict[str, object] = {
    "model": MLX_BASE_MODEL,
    "train": True,
    "fine_tune_type": "lora",
    "optimizer": "adam",
    "data": "data",
    "seed": 0,
    "num_layers": 16,
    "batch_size": 4,
    "iters": 600,
    "learning_rate": 1e-05,
    "adapter_path": "adapters",
    "save_every": 100,
    "max_seq_length": 2048,
    "grad_checkpoint": False,
    "lora_parameters": {"rank": 8, "dropout": 0.0, "scale": 20.0},
    "mask_prompt": False,
}


@dataclass(frozen=True)
class Tensors:
    """A safetensors file of a few tensors of ``dtype``."""

    dtype: type[np.generic] = np.float32
    metadata: Mapping[str, str] | None = None


FileContent = bytes | Mapping[str, object] | Tensors
"""Raw bytes, a JSON document, or tensors."""


def write_dir(directory: Path, files: Mapping[str, FileContent]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, Tensors):
            tensors = {"a.weight": np.zeros((8, 16), content.dtype), "b.weight": np.ones((4,), content.dtype)}
            save_file(tensors, str(path), metadata=dict(content.metadata or {}))
        else:
            path.write_text(json.dumps(content, indent=2))
    return directory


def peft_adapter(directory: Path, **config: object) -> Path:
    return write_dir(
        directory, {"adapter_config.json": {**PEFT_CONFIG, **config}, "adapter_model.safetensors": Tensors()}
    )


def mlx_adapter(directory: Path, **config: object) -> Path:
    return write_dir(
        directory,
        {"adapter_config.json": {**MLX_ADAPTER_CONFIG, **config}, "adapters.safetensors": Tensors()},
    )


def trainer_checkpoint(directory: Path, global_step: int | None) -> Path:
    """A PEFT LoRA checkpoint as transformers' Trainer saves one, with its optimizer and trainer state."""
    peft_adapter(directory)
    state: dict[str, object] = {"epoch": 0.5, "log_history": [{"loss": 2.5, "step": 10}]}
    if global_step is not None:
        state["global_step"] = global_step
    return write_dir(
        directory,
        {
            "trainer_state.json": state,
            "optimizer.pt": b"PK\x03\x04 optimizer",
            "scheduler.pt": b"PK\x03\x04 scheduler",
            "rng_state.pth": b"PK\x03\x04 rng",
            "training_args.bin": b"PK\x03\x04 args",
            "README.md": b"# model card\n",
        },
    )


def size(path: Path) -> int:
    return path.stat().st_size


def refusal(path: Path | str) -> InvalidCheckpointError:
    with pytest.raises(InvalidCheckpointError) as refused:
        inspect_checkpoint(path)
    return refused.value


@pytest.fixture
def without_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain-JSON read of adapter_config.json, whether peft is installed or not."""
    monkeypatch.setitem(sys.modules, "peft", None)


# --- model dirs ------------------------------------------------------------------------------------


def test_a_transformers_model_dir(tmp_path: Path) -> None:
    model = write_tiny_vllm_model(tmp_path / "tiny-llama")
    assert inspect_checkpoint(model) == HfModelDir(
        path=str(model),
        architecture="LlamaForCausalLM",
        model_type="llama",
        dtype="float32",
        weight_dtypes=("F32",),
        context_length=N_CTX,
        mlx=False,
        mlx_quantization=None,
        quant_method=None,
        weight_files=("model.safetensors",),
        weight_bytes=size(model / "model.safetensors"),
    )


def test_a_model_dir_mlx_lm_saved_is_mlx(tmp_path: Path) -> None:
    found = inspect_checkpoint(write_mlx_model(tmp_path / "tiny-mlx"))
    assert isinstance(found, HfModelDir) and found.mlx and found.mlx_quantization is None


def test_an_mlx_quantized_model_dir(tmp_path: Path) -> None:
    """Weights packed in uint32 with float16 scales: the dtype is the float one, the quantization mlx_lm's."""
    config = {
        "model_type": "qwen3",
        "max_position_embeddings": 40960,
        "quantization": {"group_size": 64, "bits": 4},
    }
    model = write_dir(tmp_path / "qwen-4bit", {"config.json": config})
    save_file(
        {"q.weight": np.zeros((8, 8), np.uint32), "q.scales": np.zeros((8, 2), np.float16)},
        str(model / "model.safetensors"),
    )
    found = inspect_checkpoint(model)
    assert isinstance(found, HfModelDir)
    assert (found.mlx, found.mlx_quantization, found.dtype, found.weight_dtypes, found.architecture) == (
        True,
        MlxQuantization(bits=4, group_size=64),
        "float16",
        ("F16", "U32"),
        None,
    )


@pytest.mark.parametrize(
    ("config", "weights", "expected"),
    [
        ({"dtype": "bfloat16", "max_position_embeddings": 4096}, np.float32, ("bfloat16", 4096, None)),
        ({"torch_dtype": "float16", "dtype": "bfloat16"}, np.float32, ("float16", None, None)),
        ({}, np.float16, ("float16", None, None)),
        ({"n_positions": 1024}, np.float32, ("float32", 1024, None)),
        (
            {"text_config": {"max_position_embeddings": 131072, "torch_dtype": "bfloat16"}},
            np.float32,
            ("bfloat16", 131072, None),
        ),
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, np.float16, ("float16", None, "awq")),
    ],
    ids=["dtype", "torch_dtype-first", "from-weights", "n_positions", "text_config", "awq"],
)
def test_dtype_context_and_quantization_from_the_config_or_the_weights(
    tmp_path: Path, config: dict[str, object], weights: type[np.generic], expected: tuple[object, ...]
) -> None:
    model = write_dir(tmp_path / "model", {"config.json": config, "model.safetensors": Tensors(weights)})
    found = inspect_checkpoint(model)
    assert isinstance(found, HfModelDir)
    assert (found.dtype, found.context_length, found.quant_method) == expected


def test_a_sharded_model_dir_sums_its_shards(tmp_path: Path) -> None:
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"metadata": {}, "weight_map": {"a.weight": shards[0], "b.weight": shards[1]}}
    files: dict[str, FileContent] = {shard: Tensors() for shard in shards}
    files |= {"config.json": {"model_type": "llama"}, "model.safetensors.index.json": index}
    model = write_dir(tmp_path / "model", files)
    found = inspect_checkpoint(model)
    assert isinstance(found, HfModelDir)
    assert found.weight_files == tuple(shards)
    assert found.weight_bytes == sum(size(model / shard) for shard in shards)


def test_a_hub_snapshot_whose_files_link_to_blobs(tmp_path: Path) -> None:
    snapshot = build_hf_cache(tmp_path / "hub", tmp_path / "work").safetensors_snapshot
    found = inspect_checkpoint(snapshot)
    assert isinstance(found, HfModelDir)
    assert (found.path, found.model_type, found.weight_bytes) == (
        str(snapshot),
        "llama",
        size(snapshot / "model.safetensors"),
    )


# --- GGUF files ------------------------------------------------------------------------------------


def test_a_gguf_model(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "llama-F16.gguf", LlamaShape(vocab=100, context=8192))
    assert inspect_checkpoint(path) == GgufModelFile(
        path=str(path),
        architecture="llama",
        name="test-llama",
        quantization="F16",
        context_length=8192,
        parameters=100 * 64 * 2 + 2 * (2 * 64 + 4 * 64 * 64 + 3 * 64 * 128) + 64,
        chat_template=True,
        file_bytes=size(path),
    )


def test_a_gguf_lora(tmp_path: Path) -> None:
    path = write_lora_gguf(tmp_path / "lora-F32.gguf", alpha=32.0)
    assert inspect_checkpoint(path) == GgufLoraFile(
        path=str(path), architecture="llama", adapter_type="lora", lora_alpha=32.0, file_bytes=size(path)
    )


# --- adapters --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("without_peft")
def test_a_peft_lora_adapter(tmp_path: Path) -> None:
    adapter = peft_adapter(tmp_path / "adapter")
    assert inspect_checkpoint(adapter) == PeftLoraDir(
        path=str(adapter),
        base_model=BASE_MODEL,
        r=8,
        lora_alpha=16.0,
        target_modules=("q_proj", "v_proj"),
        task_type="CAUSAL_LM",
        use_dora=False,
        use_rslora=False,
        rank_pattern={},
        alpha_pattern={},
        modules_to_save=None,
        weights_file=str(adapter / "adapter_model.safetensors"),
        weights_format="safetensors",
        weight_bytes=size(adapter / "adapter_model.safetensors"),
    )


@pytest.mark.usefixtures("without_peft")
@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"target_modules": ".*decoder.*(q_proj|v_proj)$"}, "target_modules", ".*decoder.*(q_proj|v_proj)$"),
        ({"target_modules": None}, "target_modules", None),
        ({"modules_to_save": ["lm_head", "embed_tokens"]}, "modules_to_save", ("lm_head", "embed_tokens")),
        ({"rank_pattern": {"q_proj": 16}}, "rank_pattern", {"q_proj": 16}),
        ({"rank_pattern": None}, "rank_pattern", {}),
        ({"use_rslora": True}, "use_rslora", True),
        ({"base_model_name_or_path": None}, "base_model", None),
    ],
)
def test_what_a_peft_config_says(
    tmp_path: Path, config: dict[str, object], field: str, expected: object
) -> None:
    found = inspect_checkpoint(peft_adapter(tmp_path / "adapter", **config))
    assert getattr(found, field) == expected


@pytest.mark.usefixtures("without_peft")
def test_a_peft_adapter_with_pickled_weights_is_taken_and_says_bin(tmp_path: Path) -> None:
    adapter = write_dir(
        tmp_path / "adapter", {"adapter_config.json": PEFT_CONFIG, "adapter_model.bin": b"PK\x03\x04"}
    )
    found = inspect_checkpoint(adapter)
    assert isinstance(found, PeftLoraDir)
    assert (found.weights_format, found.weights_file) == ("bin", str(adapter / "adapter_model.bin"))


def test_peft_reads_a_config_as_the_plain_json_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("peft")
    adapter = peft_adapter(tmp_path / "adapter", rank_pattern={"q_proj": 16}, modules_to_save=["lm_head"])
    by_peft = inspect_checkpoint(adapter)
    monkeypatch.setitem(sys.modules, "peft", None)
    assert inspect_checkpoint(adapter) == by_peft
    assert isinstance(by_peft, PeftLoraDir) and (by_peft.r, by_peft.target_modules) == (
        8,
        ("q_proj", "v_proj"),
    )


def test_an_mlx_lm_adapter(tmp_path: Path) -> None:
    adapter = mlx_adapter(tmp_path / "adapters")
    assert inspect_checkpoint(adapter) == MlxAdapterDir(
        path=str(adapter),
        base_model=MLX_BASE_MODEL,
        fine_tune_type="lora",
        rank=8,
        scale=20.0,
        num_layers=16,
        keys=None,
        weights_file=str(adapter / "adapters.safetensors"),
        weight_bytes=size(adapter / "adapters.safetensors"),
    )


def test_an_mlx_lm_dora_adapter_on_named_keys_without_a_recorded_base(tmp_path: Path) -> None:
    parameters = {"rank": 16, "scale": 10.0, "dropout": 0.05, "keys": ["self_attn.q_proj", "mlp.down_proj"]}
    adapter = mlx_adapter(
        tmp_path / "adapters", fine_tune_type="dora", lora_parameters=parameters, model=None
    )
    found = inspect_checkpoint(adapter)
    assert isinstance(found, MlxAdapterDir)
    assert (found.fine_tune_type, found.rank, found.scale, found.keys, found.base_model) == (
        "dora",
        16,
        10.0,
        ("self_attn.q_proj", "mlp.down_proj"),
        None,
    )


# --- trainer checkpoints ---------------------------------------------------------------------------


@pytest.mark.usefixtures("without_peft")
@pytest.mark.parametrize(("steps", "latest"), [((100, 200), 200), ((900, 1000), 1000)])
def test_an_output_dir_resolves_to_its_latest_checkpoint(
    tmp_path: Path, steps: tuple[int, ...], latest: int
) -> None:
    output = write_dir(tmp_path / "output", {"README.md": b"# run\n", "runs/events": b""})
    for step in steps:
        trainer_checkpoint(output / f"checkpoint-{step}", global_step=step)
    found = inspect_checkpoint(output)
    assert isinstance(found, PeftLoraDir)
    assert found.path == str(output / f"checkpoint-{latest}")
    assert found.trainer == TrainerCheckpoint(step=latest, output_dir=str(output))


@pytest.mark.usefixtures("without_peft")
@pytest.mark.parametrize(
    ("partial", "reason"),
    [
        ({}, "checkpoint-300 is empty"),
        (
            {"optimizer.pt": b"PK\x03\x04", "trainer_state.json": {"global_step": 300}},
            "found only optimizer.pt",
        ),
        ({"adapter_config.json": PEFT_CONFIG}, "found adapter_config.json but no adapter_model.safetensors"),
        (
            {"adapter_config.json": b'{"peft_type": "LO', "adapter_model.safetensors": Tensors()},
            "not valid JSON",
        ),
    ],
    ids=["empty", "optimizer-only", "config-only", "config-cut-short"],
)
def test_a_partial_latest_checkpoint_is_passed_over_for_the_one_before(
    tmp_path: Path, partial: dict[str, FileContent], reason: str
) -> None:
    output = tmp_path / "output"
    trainer_checkpoint(output / "checkpoint-100", global_step=100)
    trainer_checkpoint(output / "checkpoint-200", global_step=200)
    write_dir(output / "checkpoint-300", partial)
    found = inspect_checkpoint(output)
    assert isinstance(found, PeftLoraDir) and found.trainer is not None
    assert (found.path, found.trainer.step) == (str(output / "checkpoint-200"), 200)
    [passed_over] = found.trainer.passed_over
    assert passed_over.path == str(output / "checkpoint-300") and reason in passed_over.reason


@pytest.mark.parametrize(
    ("top", "own_reason"),
    [({"README.md": b""}, None), ({"config.json": {}}, "output: found config.json but no *.safetensors")],
    ids=["plain-output-dir", "final-save-cut-short"],
)
def test_an_output_dir_whose_checkpoints_all_are_partial_is_refused_with_each_reason(
    tmp_path: Path, top: dict[str, FileContent], own_reason: str | None
) -> None:
    output = write_dir(tmp_path / "output", top)
    write_dir(output / "checkpoint-100", {"optimizer.pt": b"PK\x03\x04"})
    write_dir(output / "checkpoint-200", {"adapter_config.json": PEFT_CONFIG})
    message = refusal(output).message
    assert message.startswith(f"none of the 2 trainer checkpoints in {output} holds a model or adapter: ")
    assert f"{output / 'checkpoint-100'} holds no model or adapter: found only optimizer.pt" in message
    assert (
        f"{output / 'checkpoint-200'}: found adapter_config.json but no adapter_model.safetensors" in message
    )
    if own_reason is None:
        assert "checkpoint-100/" not in message  # the output dir's own listing says nothing new
    else:
        assert own_reason in message


@pytest.mark.usefixtures("without_peft")
@pytest.mark.parametrize(
    ("global_step", "step"), [(250, 250), (None, 300)], ids=["trainer-state", "dir-name"]
)
def test_a_checkpoint_dir_is_what_it_holds_at_its_step(
    tmp_path: Path, global_step: int | None, step: int
) -> None:
    checkpoint = trainer_checkpoint(tmp_path / "output" / "checkpoint-300", global_step)
    found = inspect_checkpoint(checkpoint)
    assert isinstance(found, PeftLoraDir)
    assert (found.path, found.trainer) == (str(checkpoint), TrainerCheckpoint(step=step))


def test_a_full_fine_tune_checkpoint_is_a_model_dir_at_its_step(tmp_path: Path) -> None:
    checkpoint = write_tiny_vllm_model(tmp_path / "checkpoint-40")
    write_dir(checkpoint, {"optimizer.pt": b"PK\x03\x04", "trainer_state.json": {"global_step": 40}})
    found = inspect_checkpoint(checkpoint)
    assert isinstance(found, HfModelDir) and found.trainer == TrainerCheckpoint(step=40)


@pytest.mark.usefixtures("without_peft")
def test_an_output_dir_with_the_final_adapter_is_that_adapter(tmp_path: Path) -> None:
    output = peft_adapter(tmp_path / "output")
    trainer_checkpoint(output / "checkpoint-100", global_step=100)
    found = inspect_checkpoint(output)
    assert isinstance(found, PeftLoraDir) and (found.path, found.trainer) == (str(output), None)


# --- paths and refusals ----------------------------------------------------------------------------


def test_a_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    path = write_llama_gguf(tmp_path / "models" / "llama.gguf")
    assert inspect_checkpoint("~/models/../models/llama.gguf").path == str(path.resolve())


def test_a_missing_path_is_not_found(tmp_path: Path) -> None:
    refused = refusal(tmp_path / "nowhere")
    assert (refused.status, refused.code) == (404, "checkpoint_not_found")
    assert isinstance(refused, LlamactlError) and "does not exist" in refused.message


def _many_files() -> dict[str, FileContent]:
    return {f"notes-{number:02}.txt": b"" for number in range(15)}


@pytest.mark.usefixtures("without_peft")
@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({}, ["found is empty. Give a GGUF file, a model dir"]),
        ({"a.txt": b"", "b.bin": b""}, ["found only a.txt, b.bin. Give a GGUF file"]),
        (_many_files(), ["notes-09.txt and 5 more"]),
        ({"sub/x": b"", "y.md": b""}, ["found only y.md, sub/"]),
        ({"config.json": {"model_type": "llama"}}, ["found config.json but no *.safetensors"]),
        (
            {"config.json": {"model_type": "llama"}, "pytorch_model.bin": b"PK\x03\x04"},
            ["but no *.safetensors", "pytorch_model.bin is pickled", "safe_serialization=True"],
        ),
        ({"model.safetensors": Tensors()}, ["found model.safetensors but no config.json"]),
        (
            {"config.json": b"{'model_type': 'llama'}", "model.safetensors": Tensors()},
            ["config.json is not valid JSON"],
        ),
        ({"config.json": b"[1, 2]", "model.safetensors": Tensors()}, ["config.json: not a JSON object"]),
        ({"config.json": {}, "model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"}, ["truncated"]),
        (
            {
                "config.json": {},
                "model.safetensors.index.json": {"weight_map": {"a": "model-00001-of-00002.safetensors"}},
                "model-00002-of-00002.safetensors": Tensors(),
            },
            ["names model-00001-of-00002.safetensors, which are not there", "incomplete"],
        ),
        (
            {"adapter_config.json": PEFT_CONFIG},
            ["found adapter_config.json but no adapter_model.safetensors"],
        ),
        (
            {"adapter_model.safetensors": Tensors()},
            ["found adapter_model.safetensors but no adapter_config.json"],
        ),
        (
            {"adapter_config.json": {**PEFT_CONFIG, "r": "eight"}, "adapter_model.safetensors": Tensors()},
            ["adapter_config.json: r: Expected `int`, got `str`"],
        ),
        (
            {
                "adapter_config.json": {**PEFT_CONFIG, "peft_type": "IA3"},
                "adapter_model.safetensors": Tensors(),
            },
            ["peft_type 'IA3'", "only LoRA adapters"],
        ),
        (
            {"adapter_config.json": {"base_model_name_or_path": "x"}, "adapter_model.safetensors": Tensors()},
            ["has no peft_type"],
        ),
        (
            {"adapter_config.json": PEFT_CONFIG, "adapter_model.safetensors": b"not a safetensors file"},
            ["adapter_model.safetensors", "not a safetensors file"],
        ),
        (
            {"adapter_config.json": MLX_ADAPTER_CONFIG, "0000100_adapters.safetensors": Tensors()}
            | {"0000200_adapters.safetensors": Tensors()},
            [
                "found adapter_config.json but no adapters.safetensors",
                "copy the latest one saved, 0000200_adapters",
            ],
        ),
        (
            {
                "adapter_config.json": {
                    "model": "m",
                    "lora_layers": 16,
                    "lora_parameters": {"rank": 8, "scale": 20.0},
                }
            }
            | {"adapters.safetensors": Tensors()},
            ["has no num_layers", "rename that key num_layers"],
        ),
        (
            {"adapter_config.json": {**MLX_ADAPTER_CONFIG, "lora_parameters": {"rank": 8}}}
            | {"adapters.safetensors": Tensors()},
            ["has no lora_parameters with a rank and a scale"],
        ),
        (
            {"adapter_config.json": {**MLX_ADAPTER_CONFIG, "fine_tune_type": "qlora"}}
            | {"adapters.safetensors": Tensors()},
            ["fine_tune_type: Invalid enum value 'qlora'"],
        ),
        (
            {"model-Q4_K_M.gguf": b"GGUF", "README.md": b""},
            ["holds GGUF files", "point at one of model-Q4_K_M.gguf"],
        ),
    ],
    ids=[
        "empty",
        "other-files",
        "many-files",
        "subdir",
        "config-only",
        "pickled-model",
        "weights-only",
        "config-not-json",
        "config-not-object",
        "shard-cut-short",
        "shard-missing",
        "peft-config-only",
        "peft-weights-only",
        "peft-field-type",
        "peft-not-lora",
        "peft-type-missing",
        "peft-weights-damaged",
        "mlx-only-saved-steps",
        "mlx-old-keys",
        "mlx-no-scale",
        "mlx-fine-tune-type",
        "gguf-dir",
    ],
)
def test_a_dir_with_nothing_servable_is_refused_saying_what_it_found(
    tmp_path: Path, files: dict[str, FileContent], words: list[str]
) -> None:
    refused = refusal(write_dir(tmp_path / "found", files))
    assert (refused.status, refused.code) == (422, "invalid_checkpoint")
    assert str(tmp_path / "found") in refused.message
    for word in words:
        assert word in refused.message


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("model.safetensors", None, ["a single safetensors file", "point at its dir"]),
        ("weights", None, ["a single safetensors file"]),
        ("config.json", b'{"model_type": "llama"}', ["a JSON file", "point at its dir"]),
        ("pytorch_model.bin", b"PK\x03\x04rest", ["a PyTorch pickle"]),
        ("notes.txt", b"hello there", ["not a GGUF file (it starts with b'hello th')"]),
        ("empty.gguf", b"", ["not a GGUF file (it starts with b'')"]),
        ("cut.gguf", b"GGUF\x03\x00\x00\x00", ["is not a valid GGUF file", "truncated"]),
    ],
    ids=["safetensors", "safetensors-by-magic", "json", "pickle", "text", "empty", "gguf-cut-short"],
)
def test_a_file_that_is_not_a_gguf_is_refused_by_what_it_looks_like(
    tmp_path: Path, name: str, content: bytes | None, words: list[str]
) -> None:
    path = tmp_path / name
    if content is None:
        save_file({"w": np.zeros((2, 2), np.float32)}, str(path))
    else:
        path.write_bytes(content)
    refused = refusal(path)
    assert (refused.status, refused.code) == (422, "invalid_checkpoint")
    for word in [str(path), *words]:
        assert word in refused.message


def test_a_gguf_projector_is_refused_as_loaded_beside_a_model(tmp_path: Path) -> None:
    refused = refusal(write_mmproj_gguf(tmp_path / "mmproj-F16.gguf"))
    assert "vision projector (mmproj)" in refused.message and "point at the model" in refused.message


@pytest.mark.usefixtures("without_peft")
def test_every_kind_encodes_with_its_kind_and_decodes_as_a_checkpoint(tmp_path: Path) -> None:
    output = tmp_path / "output"
    trainer_checkpoint(output / "checkpoint-200", global_step=200)
    write_dir(output / "checkpoint-300", {})
    kinds = [
        inspect_checkpoint(write_tiny_vllm_model(tmp_path / "model")),
        inspect_checkpoint(write_llama_gguf(tmp_path / "model.gguf")),
        inspect_checkpoint(write_lora_gguf(tmp_path / "lora.gguf")),
        inspect_checkpoint(output),
        inspect_checkpoint(mlx_adapter(tmp_path / "mlx")),
    ]
    encoded = [msgspec.json.encode(kind) for kind in kinds]
    assert [json.loads(text)["kind"] for text in encoded] == [
        "hf_model",
        "gguf_model",
        "gguf_lora",
        "peft_lora",
        "mlx_adapter",
    ]
    assert [msgspec.json.decode(text, type=Checkpoint) for text in encoded] == kinds
