"""llama.cpp's ``llama-server``."""

from pathlib import Path

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.llama_cpp.options import LlamaCppOptions
from llamactl.backends.memory_inputs import MemoryInputs
from llamactl.backends.options_base import BackendOptions


class LlamaCppBackend(Backend):
    backend_type = BackendType.LLAMA_CPP
    config_key = "llama-cpp"
    program = "llama-server"
    options_type = LlamaCppOptions
    spec_path = Path(__file__).with_name("cli_spec.json")
    default_command = "llama-server"
    launchers = (Launcher(words=("llama-server",)),)

    def served_model_name(self, options: BackendOptions) -> str | None:
        # llama-server lists its first --alias (else the model path) in /v1/models.
        assert isinstance(options, LlamaCppOptions)
        if options.alias:
            return options.alias.split(",")[0]
        return options.model

    def memory_inputs(self, options: BackendOptions) -> MemoryInputs | None:
        assert isinstance(options, LlamaCppOptions)
        if not options.model:
            return None  # -hf and -mu models are fetched at start: nothing to read yet
        # --lora takes several files comma-separated; --lora-scaled entries are FILE:SCALE.
        adapters = [f for entry in options.lora or [] for f in entry.split(",") if f]
        adapters += [entry.rpartition(":")[0] or entry for entry in options.lora_scaled or []]
        return MemoryInputs(
            model_path=options.model,
            # -c 0 (the default) is the model's training context; -np slots share it.
            context=options.ctx_size or None,
            cache_type_k=options.cache_type_k or "f16",
            cache_type_v=options.cache_type_v or "f16",
            # 'auto' turns flash attention on where the device has it (every CPU).
            flash_attention=options.flash_attn != "off",
            ubatch=options.ubatch_size or 512,
            extra_files=tuple([options.mmproj] if options.mmproj else []) + tuple(adapters),
        )
