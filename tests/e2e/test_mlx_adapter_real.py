"""End to end: a PEFT LoRA converted for mlx_lm gives, in mlx_lm itself, the logits of PEFT's math.

The oracle is the base model with PEFT's update merged into its weights by
hand (``W + alpha / r * B @ A``), loaded by mlx_lm without an adapter: the
same forward pass, so the logits agree to float32 rounding, while the plain
base's differ by about 1. Runs in-process on mlx's CPU backend (``mlx[cpu]``
on Linux); no server is started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load_file, save_file

from llamactl.deploy.checkpoint import inspect_checkpoint
from llamactl.deploy.checkpoint_kinds import PeftLoraDir
from llamactl.deploy.mlx_adapter import convert_peft_to_mlx
from tests.e2e.tiny_models import N_LAYERS, write_tiny_peft_lora, write_tiny_vllm_model

pytest.importorskip("mlx_lm", reason="mlx_lm (and mlx[cpu] on Linux) runs the converted adapter")

TOKENS = [5, 17, 42, 99, 3, 100, 7]
"""Any ids under the tiny vocabulary's 108: mlx gives NaN logits, not an error, for one outside it."""
TOLERANCE = 1e-4
ADAPTED = ("self_attn.q_proj", "self_attn.v_proj")
PEFT_PREFIX = "base_model.model."

Logits = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlx-adapter")


@pytest.fixture(scope="module")
def base_dir(work: Path) -> Path:
    return write_tiny_vllm_model(work / "base")


@pytest.fixture(scope="module")
def base_logits(base_dir: Path) -> Logits:
    return mlx_logits(base_dir)


def peft_adapter(directory: Path, base_dir: Path, layers: range) -> PeftLoraDir:
    """The tiny PEFT LoRA, kept on ``layers`` only."""
    write_tiny_peft_lora(directory, base_model=str(base_dir))
    weights = directory / "adapter_model.safetensors"
    kept = {
        name: value
        for name, value in load_file(weights).items()
        if any(f".layers.{layer}." in name for layer in layers)
    }
    save_file(kept, str(weights), metadata={"format": "pt"})
    adapter = inspect_checkpoint(directory)
    assert isinstance(adapter, PeftLoraDir)
    return adapter


def merged_base(base_dir: Path, adapter: PeftLoraDir, out_dir: Path) -> Path:
    """``base_dir`` with PEFT's update added to each adapted weight: what peft's merge_and_unload saves."""
    shutil.copytree(base_dir, out_dir)
    weights = load_file(base_dir / "model.safetensors")
    lora = load_file(adapter.weights_file)
    scale = adapter.lora_alpha / adapter.r
    for name, lora_a in lora.items():
        if not name.endswith(".lora_A.weight"):
            continue
        module = name.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
        lora_b = lora[name.replace(".lora_A.", ".lora_B.")]
        delta = scale * (lora_b.astype(np.float64) @ lora_a.astype(np.float64))
        weights[f"{module}.weight"] = (weights[f"{module}.weight"] + delta).astype(np.float32)
    save_file(weights, str(out_dir / "model.safetensors"))
    return out_dir


def mlx_logits(
    model_dir: Path, adapter_dir: Path | None = None, adapted: dict[int, set[str]] | None = None
) -> Logits:
    """mlx_lm's logits for TOKENS; ``adapted`` collects, per layer, the modules it wrapped in LoRALinear."""
    # After the importorskip above: mlx is optional on Linux.
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.tuner.lora import LoRALinear

    model = load(str(model_dir), adapter_path=None if adapter_dir is None else str(adapter_dir))[0]
    if adapted is not None:
        for layer, block in enumerate(model.layers):
            adapted[layer] = {
                name for name, module in block.named_modules() if isinstance(module, LoRALinear)
            }
    logits: mx.array = model(mx.array([TOKENS]))
    values: Logits = np.array(logits.astype(mx.float32))[0]
    return values


@pytest.mark.parametrize("layers", [range(N_LAYERS), range(1, N_LAYERS)], ids=["all-layers", "last-layer"])
def test_mlx_lm_with_the_converted_adapter_gives_the_logits_of_peft_merged_into_the_base(
    work: Path, base_dir: Path, base_logits: Logits, layers: range
) -> None:
    case = work / f"layers-{layers.start}-{layers.stop}"
    adapter = peft_adapter(case / "peft", base_dir, layers)
    base_config: dict[str, Any] = json.loads((base_dir / "config.json").read_text())
    converted = convert_peft_to_mlx(adapter, base_config, case / "mlx")

    adapted: dict[int, set[str]] = {}
    with_adapter = mlx_logits(base_dir, converted, adapted)
    merged = mlx_logits(merged_base(base_dir, adapter, case / "merged"))

    # num_layers and keys put the LoRA layers where PEFT's are, and nowhere else.
    assert adapted == {layer: set(ADAPTED) if layer in layers else set() for layer in range(N_LAYERS)}
    assert np.abs(with_adapter - merged).max() < TOLERANCE
    assert (with_adapter.argmax(axis=-1) == merged.argmax(axis=-1)).all()
    # ... and the adapter changes the answer: the comparison above is not of two plain bases.
    assert np.abs(with_adapter - base_logits).max() > 100 * TOLERANCE
