"""vLLM's ``vllm serve``."""

import json
from pathlib import Path
from typing import Any

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.memory_inputs import MemoryInputs
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
    context_probe = "/v1/models"
    metrics_path = "/metrics"
    reports_stream_usage = True
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

    def memory_inputs(self, options: BackendOptions) -> MemoryInputs | None:
        assert isinstance(options, VllmOptions)
        if not options.model:
            return None
        length = options.max_model_len
        # vLLM sets its KV cache aside at start: a given size is what it takes, whatever the context.
        kv_bytes = options.kv_cache_memory_bytes
        return MemoryInputs(
            model_path=options.model,
            context=length if isinstance(length, int) and length > 0 else None,
            kv_cache_bytes=int(kv_bytes) if kv_bytes is not None and kv_bytes.isdigit() else None,
        )

    def served_context(self, document: Any) -> int | None:
        # Each model vLLM serves carries its max_model_len; the first is the one it loaded.
        models = document.get("data") if isinstance(document, dict) else None
        first = models[0] if isinstance(models, list) and models else None
        length = first.get("max_model_len") if isinstance(first, dict) else None
        return length if type(length) is int and length > 0 else None

    def adapter_names(self, options: BackendOptions) -> list[str]:
        # Each --lora-modules entry is 'name=path', a JSON object or a JSON list of them;
        # vLLM serves each adapter under its name as a model of its own.
        assert isinstance(options, VllmOptions)
        names = []
        for entry in options.lora_modules or []:
            text = entry.strip()
            if not text.startswith(("{", "[")):
                names.append(text.partition("=")[0])
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                continue  # vLLM refuses it at start-up and says why
            for module in parsed if isinstance(parsed, list) else [parsed]:
                if isinstance(module, dict) and isinstance(module.get("name"), str):
                    names.append(module["name"])
        return names
