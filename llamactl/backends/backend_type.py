"""The backends llamactl knows, by the names the API and the config use."""

from enum import StrEnum


class BackendType(StrEnum):
    LLAMA_CPP = "llama_cpp"
    MLX_LM = "mlx_lm"
    VLLM = "vllm"
