"""llama.cpp's ``llama-server``."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from llamactl.backends.adapter import AdapterRequest, Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.launcher import Launcher
from llamactl.backends.llama_cpp.memory_report import parse_memory_report
from llamactl.backends.llama_cpp.options import LlamaCppOptions
from llamactl.backends.memory_inputs import MemoryInputs
from llamactl.backends.model_files import ModelFiles
from llamactl.backends.options_base import BackendOptions

MEMORY_REPORT_VERBOSITY = 4
AUTO_PARALLEL = 4
"""The slots llama-server makes with -np -1 (its default, 'auto')."""


# Ollama's params (api/types.go Options) that llama-server has a flag for, and that flag's option.
# Sampling ones become llama-server's defaults for requests that do not set them.
OLLAMA_PARAMS = {
    "num_ctx": "ctx_size",
    "num_batch": "batch_size",
    "num_thread": "threads",
    "num_gpu": "gpu_layers",
    "num_predict": "predict",
    "seed": "seed",
    "temperature": "temp",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical",
    "repeat_last_n": "repeat_last_n",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat",
    "mirostat_eta": "mirostat_lr",
    "mirostat_tau": "mirostat_ent",
}


class LlamaCppBackend(Backend):
    backend_type = BackendType.LLAMA_CPP
    config_key = "llama-cpp"
    program = "llama-server"
    options_type = LlamaCppOptions
    spec_path = Path(__file__).with_name("cli_spec.json")
    default_command = "llama-server"
    launchers = (Launcher(words=("llama-server",)),)
    # Its context as it runs: --fit may have lowered an unset -c to fit the machine.
    context_probe = "/props"
    metrics_path = "/metrics"
    reports_stream_usage = True
    export_targets = ("llama-server", "ollama")

    def served_model_name(self, options: BackendOptions) -> str | None:
        # llama-server lists its first --alias (else the model path) in /v1/models.
        assert isinstance(options, LlamaCppOptions)
        if options.alias:
            return options.alias.split(",")[0]
        return options.model

    def options_for_model(self, files: ModelFiles) -> BackendOptions:
        options: dict[str, Any] = {
            option: files.defaults[param]
            for param, option in OLLAMA_PARAMS.items()
            if param in files.defaults
        }
        options["model"] = files.model_path
        if files.projector_path is not None:
            options["mmproj"] = files.projector_path
        if files.adapter_paths:
            options["lora"] = list(files.adapter_paths)
        # The GGUF's own Jinja chat template (Ollama's template layer is Go's text/template, never passed).
        options["jinja"] = True
        return self.options_from_json(options)

    def adapter_names(self, options: BackendOptions) -> list[str]:
        # Each adapter file by its name without .gguf, in llama-server's order (its adapter ids).
        return [_adapter_name(path) for path, _ in _adapters(options)]

    def adapter_request(self, options: BackendOptions, adapter: str | None) -> AdapterRequest:
        # llama-server serves one model; a request picks its adapters with per-request scales,
        # and those it leaves out run at 0 for that request.
        adapters = _adapters(options)
        if not adapters:
            return AdapterRequest()
        # b10434 reuses a slot's cached prompt whatever scales computed it, so the base asked after an
        # adapter (or the reverse) would answer from the other's KV: no request reuses another's.
        uncached: dict[str, Any] = {"cache_prompt": False}
        if adapter is None:
            return AdapterRequest(members=uncached)
        index = [_adapter_name(path) for path, _ in adapters].index(adapter)
        scale = adapters[index][1] or 1.0  # loaded at 0 (--lora-scaled FILE:0): applied when asked for
        return AdapterRequest(members={"lora": [{"id": index, "scale": scale}], **uncached})

    def adapter_paths(self, options: BackendOptions) -> list[str]:
        return [path for path, _ in _adapters(options)]

    def with_adapter_paths(self, options: BackendOptions, moved: Mapping[str, str]) -> BackendOptions:
        assert isinstance(options, LlamaCppOptions)

        def scaled(item: str) -> str:
            path, colon, scale = item.rpartition(":")
            return f"{moved.get(path, path)}:{scale}" if colon and path else moved.get(item, item)

        lora = [",".join(moved.get(path, path) for path in entry.split(",")) for entry in options.lora or []]
        lora_scaled = [",".join(map(scaled, entry.split(","))) for entry in options.lora_scaled or []]
        return msgspec.structs.replace(
            options, lora=lora or options.lora, lora_scaled=lora_scaled or options.lora_scaled
        )

    def ollama_parameters(self, options: BackendOptions) -> list[tuple[str, str]]:
        # The reverse of options_for_model's mapping; a gpu_layers of "auto" or "all" has no number.
        values = msgspec.structs.asdict(options)
        parameters = [
            (param, json.dumps(values[option]))
            for param, option in OLLAMA_PARAMS.items()
            if isinstance(values[option], int | float) and not isinstance(values[option], bool)
        ]
        assert isinstance(options, LlamaCppOptions)
        return parameters + [("stop", json.dumps(stop)) for stop in options.reverse_prompt or []]

    def memory_inputs(self, options: BackendOptions) -> MemoryInputs | None:
        assert isinstance(options, LlamaCppOptions)
        if not options.model:
            return None  # -hf and -mu models are fetched at start: nothing to read yet
        adapters = [path for path, _ in _adapters(options)]
        return MemoryInputs(
            model_path=options.model,
            # -c 0 (the default) is the model's training context; -np slots share it.
            context=options.ctx_size or None,
            cache_type_k=options.cache_type_k or "f16",
            cache_type_v=options.cache_type_v or "f16",
            # 'auto' turns flash attention on where the device has it (every CPU).
            flash_attention=options.flash_attn != "off",
            ubatch=options.ubatch_size or 512,
            parallel=options.parallel if options.parallel and options.parallel > 0 else AUTO_PARALLEL,
            extra_files=tuple([options.mmproj] if options.mmproj else []) + tuple(adapters),
        )

    def launch_options(self, options: BackendOptions, expose_metrics: bool = False) -> BackendOptions:
        assert isinstance(options, LlamaCppOptions)
        if expose_metrics and options.metrics is None:
            options = msgspec.structs.replace(options, metrics=True)  # /metrics is off by default
        if options.verbosity is not None or options.verbose or options.log_disable:
            return options  # the user's choice; the memory report is then missing
        # Level 4 is the lowest at which llama-server prints its buffer sizes (as Ollama starts it).
        return msgspec.structs.replace(options, verbosity=MEMORY_REPORT_VERBOSITY)

    def served_context(self, document: Any) -> int | None:
        settings = document.get("default_generation_settings") if isinstance(document, dict) else None
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        return n_ctx if type(n_ctx) is int and n_ctx > 0 else None

    def reported_memory_bytes(self, startup_lines: Sequence[str]) -> int | None:
        # Its buffer sizes (model, KV cache, compute, output), which Ollama reads instead of estimating.
        report = parse_memory_report(startup_lines)
        return None if report is None else report.total_bytes


def _adapters(options: BackendOptions) -> list[tuple[str, float]]:
    """The LoRA files and their scales, in the order llama-server numbers them: --lora, then --lora-scaled.

    --lora takes several files comma-separated; --lora-scaled entries are FILE:SCALE.
    """
    assert isinstance(options, LlamaCppOptions)
    adapters = [(path, 1.0) for entry in options.lora or [] for path in entry.split(",") if path]
    for entry in options.lora_scaled or []:
        for item in filter(None, entry.split(",")):
            path, _, scale = item.rpartition(":")
            try:
                adapters.append((path, float(scale)) if path else (item, 1.0))
            except ValueError:
                adapters.append((item, 1.0))  # llama-server refuses it at start-up and says why
    return adapters


def _adapter_name(path: str) -> str:
    return Path(path).name.removesuffix(".gguf")
