"""PEFT LoRA -> mlx_lm adapter dir: the same weight deltas, the config mlx_lm reads, the cache, every refusal.

The adapters are the tiny PEFT LoRA of tests/e2e/tiny_models.py (q_proj and
v_proj of a 2-layer llama, r=8, alpha=16), rewritten here where a case needs
other tensors or another config. tests/e2e/test_mlx_adapter_real.py loads the
result in mlx_lm itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load_file, save_file

from llamactl.deploy import mlx_adapter
from llamactl.deploy.checkpoint import inspect_checkpoint
from llamactl.deploy.checkpoint_kinds import MlxAdapterDir, PeftLoraDir
from llamactl.deploy.mlx_adapter import convert_peft_to_mlx, staged_mlx_adapter
from llamactl.deploy.plan import DeployRefused
from tests.e2e.tiny_models import N_LAYERS, VLLM_EMBD, write_tiny_peft_lora, write_tiny_vllm_model

Tensors = dict[str, npt.NDArray[Any]]
PEFT_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model.model.layers"
RANK, ALPHA = 8, 16.0
VOCAB = 108
"""The tiny models' vocabulary size: lm_head and embed_tokens have this many rows."""


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vllm_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def base_config(base_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((base_dir / "config.json").read_text())
    return config


@pytest.fixture
def peft_dir(tmp_path: Path, base_dir: Path) -> Path:
    return write_tiny_peft_lora(tmp_path / "lora", base_model=str(base_dir))


def inspected(directory: Path) -> PeftLoraDir:
    adapter = inspect_checkpoint(directory)
    assert isinstance(adapter, PeftLoraDir)
    return adapter


def rewrite(
    directory: Path,
    tensors: Callable[[Tensors], Tensors] | None = None,
    **config: object,
) -> PeftLoraDir:
    """The PEFT dir with its tensors passed through ``tensors`` and ``config`` set in its adapter_config."""
    if tensors is not None:
        weights = directory / PEFT_WEIGHTS
        save_file(tensors(load_file(weights)), str(weights), metadata={"format": "pt"})
    config_file = directory / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **config}))
    return inspected(directory)


def low_rank(matrix: str, rank: int, module: str) -> npt.NDArray[np.float32]:
    shape = (rank, VLLM_EMBD) if matrix == "lora_A" else (VLLM_EMBD, rank)
    return np.random.default_rng(len(module) + rank).standard_normal(shape).astype(np.float32)


def peft_delta(a: npt.NDArray[Any], b: npt.NDArray[Any], scale: float) -> npt.NDArray[np.float64]:
    """What peft adds to a Linear's (out, in) weight: scale * B @ A."""
    return scale * (b.astype(np.float64) @ a.astype(np.float64))


def mlx_delta(lora_a: npt.NDArray[Any], lora_b: npt.NDArray[Any], scale: float) -> npt.NDArray[np.float64]:
    """What mlx_lm's LoRALinear adds, as an (out, in) weight: x @ (scale * lora_a @ lora_b), transposed."""
    return (scale * (lora_a.astype(np.float64) @ lora_b.astype(np.float64))).T


def mlx_config(directory: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((directory / "adapter_config.json").read_text())
    return config


# --- conversion ---------------------------------------------------------------------------------------


def test_every_module_adds_the_same_weight_delta_as_peft(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    out = convert_peft_to_mlx(inspected(peft_dir), base_config, tmp_path / "mlx")

    assert out == tmp_path / "mlx"
    assert sorted(path.name for path in out.iterdir()) == ["adapter_config.json", "adapters.safetensors"]
    peft = load_file(peft_dir / PEFT_WEIGHTS)
    mlx = load_file(out / "adapters.safetensors")
    scale = mlx_config(out)["lora_parameters"]["scale"]
    modules = [
        f"model.layers.{layer}.self_attn.{name}" for layer in range(N_LAYERS) for name in ("q_proj", "v_proj")
    ]
    assert sorted(mlx) == sorted(f"{module}.lora_{matrix}" for module in modules for matrix in "ab")
    for module in modules:
        a = peft[f"base_model.model.{module}.lora_A.weight"]
        b = peft[f"base_model.model.{module}.lora_B.weight"]
        lora_a, lora_b = mlx[f"{module}.lora_a"], mlx[f"{module}.lora_b"]
        assert (lora_a.shape, lora_b.shape) == ((VLLM_EMBD, RANK), (RANK, VLLM_EMBD))
        assert lora_a.dtype == lora_b.dtype == np.float32
        np.testing.assert_allclose(
            mlx_delta(lora_a, lora_b, scale), peft_delta(a, b, ALPHA / RANK), rtol=0, atol=1e-6
        )


def test_the_config_holds_every_key_mlx_lm_reads(
    peft_dir: Path, base_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    out = convert_peft_to_mlx(inspected(peft_dir), base_config, tmp_path / "mlx")

    # load_adapters reads fine_tune_type and num_layers; linear_to_lora_layers rank, scale, dropout, keys.
    assert mlx_config(out) == {
        "fine_tune_type": "lora",
        "model": str(base_dir),
        "num_layers": N_LAYERS,
        "lora_parameters": {
            "rank": RANK,
            "scale": ALPHA / RANK,
            "dropout": 0.0,
            "keys": ["self_attn.q_proj", "self_attn.v_proj"],
        },
    }
    # llamactl's own inspection reads it back as the mlx_lm adapter it is.
    assert inspect_checkpoint(out) == MlxAdapterDir(
        path=str(out),
        base_model=str(base_dir),
        fine_tune_type="lora",
        rank=RANK,
        scale=ALPHA / RANK,
        num_layers=N_LAYERS,
        keys=("self_attn.q_proj", "self_attn.v_proj"),
        weights_file=str(out / "adapters.safetensors"),
        weight_bytes=(out / "adapters.safetensors").stat().st_size,
    )


def test_rslora_scales_by_the_square_root_of_the_rank(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    out = convert_peft_to_mlx(rewrite(peft_dir, use_rslora=True), base_config, tmp_path / "mlx")
    assert mlx_config(out)["lora_parameters"]["scale"] == ALPHA / math.sqrt(RANK)


def test_a_rank_pattern_that_gives_every_module_one_rank_is_that_rank(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    def rank_4(tensors: Tensors) -> Tensors:
        return {name: low_rank(name.split(".")[-2], 4, name) for name in tensors}

    adapter = rewrite(
        peft_dir, rank_4, rank_pattern={"q_proj": 4, "v_proj": 4}, alpha_pattern={"q_proj": ALPHA}
    )
    out = convert_peft_to_mlx(adapter, base_config, tmp_path / "mlx")

    parameters = mlx_config(out)["lora_parameters"]
    assert (parameters["rank"], parameters["scale"]) == (4, ALPHA / 4)


@pytest.mark.parametrize(
    ("layers", "base_layers", "num_layers"),
    [([1], 2, 1), ([2, 3], 4, 2), ([0, 1, 2, 3], 4, 4), ([3], 4, 1)],
)
def test_num_layers_counts_the_adapted_layers_back_from_the_last(
    peft_dir: Path,
    base_config: dict[str, Any],
    tmp_path: Path,
    layers: list[int],
    base_layers: int,
    num_layers: int,
) -> None:
    def on_layers(tensors: Tensors) -> Tensors:
        layer_0 = {
            name.removeprefix(f"{PREFIX}.0."): value for name, value in tensors.items() if ".0." in name
        }
        return {f"{PREFIX}.{layer}.{name}": value for layer in layers for name, value in layer_0.items()}

    config = {**base_config, "num_hidden_layers": base_layers}
    out = convert_peft_to_mlx(rewrite(peft_dir, on_layers), config, tmp_path / "mlx")

    # mlx_lm wraps model.layers[-num_layers:]
    assert mlx_config(out)["num_layers"] == num_layers
    assert {int(name.split(".")[2]) for name in load_file(out / "adapters.safetensors")} == set(layers)


def test_float16_stays_float16(peft_dir: Path, base_config: dict[str, Any], tmp_path: Path) -> None:
    def to_f16(tensors: Tensors) -> Tensors:
        return {name: value.astype(np.float16) for name, value in tensors.items()}

    adapter = rewrite(peft_dir, to_f16)
    out = convert_peft_to_mlx(adapter, base_config, tmp_path / "mlx")

    peft, mlx = load_file(adapter.weights_file), load_file(out / "adapters.safetensors")
    module = "model.layers.1.self_attn.v_proj"
    assert mlx[f"{module}.lora_a"].dtype == np.float16
    np.testing.assert_array_equal(mlx[f"{module}.lora_a"], peft[f"base_model.model.{module}.lora_A.weight"].T)
    np.testing.assert_array_equal(mlx[f"{module}.lora_b"], peft[f"base_model.model.{module}.lora_B.weight"].T)


def write_bf16_safetensors(path: Path, tensors: dict[str, npt.NDArray[np.float32]]) -> None:
    """Bfloat16 tensors (top 16 bits of each value) in a safetensors file, unwritable by safetensors.numpy."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, values in tensors.items():
        chunk = (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(values.shape),
            "data_offsets": [len(data), len(data) + len(chunk)],
        }
        data += chunk
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def test_bfloat16_is_widened_to_float32_exactly(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    weights = peft_dir / PEFT_WEIGHTS
    # Values a bfloat16 holds exactly: float32s with their low 16 bits cleared.
    truncated = {
        name: (value.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        for name, value in load_file(weights).items()
    }
    write_bf16_safetensors(weights, truncated)
    adapter = inspected(peft_dir)
    out = convert_peft_to_mlx(adapter, base_config, tmp_path / "mlx")

    mlx = load_file(out / "adapters.safetensors")
    module = "model.layers.0.self_attn.q_proj"
    assert mlx[f"{module}.lora_a"].dtype == np.float32
    np.testing.assert_array_equal(
        mlx[f"{module}.lora_a"], truncated[f"base_model.model.{module}.lora_A.weight"].T
    )
    np.testing.assert_array_equal(
        mlx[f"{module}.lora_b"], truncated[f"base_model.model.{module}.lora_B.weight"].T
    )


# --- writing and the cache ----------------------------------------------------------------------------


def test_a_failed_write_leaves_nothing_behind(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []

    def fsync_then_fail(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_then_fail)
    with pytest.raises(OSError, match="No space left"):
        convert_peft_to_mlx(inspected(peft_dir), base_config, tmp_path / "out" / "mlx")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_existing_adapter_dir_is_never_overwritten(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "mlx"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")

    with pytest.raises(OSError):
        convert_peft_to_mlx(inspected(peft_dir), base_config, out)
    assert sorted(path.name for path in out.iterdir()) == ["adapter_config.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lora", "mlx"]


def counting_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    converted: list[Path] = []
    convert = mlx_adapter.convert_peft_to_mlx

    def counted(adapter: PeftLoraDir, base_config: dict[str, Any], out_dir: Path) -> Path:
        converted.append(out_dir)
        return convert(adapter, base_config, out_dir)

    monkeypatch.setattr(mlx_adapter, "convert_peft_to_mlx", counted)
    return converted


def test_the_cache_converts_once(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = counting_conversions(monkeypatch)
    adapter = inspected(peft_dir)

    first = staged_mlx_adapter(adapter, base_config, tmp_path / "cache")
    written = (first / "adapters.safetensors").stat().st_mtime_ns
    again = staged_mlx_adapter(adapter, base_config, tmp_path / "cache")

    assert again == first
    assert converted == [first]
    assert (first / "adapters.safetensors").stat().st_mtime_ns == written
    assert first.parent == tmp_path / "cache" / "mlx-adapters"
    assert re.fullmatch("[0-9a-f]{16}", first.name)
    assert mlx_config(first)["num_layers"] == N_LAYERS


def test_the_cache_converts_again_when_the_adapter_or_its_base_changes(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = staged_mlx_adapter(inspected(peft_dir), base_config, cache)

    retrained = staged_mlx_adapter(
        rewrite(peft_dir, lambda tensors: {k: v * 2 for k, v in tensors.items()}), base_config, cache
    )
    rescaled = staged_mlx_adapter(rewrite(peft_dir, lora_alpha=32), base_config, cache)
    other_base = staged_mlx_adapter(inspected(peft_dir), {**base_config, "rope_theta": 5e5}, cache)

    assert len({first, retrained, rescaled, other_base}) == 4
    assert mlx_config(rescaled)["lora_parameters"]["scale"] == 32 / RANK


def test_a_conversion_finished_meanwhile_by_another_deploy_is_used(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = mlx_adapter.convert_peft_to_mlx

    def raced(adapter: PeftLoraDir, config: dict[str, Any], out_dir: Path) -> Path:
        convert(adapter, config, out_dir)  # the other deploy, done first
        return convert(adapter, config, out_dir)

    monkeypatch.setattr(mlx_adapter, "convert_peft_to_mlx", raced)
    staged = staged_mlx_adapter(inspected(peft_dir), base_config, tmp_path / "cache")

    assert mlx_config(staged)["num_layers"] == N_LAYERS
    assert [path.name for path in staged.parent.iterdir()] == [staged.name]


# --- refusals -----------------------------------------------------------------------------------------


def layer_1_v_proj_rank_4(tensors: Tensors) -> Tensors:
    module = f"{PREFIX}.1.self_attn.v_proj"
    return {
        **tensors,
        f"{module}.lora_A.weight": low_rank("lora_A", 4, module),
        f"{module}.lora_B.weight": low_rank("lora_B", 4, module),
    }


def adding(extra: dict[str, tuple[int, ...]]) -> Callable[[Tensors], Tensors]:
    def add(tensors: Tensors) -> Tensors:
        return {**tensors, **{name: np.zeros(shape, np.float32) for name, shape in extra.items()}}

    return add


def without(fragment: str) -> Callable[[Tensors], Tensors]:
    def drop(tensors: Tensors) -> Tensors:
        return {name: value for name, value in tensors.items() if fragment not in name}

    return drop


def in_float64(tensors: Tensors) -> Tensors:
    return {name: value.astype(np.float64) for name, value in tensors.items()}


REFUSALS: dict[str, tuple[Callable[[Tensors], Tensors] | None, dict[str, object], str]] = {
    "dora": (None, {"use_dora": True}, "DoRA"),
    "modules_to_save": (
        adding({"base_model.model.lm_head.modules_to_save.weight": (VOCAB, VLLM_EMBD)}),
        {"modules_to_save": ["lm_head"]},
        r"saves whole modules .*\(lm_head\)",
    ),
    "alpha_pattern": (None, {"alpha_pattern": {"v_proj": 32}}, "another lora_alpha"),
    "rank_pattern": (
        layer_1_v_proj_rank_4,
        {"rank_pattern": {"layers.1.self_attn.v_proj": 4}},
        r"ranks \[4, 8\]",
    ),
    "rank_not_r": (
        lambda tensors: {name: low_rank(name.split(".")[-2], 4, name) for name in tensors},
        {},
        "rank 4, but its config says r=8",
    ),
    "embedding_lora": (
        adding(
            {
                "base_model.model.model.embed_tokens.lora_embedding_A": (RANK, VOCAB),
                "base_model.model.model.embed_tokens.lora_embedding_B": (VLLM_EMBD, RANK),
            }
        ),
        {"target_modules": ["q_proj", "v_proj", "embed_tokens"]},
        "adapts an embedding",
    ),
    "lora_bias": (
        adding({f"{PREFIX}.0.self_attn.q_proj.lora_B.bias": (VLLM_EMBD,)}),
        {"lora_bias": True},
        "not a LoRA matrix",
    ),
    "outside_the_layers": (
        adding(
            {
                "base_model.model.lm_head.lora_A.weight": (RANK, VLLM_EMBD),
                "base_model.model.lm_head.lora_B.weight": (VOCAB, RANK),
            }
        ),
        {},
        r"adapts lm_head, outside the transformer layers",
    ),
    "not_a_suffix": (without(".1."), {}, r"adapts layers 0 of 0-1"),
    "different_modules_per_layer": (without("layers.0.self_attn.v_proj"), {}, "different modules"),
    "one_matrix_only": (without("layers.1.self_attn.q_proj.lora_B"), {}, "not both matrices"),
    "float64": (in_float64, {}, "F64"),
    "no_matrices": (lambda tensors: {}, {}, "holds no LoRA matrices"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refuses_what_mlx_lm_cannot_apply_as_peft_does(
    case: str, peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    tensors, config, reason = REFUSALS[case]
    adapter = rewrite(peft_dir, tensors, **config)

    with pytest.raises(DeployRefused, match=reason) as refused:
        convert_peft_to_mlx(adapter, base_config, tmp_path / "out" / "mlx")
    assert refused.value.status == 422
    assert not (tmp_path / "out").exists()


def test_refuses_pickled_weights(peft_dir: Path, base_config: dict[str, Any], tmp_path: Path) -> None:
    (peft_dir / PEFT_WEIGHTS).rename(peft_dir / "adapter_model.bin")
    with pytest.raises(DeployRefused, match="PyTorch pickle"):
        convert_peft_to_mlx(inspected(peft_dir), base_config, tmp_path / "mlx")


@pytest.mark.parametrize(
    ("base_layers", "reason"),
    [(1, "adapts layer 1, but its base model has 1 layers"), (None, "num_hidden_layers None"), ("2", "'2'")],
)
def test_refuses_a_base_that_does_not_fit(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path, base_layers: object, reason: str
) -> None:
    config = {**base_config, "num_hidden_layers": base_layers}
    with pytest.raises(DeployRefused, match=reason):
        convert_peft_to_mlx(inspected(peft_dir), config, tmp_path / "mlx")


def test_refuses_weights_damaged_after_inspection(
    peft_dir: Path, base_config: dict[str, Any], tmp_path: Path
) -> None:
    adapter = inspected(peft_dir)
    (peft_dir / PEFT_WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DeployRefused, match="not a valid safetensors file"):
        convert_peft_to_mlx(adapter, base_config, tmp_path / "mlx")
    (peft_dir / PEFT_WEIGHTS).unlink()
    with pytest.raises(DeployRefused, match="cannot read"):
        convert_peft_to_mlx(adapter, base_config, tmp_path / "mlx")
    with pytest.raises(DeployRefused, match="cannot read"):
        staged_mlx_adapter(adapter, base_config, tmp_path / "cache")


def test_a_refusal_is_not_cached(peft_dir: Path, base_config: dict[str, Any], tmp_path: Path) -> None:
    dora = msgspec.structs.replace(inspected(peft_dir), use_dora=True)
    with pytest.raises(DeployRefused):
        staged_mlx_adapter(dora, base_config, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
