"""Apple MLX's ``mlx_lm.server``."""

from collections.abc import Mapping
from pathlib import Path

import msgspec

from llamactl.backends.adapter import AdapterRequest, Backend, ReadinessProbe
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.memory_inputs import MemoryInputs
from llamactl.backends.mlx_lm.options import MlxLmOptions
from llamactl.backends.model_files import ModelFiles
from llamactl.backends.options_base import BackendOptions

# mlx_lm.server names the model it was started with "default_model"; any other
# name makes it load that model from the Hugging Face hub.
DEFAULT_MODEL = "default_model"


class MlxLmBackend(Backend):
    backend_type = BackendType.MLX_LM
    config_key = "mlx"
    program = "mlx_lm.server"
    options_type = MlxLmOptions
    spec_path = Path(__file__).with_name("cli_spec.json")
    default_command = "mlx_lm.server"
    launchers = (
        Launcher(words=("mlx_lm.server",)),
        Launcher(words=("mlx_lm", "server")),
        Launcher(words=("mlx_lm.server",), python_module=True),
        Launcher(words=("mlx_lm", "server"), python_module=True),
    )
    # /health answers 200 before the model is loaded; a one-token completion
    # only succeeds once it is.
    readiness_probe = ReadinessProbe(
        path="/v1/completions",
        method="POST",
        json_body={"model": DEFAULT_MODEL, "prompt": "ping", "max_tokens": 1},
    )
    export_targets = ("mlx-serve",)

    def served_model_name(self, options: BackendOptions) -> str | None:
        return DEFAULT_MODEL

    def adapter_names(self, options: BackendOptions) -> list[str]:
        assert isinstance(options, MlxLmOptions)
        return [Path(options.adapter_path).name] if options.adapter_path else []

    def adapter_paths(self, options: BackendOptions) -> list[str]:
        assert isinstance(options, MlxLmOptions)
        return [options.adapter_path] if options.adapter_path else []

    def with_adapter_paths(self, options: BackendOptions, moved: Mapping[str, str]) -> BackendOptions:
        assert isinstance(options, MlxLmOptions)
        if options.adapter_path is None:
            return options
        return msgspec.structs.replace(
            options, adapter_path=moved.get(options.adapter_path, options.adapter_path)
        )

    def adapter_request(self, options: BackendOptions, adapter: str | None) -> AdapterRequest:
        # Its one adapter is always applied: the request names the model, never the adapter, since any
        # name but default_model makes mlx_lm.server load that name from the hub.
        return AdapterRequest()

    def options_for_model(self, files: ModelFiles) -> BackendOptions:
        # mlx_lm.server loads one adapter; a second would need merging first.
        adapter = {"adapter_path": files.adapter_paths[0]} if files.adapter_paths else {}
        return self.options_from_json({"model": files.model_path, **adapter})

    def memory_inputs(self, options: BackendOptions) -> MemoryInputs | None:
        assert isinstance(options, MlxLmOptions)
        if not options.model:
            return None
        # mlx_lm grows its cache as a conversation does: the model's context is the bound.
        extra = (options.adapter_path,) if options.adapter_path else ()
        return MemoryInputs(model_path=options.model, extra_files=extra)
