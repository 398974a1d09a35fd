"""vLLM's ``vllm serve``."""

from pathlib import Path

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.options_base import BackendOptions
from llamactl.backends.vllm.options import VllmOptions


class VllmBackend(Backend):
    backend_type = BackendType.VLLM
    config_key = "vllm"
    program = "vllm serve"
    options_type = VllmOptions
    spec_path = Path(__file__).with_name("cli_spec.json")
    default_command = "vllm"
    default_args = ("serve",)
    launchers = (
        Launcher(words=("vllm", "serve")),
        Launcher(words=("serve",)),
        Launcher(words=("vllm.entrypoints.openai.api_server",), python_module=True),
        Launcher(words=("vllm.entrypoints.cli.main", "serve"), python_module=True),
    )

    def build_docker_arguments(self, options: BackendOptions) -> list[str]:
        # The vllm-openai image runs the API server module, which takes the model as --model.
        arguments = self.build_arguments(options)
        if isinstance(options, VllmOptions) and options.model is not None:
            return ["--model", *arguments]
        return arguments

    def served_model_name(self, options: BackendOptions) -> str | None:
        # vLLM answers only to its first --served-model-name, else to the model it loaded.
        assert isinstance(options, VllmOptions)
        if options.served_model_name:
            return options.served_model_name[0]
        return options.model
