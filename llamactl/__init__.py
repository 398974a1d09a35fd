"""llamactl: one control plane for llama.cpp, MLX and vLLM servers."""

__version__ = "0.1.0"
