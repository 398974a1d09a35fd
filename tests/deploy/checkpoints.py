"""Checkpoint kinds as ``inspect_checkpoint`` reports them, with made-up paths: no files behind them."""

from __future__ import annotations

from llamactl.deploy.checkpoint_kinds import (
    GgufLoraFile,
    GgufModelFile,
    HfModelDir,
    MlxAdapterDir,
    PeftLoraDir,
)

HF_DIR = "/runs/llama-sft/final"
GGUF = "/models/my-finetune.Q8_0.gguf"
GGUF_LORA = "/models/my-lora.gguf"
PEFT_DIR = "/runs/lora-sft"
MLX_ADAPTER_DIR = "/runs/mlx-adapters"
BASE_REPO = "meta-llama/Llama-3.2-1B-Instruct"
MLX_BASE_REPO = "mlx-community/Llama-3.2-1B-Instruct-4bit"


def hf_dir(path: str = HF_DIR, mlx: bool = False) -> HfModelDir:
    return HfModelDir(
        path=path,
        architecture="LlamaForCausalLM",
        model_type="llama",
        dtype="bfloat16",
        weight_dtypes=("U32", "BF16") if mlx else ("BF16",),
        context_length=131072,
        mlx=mlx,
        mlx_quantization=None,
        quant_method=None,
        weight_files=("model.safetensors",),
        weight_bytes=2_471_645_608,
    )


def gguf_model(path: str = GGUF) -> GgufModelFile:
    return GgufModelFile(
        path=path,
        architecture="llama",
        name="My Finetune",
        quantization="Q8_0",
        context_length=131072,
        parameters=1_235_814_432,
        chat_template=True,
        file_bytes=1_321_083_104,
    )


def gguf_lora(path: str = GGUF_LORA) -> GgufLoraFile:
    return GgufLoraFile(
        path=path, architecture="llama", adapter_type="lora", lora_alpha=16.0, file_bytes=22_593_440
    )


def peft_lora(
    path: str = PEFT_DIR,
    base_model: str | None = BASE_REPO,
    r: int = 8,
    rank_pattern: dict[str, int] | None = None,
    use_dora: bool = False,
) -> PeftLoraDir:
    return PeftLoraDir(
        path=path,
        base_model=base_model,
        r=r,
        lora_alpha=16.0,
        target_modules=("q_proj", "v_proj"),
        task_type="CAUSAL_LM",
        use_dora=use_dora,
        use_rslora=False,
        rank_pattern=rank_pattern or {},
        alpha_pattern={},
        modules_to_save=None,
        weights_file=f"{path}/adapter_model.safetensors",
        weights_format="safetensors",
        weight_bytes=3_424_728,
    )


def mlx_adapter(path: str = MLX_ADAPTER_DIR, base_model: str | None = MLX_BASE_REPO) -> MlxAdapterDir:
    return MlxAdapterDir(
        path=path,
        base_model=base_model,
        fine_tune_type="lora",
        rank=8,
        scale=20.0,
        num_layers=16,
        keys=None,
        weights_file=f"{path}/adapters.safetensors",
        weight_bytes=1_703_936,
    )
