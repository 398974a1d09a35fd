"""What the rest of llamactl knows about a backend: the ``Backend`` adapter.

Each backend package subclasses ``Backend`` with its own data (executable,
launchers, readiness probe) and the few behaviours that differ (the model name
it serves). Everything outside ``llamactl.backends`` goes through this surface
and never switches on the backend type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, cast

import msgspec

from llamactl.backends.argv_builder import build_arguments
from llamactl.backends.argv_parser import parse_arguments
from llamactl.backends.argv_redaction import redact_arguments
from llamactl.backends.backend_type import BackendType
from llamactl.backends.cli_spec import CliSpec, load_cli_spec
from llamactl.backends.launcher import Launcher
from llamactl.backends.memory_inputs import MemoryInputs
from llamactl.backends.model_files import ModelFiles
from llamactl.backends.option_input import options_from_mapping, options_from_values
from llamactl.backends.options_base import BackendOptions


class ReadinessProbe(msgspec.Struct, frozen=True, omit_defaults=True):
    """The request that answers 200 only once the backend can serve its model."""

    path: str
    method: Literal["GET", "POST"] = "GET"
    json_body: dict[str, Any] | None = None


class AdapterRequest(msgspec.Struct, frozen=True):
    """How a request for one of an instance's adapters (``instance/adapter``) reaches its backend."""

    model: str | None = None
    """The ``model`` the backend is sent; None: its served model name (the adapter is chosen otherwise)."""
    members: dict[str, Any] = {}
    """Members set in the request's body, such as llama-server's per-request ``lora`` scales."""


class _Listening(Protocol):
    """What every backend's options have: where it listens."""

    host: str | None
    port: int | None


class _Loading(Protocol):
    """What every backend's options have: the model they load."""

    model: str | None


class Backend(ABC):
    """A backend's adapter. Subclasses set the class attributes below."""

    backend_type: ClassVar[BackendType]
    config_key: ClassVar[str]
    """Name in the config file and the API paths (``llama-cpp``, ``mlx``, ``vllm``)."""
    program: ClassVar[str]
    """How people call the server in prose and error messages."""
    options_type: ClassVar[type[BackendOptions]]
    spec_path: ClassVar[Path]
    default_command: ClassVar[str]
    default_args: ClassVar[tuple[str, ...]] = ()
    """Arguments placed before the options, such as vLLM's ``serve`` subcommand."""
    launchers: ClassVar[tuple[Launcher, ...]]
    readiness_probe: ClassVar[ReadinessProbe] = ReadinessProbe(path="/health")
    reports_stream_usage: ClassVar[bool] = False
    """Honours OpenAI's ``stream_options.include_usage``: a stream's last event then has its tokens."""
    metrics_path: ClassVar[str | None] = None
    """Where the running backend serves its own Prometheus metrics, if it does."""
    context_probe: ClassVar[str | None] = None
    """A GET path whose JSON says the context the backend runs with (``served_context`` reads it)."""
    export_targets: ClassVar[tuple[str, ...]] = ()
    """What ``llamactl export`` can write for this backend's instances (``llama-server``, ``ollama``)."""

    @cached_property
    def spec(self) -> CliSpec:
        return load_cli_spec(self.spec_path)

    def options_from_arguments(self, arguments: list[str]) -> BackendOptions:
        """Options from the server's own arguments (no executable, no environment)."""
        return options_from_values(self.options_type, parse_arguments(self.spec, arguments))

    def options_from_json(self, mapping: Mapping[str, Any]) -> BackendOptions:
        return options_from_mapping(self.spec, self.options_type, mapping)

    def claimed_port(self, options: BackendOptions) -> int | None:
        """The port the options ask for; None lets llamactl pick one."""
        return cast(_Listening, options).port

    def with_address(self, options: BackendOptions, host: str, port: int) -> BackendOptions:
        """The options with llamactl's choice of address, which the backend must listen on."""
        return msgspec.structs.replace(options, host=host, port=port)

    def launch_options(self, options: BackendOptions, expose_metrics: bool = False) -> BackendOptions:
        """The options as started: what llamactl needs from the backend added where the user set nothing.

        ``expose_metrics``: the backend's own Prometheus metrics are wanted (``metrics_path``).
        """
        return options

    def build_arguments(self, options: BackendOptions) -> list[str]:
        """The server's arguments for these options, without the executable."""
        return build_arguments(self.spec, options)

    def build_docker_arguments(self, options: BackendOptions) -> list[str]:
        """The arguments after the image in ``docker run`` (the image's entrypoint is the server)."""
        return self.build_arguments(options)

    def command_line(self, options: BackendOptions) -> list[str]:
        """The default executable with its leading arguments and the options."""
        return [self.default_command, *self.default_args, *self.build_arguments(options)]

    def redacted_arguments(self, arguments: Sequence[str], mask: str) -> list[str]:
        """A command line with the values of this backend's secret flags (``--api-key``) as ``mask``."""
        return redact_arguments(self.spec, arguments, mask)

    def version_command(self, command: Sequence[str]) -> list[str]:
        """The configured ``command`` asking for its version: without the words that start the server
        (``vllm serve``), whose own parser refuses ``--version``."""
        words = list(command)
        own = list(self.default_args)
        if own and words[-len(own) :] == own:
            words = words[: -len(own)]
        return [*words, "--version"]

    def knows_flag(self, token: str) -> bool:
        spelling = token.partition("=")[0]
        return spelling in self.spec.by_spelling or spelling.replace("_", "-") in self.spec.by_spelling

    def adapter_names(self, options: BackendOptions) -> list[str]:
        """Other ``model`` values the backend answers to, such as LoRA adapters it serves by name."""
        return []

    def adapter_request(self, options: BackendOptions, adapter: str | None) -> AdapterRequest:
        """How a request for ``adapter`` (one of ``adapter_names``), or for the base model (None), is sent:
        by default under its own name, and the base as it came."""
        return AdapterRequest(model=adapter)

    def adapter_paths(self, options: BackendOptions) -> list[str]:
        """The adapter files or dirs the options load, in the backend's order."""
        return []

    def with_adapter_paths(self, options: BackendOptions, moved: Mapping[str, str]) -> BackendOptions:
        """The options with each adapter path in ``moved`` replaced by its new path."""
        return options

    def model_reference(self, options: BackendOptions) -> str | None:
        """The model the options load: a local path or a hub repo id."""
        return cast(_Loading, options).model

    def ollama_parameters(self, options: BackendOptions) -> list[tuple[str, str]]:
        """The options as an Ollama Modelfile's ``PARAMETER`` lines (name, value), where they map."""
        return []

    def options_for_model(self, files: ModelFiles) -> BackendOptions:
        """Options that serve ``files``: the model alone unless the backend knows what to do with the rest."""
        return self.options_from_json({"model": files.model_path})

    def memory_inputs(self, options: BackendOptions) -> MemoryInputs | None:
        """What the options say about the memory the backend will take; None without a local model."""
        return None

    def served_context(self, document: Any) -> int | None:
        """The context size in the answer to ``context_probe``; None when it does not say."""
        return None

    def reported_memory_bytes(self, startup_lines: Sequence[str]) -> int | None:
        """The memory the backend says it allocated, from the lines it printed while starting.

        Only what it reports: the estimate's allowance for what no report covers is added by the caller.
        """
        return None

    @abstractmethod
    def served_model_name(self, options: BackendOptions) -> str | None:
        """The ``model`` value the backend expects in OpenAI requests, if it cares."""
