"""``llamactl export``: the files that reproduce an instance without llamactl.

For each target, a launch script that runs the instance's exact command on
127.0.0.1 (the port a variable, the adapters beside the script, secrets read
from the environment), its adapters copied, vLLM's engine arguments as JSON or
an Ollama Modelfile, and ``export_manifest.json``. The model's weights are not
copied (they can be many gigabytes): the script names the model where the
instance has it. ``build_export`` reads files but writes none: it answers
names → bytes and names → the source files to copy, which the API sends as a
tar and ``llamactl export`` unpacks.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from llamactl import __version__
from llamactl.backends import Backend, BackendOptions, get_backend
from llamactl.config import redacted_command
from llamactl.deploy.export_manifest import (
    ExportManifest,
    adapter_facts,
    artifact,
    encode_manifest,
    hub_origin,
    model_quant,
)
from llamactl.deploy.export_shell import PORT, SCRIPT_DIR, launch_script, shown, variable
from llamactl.errors import HttpError, LlamactlError

MANIFEST = "export_manifest.json"
MODELFILE = "Modelfile"
VLLM_CONFIG = "vllm_config.json"
ADAPTERS = "adapters"
DEFAULT_PORT = 8080
"""The script's port when the instance has none of its own: llama-server's and mlx_lm.server's default."""
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MASK = "\x01"
"""What secret values become before they are given variable names (a byte no argument holds)."""


class ExportCommand(msgspec.Struct, frozen=True):
    """How the instance starts with some backend options, listening on 127.0.0.1."""

    argv: list[str]
    environment: dict[str, str]
    """The backend's and the instance's own variables, not llamactl's whole environment."""


class ExportSource(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    backend_type: str
    options: BackendOptions
    port: int | None
    """The instance's port while it runs: the script's default, else the one its options claim."""
    backend_version: str | None = None
    backend_version_error: str | None = None


class ExportFiles(msgspec.Struct, frozen=True):
    written: dict[str, bytes]
    """Files made for the export, by their path in it."""
    copied: dict[str, Path]
    """Files copied into the export (the adapters), by their path in it."""
    executable: frozenset[str]
    """The paths that are scripts to run."""


class ExportRefused(LlamactlError):
    status = 422
    code = "export_refused"


CommandOf = Callable[[BackendOptions, int], ExportCommand]
"""The instance's start command with these backend options on 127.0.0.1 at this port."""


def check_target(backend_type: str, target: str) -> Backend:
    backend = get_backend(backend_type)
    if target not in backend.export_targets:
        fitting = ", ".join(backend.export_targets) or "none"
        raise HttpError(
            400,
            "invalid_request",
            f"target: {target!r} does not run {backend.program}; this instance exports as: {fitting}",
            field="target",
        )
    return backend


def build_export(
    source: ExportSource, target: str, command_of: CommandOf, now: datetime.datetime | None = None
) -> ExportFiles:
    """Reads the adapters and the model's header, off the event loop."""
    backend = check_target(source.backend_type, target)
    port = source.port or backend.claimed_port(source.options) or DEFAULT_PORT
    copied, moved = _adapter_copies(backend.adapter_paths(source.options))
    in_script = backend.with_adapter_paths(
        source.options, {path: variable(SCRIPT_DIR) + "/" + name for path, name in moved.items()}
    )
    command = command_of(in_script, port)
    argv, secrets = _secrets_as_variables(_port_as_variable(command.argv, port, backend), backend)
    environment = dict(command.environment)
    for name in environment:
        if not _VARIABLE_NAME.fullmatch(name):
            raise ExportRefused(f"the variable {name!r} has a name a shell cannot export")
        # A variable llamactl masks wherever it shows one (HF_TOKEN, *_API_KEY) is a secret here too.
        if redacted_command([f"{name}=x"], backend) != [f"{name}=x"]:
            environment[name] = variable(name)
            secrets[name] = f"the value of {name}"
    model = backend.model_reference(source.options)
    when = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    created_at, created_by = when.strftime("%Y-%m-%dT%H:%M:%SZ"), f"llamactl-{__version__}"
    header = [
        f"{backend.program} as llamactl's instance {source.name!r} runs it ({created_by}, {created_at}).",
        f"It listens on 127.0.0.1:$PORT (default {port}); arguments given to it are added to the command.",
        f"The model is not copied: {model!r} must be on this machine.",
    ]
    written: dict[str, bytes] = {}
    if target == "ollama":
        launch = "ollama_create.sh"
        written[MODELFILE] = _modelfile(backend, source, model, moved).encode()
        written[launch] = _ollama_script(source.name, port, created_by).encode()
    else:
        launch = f"{target}_launch.sh"
        script = launch_script(header, {PORT: str(port)}, secrets, environment, argv)
        written[launch] = script.encode()
    if target == "vllm":
        written[VLLM_CONFIG] = _engine_arguments(
            backend, backend.with_adapter_paths(source.options, moved), port
        )
    hub_id, revision = hub_origin(model)
    manifest = ExportManifest(
        target=target,
        quant=model_quant(model),
        artifacts=sorted(
            [artifact(path, content) for path, content in written.items()]
            + [artifact(path, origin) for path, origin in copied.items()],
            key=lambda entry: entry.path,
        ),
        base_model_hf_id=hub_id,
        base_model_revision=revision,
        created_at=created_at,
        created_by=created_by,
        instance=source.name,
        backend_type=backend.backend_type.value,
        model=model,
        argv=[shown(token) for token in argv],
        backend_version=source.backend_version,
        backend_version_error=source.backend_version_error,
        adapters=[adapter_facts(name, path) for path, name in moved.items()],
    )
    written[MANIFEST] = encode_manifest(manifest)
    return ExportFiles(written=written, copied=copied, executable=frozenset([launch]))


def _adapter_copies(paths: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Each adapter's files under ``adapters/``, and each adapter's path there, by its source path."""
    copied: dict[str, Path] = {}
    moved: dict[str, str] = {}
    for path in dict.fromkeys(paths):
        origin = Path(path)
        if not origin.exists():
            raise ExportRefused(f"the adapter {path} does not exist: the instance cannot start either")
        stem, suffix, number = origin.name, "", 1
        while f"{ADAPTERS}/{stem}{suffix}" in moved.values():
            number += 1
            suffix = f"-{number}"
        name = f"{ADAPTERS}/{stem}{suffix}"
        moved[path] = name
        if origin.is_file():
            copied[name] = origin
            continue
        for directory, _, files in os.walk(origin, followlinks=False):
            for file in files:
                member = Path(directory) / file
                if member.is_file():  # a link that resolves to a file is copied as that file
                    copied[f"{name}/{member.relative_to(origin).as_posix()}"] = member
    return copied, moved


def _port_as_variable(argv: list[str], port: int, backend: Backend) -> list[str]:
    spellings = {spelling for flag in backend.spec.flags if flag.key == "port" for spelling in flag.spellings}
    tokens = list(argv)
    for index, token in enumerate(tokens):
        flag, equals, value = token.partition("=")
        if equals and flag in spellings and value == str(port):
            tokens[index] = f"{flag}={variable(PORT)}"
        elif token in spellings and index + 1 < len(tokens) and tokens[index + 1] == str(port):
            tokens[index + 1] = variable(PORT)
    return tokens


def _secrets_as_variables(argv: list[str], backend: Backend) -> tuple[list[str], dict[str, str]]:
    """Each secret flag's value (``--api-key``'s) as a variable named after the flag: ``API_KEY``."""
    secrets: dict[str, str] = {}
    tokens = []
    flag = ""
    for token in backend.redacted_arguments(argv, _MASK):
        if token.startswith("-"):
            flag = token.partition("=")[0]
        if _MASK not in token:
            tokens.append(token)
            continue
        name = base = flag.lstrip("-").replace("-", "_").upper()
        number = 1
        while name in secrets:  # a flag given twice (vLLM takes several keys)
            number += 1
            name = f"{base}_{number}"
        secrets[name] = f"the value of {flag}"
        tokens.append(token.replace(_MASK, variable(name)))
    return tokens, secrets


def _engine_arguments(backend: Backend, options: BackendOptions, port: int) -> bytes:
    """vLLM's engine arguments by their names, as its ``--config`` file takes them; secrets left out."""
    secret = {flag.key for flag in backend.spec.secret_flags.values()}
    values = msgspec.to_builtins(backend.with_address(options, "127.0.0.1", port))
    chosen = {key: value for key, value in values.items() if value is not None and key not in secret}
    return json.dumps(chosen, indent=2, sort_keys=True).encode() + b"\n"


def _modelfile(backend: Backend, source: ExportSource, model: str | None, moved: Mapping[str, str]) -> str:
    if any("\n" in path for path in [model or "", *moved.values()]):
        raise ExportRefused("a path with a line break cannot be written into a Modelfile")
    lines = [
        f"# Ollama's Modelfile for llamactl's instance {source.name!r} (llamactl-{__version__}).",
        "# No TEMPLATE: the instance runs the GGUF's own Jinja chat template, which Ollama reads from",
        "# the GGUF itself; a Go template written here could only approximate it.",
        f"FROM {model}",
    ]
    if moved:
        lines.append("# Ollama applies each adapter at scale 1.0, as a request for instance/adapter does.")
    lines += [f"ADAPTER ./{name}" for name in moved.values()]
    lines += [f"PARAMETER {name} {value}" for name, value in backend.ollama_parameters(source.options)]
    return "\n".join(lines) + "\n"


def _ollama_script(name: str, port: int, created_by: str) -> str:
    header = [
        f"Makes the Ollama model {name!r} (or $OLLAMA_MODEL) of llamactl's instance from the Modelfile",
        f"beside it ({created_by}), through the `ollama serve` on 127.0.0.1:$PORT (default {port}).",
        f"Then: OLLAMA_HOST=127.0.0.1:$PORT ollama run {name}",
    ]
    defaults = {PORT: str(port), "OLLAMA_MODEL": name}
    command = ["ollama", "create", variable("OLLAMA_MODEL"), "-f", variable(SCRIPT_DIR) + "/" + MODELFILE]
    return launch_script(header, defaults, {}, {"OLLAMA_HOST": "127.0.0.1:" + variable(PORT)}, command)
