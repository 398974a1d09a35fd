"""llama.cpp's ``llama-server``."""

from pathlib import Path

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.llama_cpp.options import LlamaCppOptions
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
