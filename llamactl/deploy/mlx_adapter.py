"""A PEFT LoRA as an mlx_lm adapter dir, converted in-process: transposed, renamed, one scale.

mlx_lm 0.32's ``load_adapters`` (``mlx_lm/tuner/utils.py``) reads
``adapter_config.json``; its ``linear_to_lora_layers`` wraps the modules named
by ``lora_parameters.keys`` (paths relative to a layer) in each of the last
``num_layers`` of ``model.layers`` in a ``LoRALinear`` (``tuner/lora.py``),
which adds ``scale * (x @ lora_a) @ lora_b`` with ``lora_a`` (in, r) and
``lora_b`` (r, out). PEFT's layer adds ``alpha / r * x @ A.T @ B.T`` with
``lora_A`` (r, in) and ``lora_B`` (out, r). So ``lora_a = A.T``,
``lora_b = B.T`` and ``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).

mlx_lm's format has one rank and one scale, and one set of modules on a
suffix of the layers: an adapter it cannot say (per-module ranks or alphas,
DoRA, embedding LoRAs, whole saved modules, layers elsewhere) is refused,
never approximated.

numpy and safetensors are imported where they are used: they come with the
``mlx`` extra (mlx-lm needs both), not with llamactl itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from llamactl.deploy.checkpoint_dir import MLX_ADAPTER_WEIGHTS
from llamactl.deploy.checkpoint_files import ADAPTER_CONFIG
from llamactl.deploy.checkpoint_kinds import PeftLoraDir
from llamactl.deploy.content_key import content_key
from llamactl.deploy.plan import DeployRefused

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Tensor = npt.NDArray[np.floating[Any]]

CACHE_SUBDIR = "mlx-adapters"
KEY_HEX_DIGITS = 16

_PEFT_TENSOR = re.compile(r"base_model\.model\.(?P<module>.+)\.(?P<matrix>lora_A|lora_B)\.weight")
# The layers as both transformers and mlx_lm name them for llama and the models built like it (mistral,
# qwen, gemma, phi3...). mlx_lm checks every tensor name against its model when it loads an adapter, so
# a model whose mlx_lm names differ fails there, loudly, rather than loading half an adapter.
_LAYER_MODULE = re.compile(r"model\.layers\.(?P<layer>\d+)\.(?P<key>.+)")


class _LoraParameters(msgspec.Struct, frozen=True, kw_only=True):
    rank: int
    scale: float
    """Applied as it is: mlx_lm does not divide it by the rank."""
    dropout: float
    """Required by mlx_lm (``config["dropout"]``), though it only matters in training."""
    keys: list[str]


class _AdapterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The ``adapter_config.json`` written: every key ``load_adapters`` reads, none of them optional.

    ``checkpoint_files.MlxAdapterConfig`` reads one that mlx_lm.lora wrote, where all are optional.
    """

    fine_tune_type: Literal["lora"] = "lora"
    model: str | None
    """The base model the PEFT config names, as mlx_lm.lora records the one it trained."""
    num_layers: int
    lora_parameters: _LoraParameters


@dataclass(frozen=True)
class _Module:
    """One adapted module: its layer, its path inside the layer, and PEFT's two matrices."""

    layer: int
    key: str
    lora_a: Tensor
    """PEFT's ``lora_A`` (r, in)."""
    lora_b: Tensor
    """PEFT's ``lora_B`` (out, r)."""


def convert_peft_to_mlx(adapter: PeftLoraDir, base_config: dict[str, Any], out_dir: Path) -> Path:
    """Write ``adapter`` as the mlx_lm adapter dir ``out_dir`` (which must not exist yet); returns it.

    ``base_config`` is the base model's ``config.json``. ``DeployRefused`` says why an adapter cannot be
    converted faithfully; nothing is written then.
    """
    _refuse_unconvertible_config(adapter)
    modules = _peft_modules(adapter)
    rank = _one_rank(adapter, modules)
    layer_count = _layer_count(adapter, base_config)
    num_layers = _adapted_suffix(adapter, modules, layer_count)
    keys = _one_key_set(adapter, modules)
    config = _AdapterConfig(
        model=adapter.base_model,
        num_layers=num_layers,
        lora_parameters=_LoraParameters(
            rank=rank,
            scale=adapter.lora_alpha / (math.sqrt(rank) if adapter.use_rslora else rank),
            dropout=0.0,
            keys=sorted(keys),
        ),
    )
    _write_dir(
        out_dir,
        {
            MLX_ADAPTER_WEIGHTS: _mlx_weights(modules),
            ADAPTER_CONFIG: msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n",
        },
    )
    return out_dir


def staged_mlx_adapter(adapter: PeftLoraDir, base_config: dict[str, Any], cache_dir: Path) -> Path:
    """``adapter`` as an mlx_lm adapter dir, converted once into ``cache_dir/mlx-adapters/<key>``.

    The key is the sha256 of what the conversion reads, so a changed adapter converts again.
    """
    staged = cache_dir / CACHE_SUBDIR / _cache_key(adapter, base_config)
    # Dirs there only ever appear whole, by the rename in _write_dir.
    if staged.is_dir():
        return staged
    try:
        return convert_peft_to_mlx(adapter, base_config, staged)
    except OSError:
        if staged.is_dir():
            return staged  # another deploy converted the same adapter meanwhile
        raise


def _cache_key(adapter: PeftLoraDir, base_config: dict[str, Any]) -> str:
    parts: list[tuple[str, str | Path]] = [
        ("weights", Path(adapter.weights_file)),
        ("config", Path(adapter.path) / ADAPTER_CONFIG),
        # The base decides num_layers (how many layers "all of them" is).
        ("base", json.dumps(base_config, sort_keys=True)),
    ]
    return content_key(parts)[:KEY_HEX_DIGITS]


def _refuse_unconvertible_config(adapter: PeftLoraDir) -> None:
    where = adapter.path
    if adapter.weights_format == "bin":
        raise DeployRefused(
            f"{where} keeps its weights in {Path(adapter.weights_file).name}, a PyTorch pickle, which "
            "llamactl does not unpickle (it can run code): save the adapter again with "
            "save_pretrained(..., safe_serialization=True) to get adapter_model.safetensors"
        )
    if adapter.use_dora:
        raise DeployRefused(
            f"{where} is a DoRA adapter (use_dora), which llamactl does not convert for mlx_lm (nor does "
            "vLLM serve one): merge it into its base model and serve that"
        )
    if adapter.modules_to_save:
        raise DeployRefused(
            f"{where} saves whole modules beside its LoRA ({', '.join(adapter.modules_to_save)}), which an "
            "mlx_lm adapter cannot carry: merge the adapter into its base and serve that"
        )
    other_alphas = sorted({alpha for alpha in adapter.alpha_pattern.values() if alpha != adapter.lora_alpha})
    if other_alphas:
        raise DeployRefused(
            f"{where} gives some modules another lora_alpha (alpha_pattern: {adapter.alpha_pattern}), but "
            "mlx_lm applies one scale to every module: serve it with vLLM, or merge it into its base"
        )


def _peft_modules(adapter: PeftLoraDir) -> list[_Module]:
    """The adapter's modules in file order, each with both matrices; refused if anything else is saved."""
    matrices: dict[str, dict[str, Tensor]] = {}
    for name, tensor in _read_tensors(Path(adapter.weights_file)).items():
        if ".lora_embedding_" in name:
            raise DeployRefused(
                f"{adapter.path} adapts an embedding ({name}), which mlx_lm's LoRA layers do not take "
                "from peft: merge the adapter into its base and serve that"
            )
        match = _PEFT_TENSOR.fullmatch(name)
        if match is None:
            raise DeployRefused(
                f"{adapter.path} holds {name}, which is not a LoRA matrix (a bias or a saved module?): "
                "an mlx_lm adapter holds only lora_a and lora_b, so merge the adapter into its base"
            )
        matrices.setdefault(match["module"], {})[match["matrix"]] = tensor
    modules: list[_Module] = []
    for path, pair in matrices.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise DeployRefused(f"{adapter.path} has {', '.join(pair)} but not both matrices for {path}")
        in_layer = _LAYER_MODULE.fullmatch(path)
        if in_layer is None:
            raise DeployRefused(
                f"{adapter.path} adapts {path}, outside the transformer layers (model.layers.N): llamactl "
                "converts LoRAs on a llama-style model's layers only; serve it with vLLM, or merge it into "
                "its base"
            )
        lora_a, lora_b = pair["lora_A"], pair["lora_B"]
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
            raise DeployRefused(
                f"{adapter.path}: {path} has lora_A {lora_a.shape} and lora_B {lora_b.shape}, not the "
                "(r, in) and (out, r) of a LoRA on a linear layer"
            )
        modules.append(_Module(int(in_layer["layer"]), in_layer["key"], lora_a, lora_b))
    if not modules:
        raise DeployRefused(f"{adapter.path} holds no LoRA matrices")
    return modules


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The file's tensors, in the dtype they were saved in; bfloat16 widened exactly to float32.

    numpy has no bfloat16, so safetensors.numpy cannot read one, yet trainers often save adapters so.
    A bfloat16 is the top half of a float32: shifted up 16 bits it is that float32 exactly, without
    importing torch (not installed beside mlx_lm). So safetensors' own parser gives the raw bytes.
    """
    try:
        import numpy as np
        from safetensors import SafetensorError, deserialize
    except ImportError as error:
        raise DeployRefused(
            f"converting a PEFT LoRA for mlx_lm needs numpy and safetensors ({error}): install them, or "
            "llamactl's mlx extra"
        ) from None
    try:
        data = path.read_bytes()
        # deserialize is untyped in safetensors' stubs; it gives (name, {dtype, shape, data}) pairs.
        raw: list[tuple[str, dict[str, Any]]] = deserialize(data)  # type: ignore[no-untyped-call]
    except OSError as error:
        raise DeployRefused(f"cannot read {path}: {error}") from None
    except SafetensorError as error:
        raise DeployRefused(f"{path} is not a valid safetensors file: {error}") from None
    tensors: dict[str, Tensor] = {}
    for name, view in raw:
        dtype, shape, buffer = view["dtype"], view["shape"], view["data"]
        if dtype == "BF16":
            halves = np.frombuffer(buffer, dtype="<u2").astype(np.uint32)
            tensors[name] = (halves << 16).view(np.float32).reshape(shape)
        elif dtype in ("F32", "F16"):
            tensors[name] = np.frombuffer(buffer, dtype="<f4" if dtype == "F32" else "<f2").reshape(shape)
        else:
            raise DeployRefused(f"{path}: {name} is {dtype}, not a float32, float16 or bfloat16 LoRA matrix")
    return tensors


def _one_rank(adapter: PeftLoraDir, modules: list[_Module]) -> int:
    """The rank every module has, read off the matrices (what peft's rank_pattern made of them)."""
    ranks = {int(module.lora_a.shape[0]) for module in modules}
    if len(ranks) > 1:
        raise DeployRefused(
            f"{adapter.path} has modules of ranks {sorted(ranks)} (rank_pattern), but mlx_lm gives every "
            "module one rank: serve it with vLLM, or merge it into its base"
        )
    (rank,) = ranks
    # Without a rank_pattern peft builds every module at r, and would not load matrices of another rank.
    if rank != adapter.r and not adapter.rank_pattern:
        raise DeployRefused(
            f"{adapter.path}: its matrices have rank {rank}, but its config says r={adapter.r}"
        )
    return rank


def _layer_count(adapter: PeftLoraDir, base_config: dict[str, Any]) -> int:
    layers = base_config.get("num_hidden_layers")
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise DeployRefused(
            f"the base model of {adapter.path} says num_hidden_layers {layers!r} in its config.json: "
            "cannot tell which of its layers the adapter covers"
        )
    return layers


def _adapted_suffix(adapter: PeftLoraDir, modules: list[_Module], layer_count: int) -> int:
    """``num_layers``: how many of the last layers are adapted, which must be all the adapted ones.

    mlx_lm adapts ``model.layers[-max(num_layers, 0):]`` and nothing else, so only an adapter on a
    contiguous run of layers ending at the last one can be said. The count is at least 1 (an empty
    adapter is refused earlier): ``[-0:]`` would be every layer.
    """
    layers = sorted({module.layer for module in modules})
    if layers[-1] >= layer_count:
        raise DeployRefused(
            f"{adapter.path} adapts layer {layers[-1]}, but its base model has {layer_count} layers "
            "(num_hidden_layers): it was trained on another base"
        )
    first = layer_count - len(layers)
    if layers != list(range(first, layer_count)):
        raise DeployRefused(
            f"{adapter.path} adapts layers {_ranges(layers)} of 0-{layer_count - 1}, but mlx_lm adapts a run "
            "of layers ending at the last one: serve it with vLLM, or merge it into its base"
        )
    return len(layers)


def _one_key_set(adapter: PeftLoraDir, modules: list[_Module]) -> set[str]:
    """The module paths inside a layer, which must be the same in every adapted layer."""
    by_layer: dict[int, set[str]] = {}
    for module in modules:
        by_layer.setdefault(module.layer, set()).add(module.key)
    key_sets = {frozenset(keys) for keys in by_layer.values()}
    if len(key_sets) > 1:
        found = "; ".join(
            f"layer {layer}: {', '.join(sorted(keys))}" for layer, keys in sorted(by_layer.items())
        )
        raise DeployRefused(
            f"{adapter.path} adapts different modules in different layers ({found}), but mlx_lm adapts "
            "the same modules in every adapted layer: serve it with vLLM, or merge it into its base"
        )
    return set(next(iter(key_sets)))


def _mlx_weights(modules: list[_Module]) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    tensors: dict[str, Tensor] = {}
    for module in modules:
        prefix = f"model.layers.{module.layer}.{module.key}"
        # safetensors.numpy writes an array's memory as it lies, so a transposed view is copied first.
        tensors[f"{prefix}.lora_a"] = np.ascontiguousarray(module.lora_a.T)
        tensors[f"{prefix}.lora_b"] = np.ascontiguousarray(module.lora_b.T)
    # What mlx's own save_safetensors writes.
    return save(tensors, metadata={"format": "mlx"})


def _write_dir(out_dir: Path, files: dict[str, bytes]) -> None:
    """``out_dir`` holding ``files``, or nothing at all: written beside it, synced, renamed into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", suffix=".partial", dir=out_dir.parent))
    try:
        for name, content in files.items():
            with open(partial / name, "wb") as file:
                file.write(content)
                # Before the rename, so a crash cannot leave the dir in place with its files' data lost.
                os.fsync(file.fileno())
        # Fails if out_dir exists and is not empty: an adapter already there is never replaced half-way.
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _ranges(numbers: list[int]) -> str:
    """Sorted numbers as runs: ``0-3, 7, 9-10``."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
