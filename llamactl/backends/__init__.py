"""Backend adapters and the registry: ``BackendType`` -> ``Backend``.

Only this package knows how llama.cpp, MLX and vLLM differ; the rest of
llamactl asks the adapter returned by ``get_backend``.
"""

from llamactl.backends.adapter import AdapterRequest, Backend, ReadinessProbe
from llamactl.backends.backend_type import BackendType
from llamactl.backends.command_parser import ParsedCommand, parse_command_of_any_backend
from llamactl.backends.command_parser import parse_command as _parse_command
from llamactl.backends.errors import (
    BackendInputError,
    CommandSyntaxError,
    OptionValueError,
    WrongBackendError,
)
from llamactl.backends.llama_cpp.adapter import LlamaCppBackend
from llamactl.backends.llama_cpp.options import LlamaCppOptions
from llamactl.backends.memory_inputs import MemoryInputs
from llamactl.backends.mlx_lm.adapter import MlxLmBackend
from llamactl.backends.mlx_lm.options import MlxLmOptions
from llamactl.backends.model_files import ModelFiles
from llamactl.backends.options_base import BackendOptions
from llamactl.backends.vllm.adapter import VllmBackend
from llamactl.backends.vllm.options import VllmOptions

BACKENDS: dict[BackendType, Backend] = {
    backend.backend_type: backend for backend in (LlamaCppBackend(), MlxLmBackend(), VllmBackend())
}
_BY_NAME: dict[str, Backend] = {
    name: backend
    for backend in BACKENDS.values()
    for name in (backend.backend_type.value, backend.config_key)
}


def get_backend(name: str) -> Backend:
    """The adapter for a backend type (``llama_cpp``) or its config name (``llama-cpp``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise BackendInputError(
            f"unknown backend {name!r}; known backends: {known}", field="backend_type"
        ) from None


def parse_command(backend_name: str, text: str) -> ParsedCommand:
    """Parse a pasted command for the named backend (see ``command_parser``)."""
    return _parse_command(get_backend(backend_name), text, list(BACKENDS.values()))


def parse_command_of_known_backend(text: str) -> ParsedCommand:
    """Parse a pasted command, telling its backend from the executable."""
    return parse_command_of_any_backend(text, list(BACKENDS.values()))


__all__ = [
    "BACKENDS",
    "AdapterRequest",
    "Backend",
    "BackendInputError",
    "BackendOptions",
    "BackendType",
    "CommandSyntaxError",
    "LlamaCppOptions",
    "MemoryInputs",
    "MlxLmOptions",
    "ModelFiles",
    "OptionValueError",
    "ParsedCommand",
    "ReadinessProbe",
    "VllmOptions",
    "WrongBackendError",
    "get_backend",
    "parse_command",
    "parse_command_of_known_backend",
]
