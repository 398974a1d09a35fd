"""vLLM's ``vllm serve``."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

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
    export_targets = ("vllm",)
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
        # vLLM serves each adapter under its name as a model of its own.
        return [module["name"] for entry in _lora_modules(options) for module in entry]

    def adapter_paths(self, options: BackendOptions) -> list[str]:
        return [module["path"] for entry in _lora_modules(options) for module in entry if "path" in module]

    def with_adapter_paths(self, options: BackendOptions, moved: Mapping[str, str]) -> BackendOptions:
        # Each entry keeps its form: 'name=path' stays so, JSON stays JSON.
        assert isinstance(options, VllmOptions)
        entries = []
        for entry, modules in zip(options.lora_modules or [], _lora_modules(options), strict=True):
            if not entry.strip().startswith(("{", "[")):
                name, _, path = entry.partition("=")
                entries.append(f"{name}={moved.get(path, path)}")
                continue
            for module in modules:
                module["path"] = moved.get(module.get("path", ""), module.get("path", ""))
            entries.append(json.dumps(modules[0] if len(modules) == 1 else modules))
        return msgspec.structs.replace(options, lora_modules=entries or options.lora_modules)


def _lora_modules(options: BackendOptions) -> list[list[dict[str, Any]]]:
    """Each --lora-modules entry's adapters: 'name=path', a JSON object or a JSON list of them.

    An entry vLLM would refuse at start-up (and say why) has none.
    """
    assert isinstance(options, VllmOptions)
    modules: list[list[dict[str, Any]]] = []
    for entry in options.lora_modules or []:
        text = entry.strip()
        if not text.startswith(("{", "[")):
            name, _, path = text.partition("=")
            modules.append([{"name": name, "path": path}])
            continue
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            modules.append([])
            continue
        listed = parsed if isinstance(parsed, list) else [parsed]
        modules.append([m for m in listed if isinstance(m, dict) and isinstance(m.get("name"), str)])
    return modules
