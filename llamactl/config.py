"""llamactl's configuration: the ``AppConfig`` structs and how they are loaded.

Layers, later wins: defaults < ``.env`` < the YAML file < ``LLAMACTL_*``
environment variables. The keys, defaults and variable names are the Go
llamactl's, so its ``config.yaml`` loads unchanged, with these differences:
the server binds 127.0.0.1 by default; anything wrong (a half-read file, an
unknown key, an invalid variable, an unset ``${VAR}``) is a ``ConfigError``
naming the file or variable and the key, never a silently different config;
Go keys this version does not implement are dropped with a warning.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the test extras yet

from llamactl.backends import Backend, get_backend
from llamactl.client import CLIENT_VARIABLES
from llamactl.sizes import parse_percent, parse_size

# Structs ----------------------------------------------------------------------------------------

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(ge=-1)]
"""A count where -1 means unlimited."""


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Loopback by default (the Go llamactl binds 0.0.0.0): exposing it is a deliberate choice."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    """0 lets the OS pick a free port."""
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    allowed_headers: list[str] = msgspec.field(default_factory=lambda: ["*"])
    enable_swagger: bool = False
    response_headers: dict[str, str] = {}
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024


class DockerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    image: str
    args: list[str]
    """Arguments of ``docker`` before the image; the default mounts the backend's model cache."""
    environment: dict[str, str] = {}


class BackendConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to run one backend (``backends.<name>``); the defaults per backend are in ``_backend_defaults``."""

    command: str
    args: list[str] = []
    environment: dict[str, str] = {}
    response_headers: dict[str, str] = {}


class DockerBackendConfig(BackendConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    docker: DockerConfig


class BackendsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    llama_cpp: DockerBackendConfig = msgspec.field(name="llama-cpp")
    mlx: BackendConfig
    """No docker section: MLX runs on macOS only, where containers cannot reach the GPU."""
    vllm: DockerBackendConfig


class MemoryPressureConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    threshold_percent: Annotated[float, msgspec.Meta(gt=0, le=100)] = 75.0
    check_interval: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds."""


class InstancesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    port_range: tuple[Port, Port] = (8000, 9000)
    """Inclusive; instance ports are allocated from it."""
    auto_create_dirs: bool = True
    max_instances: Limit = -1
    max_running_instances: Limit = -1
    group_limits: dict[str, NonNegative] = {}
    """Group name -> most instances of the group running at once."""
    enable_lru_eviction: bool = True
    default_idle_timeout: NonNegative = 30
    """Minutes; 0 never stops an idle instance."""
    default_auto_restart: bool = True
    default_max_restarts: NonNegative = 3
    default_restart_delay: NonNegative = 5
    """Seconds."""
    default_on_demand_start: bool = True
    on_demand_start_timeout: NonNegative = 120
    """Seconds a start may take, and a request may wait in a queue."""
    max_queue: NonNegative = 256
    """Requests waiting over all instances; past it, 429."""
    swap_fairness_window: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Seconds a request waits for a swap before the running instance stops taking new requests."""
    send_loading_state: bool = False
    """Streamed requests that wait get their progress as reasoning_content too (llama-swap's key)."""
    timeout_check_interval: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Minutes; a float so tests can check every few seconds."""
    memory_budget: int | str | None = None
    """Bytes, a size (``"48GiB"``) or a share of RAM (``"85%"``) the instances may use; unset: no limit."""
    memory_pressure: MemoryPressureConfig | None = None
    """Stop idle instances while the system's memory use is past a threshold; unset: off."""
    logs_dir: Path
    log_rotation_enabled: bool = True
    log_rotation_max_size: Annotated[int, msgspec.Meta(ge=1)] = 100
    """Megabytes."""
    log_rotation_compress: bool = False
    log_rotation_backups: NonNegative = 5

    def __post_init__(self) -> None:
        # Checked here so a bad budget is a config error naming the key, not a failure at first use.
        if isinstance(self.memory_budget, str):
            memory_budget_bytes(self.memory_budget, total=1)
        elif isinstance(self.memory_budget, int) and self.memory_budget <= 0:
            raise ValueError("memory_budget must be positive")


def memory_budget_bytes(budget: int | str, total: int) -> int:
    """``memory_budget`` in bytes; a percentage is of ``total`` (the machine's RAM)."""
    if isinstance(budget, int):
        return budget
    percent = parse_percent(budget)
    if percent is None:
        size = parse_size(budget)
        if size <= 0:
            raise ValueError("memory_budget must be positive")
        return size
    if not 0 < percent <= 100:
        raise ValueError(f"memory_budget {budget!r}: a percentage is of RAM, between 0 and 100")
    return int(total * percent / 100)


class DiscoveryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the model catalogue looks for models; each store is read, never written."""

    paths: list[Path] = []
    """Directories scanned recursively for GGUF files and Hugging Face style model dirs."""
    huggingface: bool = True
    ollama: bool = True
    lmstudio: bool = True
    safetensors_backend: Literal["vllm", "mlx_lm"] | None = None
    """What serves a safetensors model made into an instance; unset: mlx_lm on macOS, else vllm."""


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``GET /metrics``, in Prometheus's text format."""

    public: bool = False
    """Open without a key, for a scraper on the same host; else it needs a management key."""
    scrape_backends: bool = False
    """Add each running backend's own metrics, labelled ``instance`` (llama-server gets --metrics)."""
    per_key: bool = False
    """Count requests and tokens by API key name too (one series per key and instance)."""


class ActivityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The activity log of proxied requests (``GET /api/v1/activity``, ``llamactl activity``)."""

    retention: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Records kept in the database; the oldest go first."""


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: Path


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    require_inference_auth: bool = True
    require_management_auth: bool = True
    management_keys: list[str] = []


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: str = ""
    api_key: str = ""


class AppConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration.

    Fields without a default depend on the machine (``data_dir`` and the paths
    under it, the cache directories the docker defaults mount); ``load_config``
    always fills them, so build an ``AppConfig`` through it.
    """

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    data_dir: Path
    local_node: Annotated[str, msgspec.Meta(min_length=1)] = "main"
    nodes: dict[str, NodeConfig] = {}
    """Always includes ``local_node``."""
    backends: BackendsConfig
    instances: InstancesConfig
    database: DatabaseConfig
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    discovery: DiscoveryConfig = msgspec.field(default_factory=DiscoveryConfig)
    activity: ActivityConfig = msgspec.field(default_factory=ActivityConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)


class LoadedConfig(msgspec.Struct, frozen=True, kw_only=True):
    config: AppConfig
    path: Path | None
    """The YAML file read; None when no file was found."""
    models: dict[str, dict[str, Any]] = {}
    """The file's ``models:`` declarations, ``${VAR}``-expanded but otherwise unchecked."""
    dotenv: dict[str, str] = {}
    """Variables read from ``.env`` that the environment did not already set."""
    warnings: list[str] = []
    """Settings accepted for compatibility but not used, and unknown ``LLAMACTL_*`` variables."""


class ConfigError(Exception):
    """The configuration cannot be used; ``message`` names the file or variable and the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


# Environment variables --------------------------------------------------------------------------


def _text(value: str) -> str:
    return value


def _integer(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _number(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes"):
        return True
    if word in ("0", "false", "no"):
        return False
    raise ValueError("expected 1/0, true/false or yes/no")


def _words(value: str) -> list[str]:
    return value.split()


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _pairs(separator: str) -> Callable[[str], dict[str, str]]:
    def parse(value: str) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in value.split(separator):
            if not item.strip():
                continue
            key, equals, pair_value = item.partition("=")
            if not equals or not key.strip():
                raise ValueError(f"expected KEY=VALUE{separator}KEY=VALUE, got {item!r}")
            pairs[key.strip()] = pair_value
        return pairs

    return parse


def _port_range(value: str) -> list[int]:
    match = re.fullmatch(r"\s*(\d+)\s*[-,]\s*(\d+)\s*", value)
    if match is None:
        raise ValueError("expected LOW-HIGH or LOW,HIGH")
    return [int(match[1]), int(match[2])]


class EnvVariable(msgspec.Struct, frozen=True):
    name: str
    key: tuple[str, ...]
    """The YAML key path it sets."""
    parse: Callable[[str], Any]


def _backend_variables(prefix: str, backend: str, docker: bool) -> list[EnvVariable]:
    variables = [
        EnvVariable(f"{prefix}_COMMAND", ("backends", backend, "command"), _text),
        EnvVariable(f"{prefix}_ARGS", ("backends", backend, "args"), _words),
        EnvVariable(f"{prefix}_ENV", ("backends", backend, "environment"), _pairs(",")),
        EnvVariable(f"{prefix}_RESPONSE_HEADERS", ("backends", backend, "response_headers"), _pairs(";")),
    ]
    if docker:
        variables += [
            EnvVariable(f"{prefix}_DOCKER_ENABLED", ("backends", backend, "docker", "enabled"), _boolean),
            EnvVariable(f"{prefix}_DOCKER_IMAGE", ("backends", backend, "docker", "image"), _text),
            EnvVariable(f"{prefix}_DOCKER_ARGS", ("backends", backend, "docker", "args"), _words),
            EnvVariable(f"{prefix}_DOCKER_ENV", ("backends", backend, "docker", "environment"), _pairs(",")),
        ]
    return variables


def _instances_variable(name: str, key: str, parse: Callable[[str], Any]) -> EnvVariable:
    return EnvVariable(f"LLAMACTL_{name}", ("instances", key), parse)


ENV_VARIABLES: tuple[EnvVariable, ...] = (
    EnvVariable("LLAMACTL_HOST", ("server", "host"), _text),
    EnvVariable("LLAMACTL_PORT", ("server", "port"), _integer),
    EnvVariable("LLAMACTL_ALLOWED_ORIGINS", ("server", "allowed_origins"), _items),
    EnvVariable("LLAMACTL_ENABLE_SWAGGER", ("server", "enable_swagger"), _boolean),
    EnvVariable("LLAMACTL_MAX_BODY_BYTES", ("server", "max_body_bytes"), _integer),
    EnvVariable("LLAMACTL_DATA_DIRECTORY", ("data_dir",), _text),
    EnvVariable("LLAMACTL_LOCAL_NODE", ("local_node",), _text),
    *_backend_variables("LLAMACTL_LLAMACPP", "llama-cpp", docker=True),
    *_backend_variables("LLAMACTL_VLLM", "vllm", docker=True),
    *_backend_variables("LLAMACTL_MLX", "mlx", docker=False),
    _instances_variable("INSTANCE_PORT_RANGE", "port_range", _port_range),
    _instances_variable("AUTO_CREATE_DATA_DIR", "auto_create_dirs", _boolean),
    _instances_variable("MAX_INSTANCES", "max_instances", _integer),
    _instances_variable("MAX_RUNNING_INSTANCES", "max_running_instances", _integer),
    _instances_variable("ENABLE_LRU_EVICTION", "enable_lru_eviction", _boolean),
    _instances_variable("DEFAULT_IDLE_TIMEOUT", "default_idle_timeout", _integer),
    _instances_variable("DEFAULT_AUTO_RESTART", "default_auto_restart", _boolean),
    _instances_variable("DEFAULT_MAX_RESTARTS", "default_max_restarts", _integer),
    _instances_variable("DEFAULT_RESTART_DELAY", "default_restart_delay", _integer),
    _instances_variable("DEFAULT_ON_DEMAND_START", "default_on_demand_start", _boolean),
    _instances_variable("ON_DEMAND_START_TIMEOUT", "on_demand_start_timeout", _integer),
    _instances_variable("MAX_QUEUE", "max_queue", _integer),
    _instances_variable("SWAP_FAIRNESS_WINDOW", "swap_fairness_window", _number),
    _instances_variable("SEND_LOADING_STATE", "send_loading_state", _boolean),
    _instances_variable("TIMEOUT_CHECK_INTERVAL", "timeout_check_interval", _number),
    _instances_variable("MEMORY_BUDGET", "memory_budget", _text),
    _instances_variable("LOGS_DIR", "logs_dir", _text),
    _instances_variable("LOG_ROTATION_ENABLED", "log_rotation_enabled", _boolean),
    _instances_variable("LOG_ROTATION_MAX_SIZE", "log_rotation_max_size", _integer),
    _instances_variable("LOG_ROTATION_COMPRESS", "log_rotation_compress", _boolean),
    _instances_variable("LOG_ROTATION_BACKUPS", "log_rotation_backups", _integer),
    EnvVariable("LLAMACTL_DATABASE_PATH", ("database", "path"), _text),
    EnvVariable("LLAMACTL_ACTIVITY_RETENTION", ("activity", "retention"), _integer),
    EnvVariable("LLAMACTL_METRICS_PUBLIC", ("metrics", "public"), _boolean),
    EnvVariable("LLAMACTL_METRICS_SCRAPE_BACKENDS", ("metrics", "scrape_backends"), _boolean),
    EnvVariable("LLAMACTL_METRICS_PER_KEY", ("metrics", "per_key"), _boolean),
    EnvVariable("LLAMACTL_REQUIRE_INFERENCE_AUTH", ("auth", "require_inference_auth"), _boolean),
    EnvVariable("LLAMACTL_REQUIRE_MANAGEMENT_AUTH", ("auth", "require_management_auth"), _boolean),
    EnvVariable("LLAMACTL_MANAGEMENT_KEYS", ("auth", "management_keys"), _items),
)
"""Every ``LLAMACTL_*`` variable that sets a key. An empty value counts as unset, as in Go."""

CONFIG_PATH_VARIABLE = "LLAMACTL_CONFIG_PATH"

_NOT_IMPLEMENTED = "a Go llamactl setting this version does not use"
_GO_ONLY_KEYS: dict[str, str] = {
    **{
        f"backends.{backend}.{key}": _NOT_IMPLEMENTED
        for backend in ("llama-cpp", "mlx", "vllm")
        for key in ("cache_dir", "download_timeout")
    },
    "backends.mlx.docker": "MLX does not run in docker (the Go llamactl ignores it too)",
    "instances.instances_dir": _NOT_IMPLEMENTED,
    "instances.configs_dir": _NOT_IMPLEMENTED,
    "database.max_open_connections": _NOT_IMPLEMENTED,
    "database.max_idle_connections": _NOT_IMPLEMENTED,
    "database.connection_max_lifetime": _NOT_IMPLEMENTED,
    "auth.inference_keys": "inference keys are managed through the API, not the config file",
}
"""Keys a Go llamactl config may hold that are dropped with a warning instead of refused."""

_GO_ONLY_VARIABLES: dict[str, str] = {
    **dict.fromkeys(
        (
            "LLAMACTL_LLAMACPP_CACHE_DIR",
            "LLAMACTL_LLAMACPP_DOWNLOAD_TIMEOUT",
            "LLAMACTL_INSTANCES_DIR",
            "LLAMACTL_DATABASE_MAX_OPEN_CONNECTIONS",
            "LLAMACTL_DATABASE_MAX_IDLE_CONNECTIONS",
            "LLAMACTL_DATABASE_CONN_MAX_LIFETIME",
        ),
        _NOT_IMPLEMENTED,
    ),
    "LLAMACTL_INFERENCE_KEYS": _GO_ONLY_KEYS["auth.inference_keys"],
}


# Loading ----------------------------------------------------------------------------------------


class _Layer(msgspec.Struct):
    """One source of settings, as a nested dict in the YAML's spelling."""

    values: dict[str, Any]
    source: str
    """Where its values came from, for error messages."""
    sources: dict[tuple[str, ...], str] = {}
    """Finer sources by key path (the variable that set it)."""


def load_config(
    explicit_path: Path | None,
    environ: Mapping[str, str],
    cwd: Path,
    home: Path,
    *,
    platform: str = sys.platform,
    system_dir: Path = Path("/etc/llamactl"),
) -> LoadedConfig:
    """Find, read and check the configuration; a complete config or ``ConfigError``.

    Pure: the environment, working and home directories are arguments;
    ``system_dir`` stands for ``/etc/llamactl`` so tests never read the real one.
    """
    path = _find_config_file(explicit_path, environ, cwd, home, system_dir)
    dotenv_path = _find_dotenv(path, cwd)
    dotenv = {}
    if dotenv_path is not None:
        dotenv = {key: value for key, value in _read_dotenv(dotenv_path).items() if key not in environ}
    warnings = [*_variable_warnings(dotenv), *_variable_warnings(environ)]
    variables = {**dotenv, **environ}

    document: dict[str, Any] = {}
    if path is not None:
        document = _read_yaml(path, variables)
    source = str(path)
    models = _models_section(document.pop("models", None), source)
    file_values = _normalize(document, AppConfig, (), source, warnings)

    layers = [
        _variables_layer(dotenv, lambda name: f"{name} in {dotenv_path}"),
        _Layer(file_values, source),
        _variables_layer(environ, lambda name: f"environment variable {name}"),
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer.values)
    data_dir = _place_paths(merged, layers, cwd, home, platform)
    cache = _llama_cpp_cache_dir(variables, home, platform)
    merged = _merge({"backends": _backend_defaults(data_dir, cache)}, merged)

    config = _convert(merged, layers)
    if config.local_node not in config.nodes:
        config = msgspec.structs.replace(config, nodes={**config.nodes, config.local_node: NodeConfig()})
    return LoadedConfig(config=config, path=path, models=models, dotenv=dotenv, warnings=warnings)


def _find_config_file(
    explicit_path: Path | None, environ: Mapping[str, str], cwd: Path, home: Path, system_dir: Path
) -> Path | None:
    if explicit_path is not None or environ.get(CONFIG_PATH_VARIABLE):
        named = explicit_path or Path(environ[CONFIG_PATH_VARIABLE])
        path = Path(_resolve_path(str(named), cwd, home))
        given_by = "--config" if explicit_path is not None else CONFIG_PATH_VARIABLE
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (given by {given_by})")
        return path
    config_home = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    candidates = (
        cwd / "llamactl.yaml",
        cwd / "config.yaml",
        config_home / "llamactl" / "config.yaml",
        system_dir / "config.yaml",
    )
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def _find_dotenv(config_path: Path | None, cwd: Path) -> Path | None:
    candidates = [cwd / ".env"] if config_path is None else [config_path.parent / ".env", cwd / ".env"]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        text = text.removeprefix("export ").lstrip()
        name, equals, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not _VARIABLE_NAME.fullmatch(name):
            raise ConfigError(f"{path}:{number}: expected NAME=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None


def _variable_warnings(variables: Mapping[str, str]) -> list[str]:
    # The client's variables are often exported in the shell that runs `llamactl serve` too.
    known = {variable.name for variable in ENV_VARIABLES} | {CONFIG_PATH_VARIABLE, *CLIENT_VARIABLES}
    warnings = []
    for name in variables:
        if name in _GO_ONLY_VARIABLES:
            warnings.append(f"{name}: {_GO_ONLY_VARIABLES[name]}; ignored")
        elif name.startswith("LLAMACTL_") and name not in known:
            warnings.append(f"{name}: unknown variable, ignored{_suggestion(name, known)}")
    return warnings


_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(text: str, variables: Mapping[str, str], path: Path) -> str:
    """``${VAR}`` and ``${VAR:-default}`` as in the Go llamactl, but an unset ``${VAR}`` is an error.

    Comment lines are left alone so a commented-out example cannot fail the load.
    """
    lines = text.split("\n")  # not splitlines(), whose extra line breaks YAML does not count
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("#"):
            continue

        def substitute(match: re.Match[str], number: int = number) -> str:
            name, default = match[1], match[2]
            value = variables.get(name)
            if default is not None:
                return value or default
            if value is None:
                raise ConfigError(
                    f"{path}:{number}: ${{{name}}} is not set; set it or write ${{{name}:-default}}",
                )
            return value

        lines[number - 1] = _REFERENCE.sub(substitute, line)
    return "\n".join(lines)


def _check_duplicate_keys(node: Any, seen_nodes: set[int]) -> None:
    """Refuse a key given twice in one mapping: PyYAML keeps the last silently, Go's YAML refuses it."""
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                keys.add(key_node.value)
            _check_duplicate_keys(value_node, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, seen_nodes)


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load``, with duplicate keys refused."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    text = _expand(_read_text(path), variables, path)
    try:
        document = _parse_yaml(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        context = ""
        if error.context is not None and error.context_mark is not None:
            context = f" ({error.context} at line {error.context_mark.line + 1})"
        raise ConfigError(f"{path}{where}: invalid YAML: {error.problem}{context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {_kind(document)}")
    return document


def _models_section(section: Any, source: str) -> dict[str, dict[str, Any]]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: models: expected a mapping of names to options", key="models")
    for name, options in section.items():
        if not isinstance(name, str) or not isinstance(options, dict):
            raise ConfigError(
                f"{source}: models.{name}: expected a name mapped to options, got {_kind(options)}",
                key=f"models.{name}",
            )
    return section


def _normalize(value: Any, annotation: Any, path: tuple[str, ...], source: str, warnings: list[str]) -> Any:
    """Check a YAML value against the structs' schema before msgspec converts it.

    msgspec reports neither which map entry is wrong (``$.nodes[...]``) nor a
    near-miss for an unknown key, and refuses the number in ``CUDA_VISIBLE_DEVICES: 0``
    that Go's YAML reads as text; this walk does those three things. An empty
    section (``instances:`` with nothing under it) counts as absent.
    """
    if _is_section(annotation):
        if not isinstance(value, dict):
            return value
        fields = {field.encode_name: field for field in msgspec.structs.fields(annotation)}
        section: dict[str, Any] = {}
        for key, item in value.items():
            key_path = (*path, str(key))
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                dotted = ".".join(key_path)
                if dotted in _GO_ONLY_KEYS:
                    warnings.append(f"{source}: {dotted}: {_GO_ONLY_KEYS[dotted]}; ignored")
                    continue
                raise ConfigError(
                    f"{source}: {dotted}: unknown key{_suggestion(str(key), fields)}", key=dotted
                )
            if item is None and _is_section(field.type):
                continue
            section[key] = _normalize(item, field.type, key_path, source, warnings)
        return section
    if get_origin(annotation) is dict and isinstance(value, dict):
        item_type = get_args(annotation)[1]
        entries: dict[str, Any] = {}
        for key, item in value.items():
            key_path = (*path, str(key))
            if not isinstance(key, str):
                raise ConfigError(
                    f"{source}: {'.'.join(key_path)}: expected a text key, got {_kind(key)}",
                    key=".".join(key_path),
                )
            if item is None and _is_section(item_type):
                item = {}  # the Go docs' `nodes: {main: }`
            entries[key] = _normalize(item, item_type, key_path, source, warnings)
            try:
                _struct_convert(entries[key], item_type)
            except msgspec.ValidationError as error:
                raise _validation_error(error, key_path, lambda _: source) from None
        return entries
    if annotation == list[str] and isinstance(value, list):
        return [_as_text(item) for item in value]
    if annotation is str:
        return _as_text(value)
    return value


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _as_text(value: Any) -> Any:
    """Scalars as the text Go's YAML decoder would give a string field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _variables_layer(variables: Mapping[str, str], describe: Callable[[str], str]) -> _Layer:
    values: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for variable in ENV_VARIABLES:
        raw = variables.get(variable.name, "")
        if not raw:
            continue
        try:
            parsed = variable.parse(raw)
        except ValueError as error:
            dotted = ".".join(variable.key)
            raise ConfigError(
                f"{describe(variable.name)}: {dotted}: invalid value {raw!r}: {error}", key=dotted
            ) from None
        _set(values, variable.key, parsed)
        sources[variable.key] = describe(variable.name)
    return _Layer(values, "the environment", sources)


def _default_data_dir(home: Path, platform: str) -> Path:
    if platform == "darwin":
        return home / "Library" / "Application Support" / "llamactl"
    return home / ".local" / "share" / "llamactl"


def _llama_cpp_cache_dir(variables: Mapping[str, str], home: Path, platform: str) -> Path:
    """Where llama.cpp caches downloaded models, mounted into its container by default."""
    if variables.get("LLAMA_CACHE"):
        return Path(variables["LLAMA_CACHE"])
    if platform == "darwin":
        return home / "Library" / "Caches" / "llama.cpp"
    if variables.get("XDG_CACHE_HOME"):
        return Path(variables["XDG_CACHE_HOME"]) / "llama.cpp"
    return home / ".cache" / "llama.cpp"


def _backend_defaults(data_dir: Path, llama_cpp_cache: Path) -> dict[str, Any]:
    """The Go llamactl's defaults per backend."""
    docker_run = ["run", "--rm", "--network", "host", "--gpus", "all"]
    return {
        "llama-cpp": {
            "command": "llama-server",
            "docker": {
                "image": "ghcr.io/ggml-org/llama.cpp:server",
                "args": [*docker_run, "-v", f"{llama_cpp_cache}:/root/.cache/llama.cpp"],
            },
        },
        "mlx": {"command": "mlx_lm.server"},
        "vllm": {
            "command": "vllm",
            "args": ["serve"],
            "docker": {
                "image": "vllm/vllm-openai:latest",
                "args": [
                    *docker_run,
                    "--shm-size",
                    "1g",
                    "-v",
                    f"{data_dir / 'huggingface'}:/root/.cache/huggingface",
                ],
            },
        },
    }


def _place_paths(merged: dict[str, Any], layers: list[_Layer], cwd: Path, home: Path, platform: str) -> Path:
    """Make the path keys absolute and fill the unset ones (an empty path is unset, as in Go).

    A relative ``data_dir`` is taken from the working directory; a relative
    ``logs_dir`` or ``database.path`` is inside ``data_dir``, as the Go
    llamactl's documentation says (its code took them from the working directory).
    """
    data_dir = Path(
        _path_setting(merged, ("data_dir",), layers, cwd, home) or _default_data_dir(home, platform)
    )
    _set(merged, ("data_dir",), str(data_dir))
    for key, default_name in ((("instances", "logs_dir"), "logs"), (("database", "path"), "llamactl.db")):
        _set(merged, key, _path_setting(merged, key, layers, data_dir, home) or str(data_dir / default_name))
    paths = _get(merged, ("discovery", "paths"))
    if isinstance(paths, list):
        _set(merged, ("discovery", "paths"), [_resolve_path(str(path), cwd, home) for path in paths])
    return data_dir


def _path_setting(
    merged: dict[str, Any], key: tuple[str, ...], layers: list[_Layer], base: Path, home: Path
) -> str | None:
    """A path key made absolute from ``base``; None when unset or empty."""
    value = _get(merged, key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        dotted = ".".join(key)
        raise ConfigError(
            f"{_source_of(layers, key)}: {dotted}: expected a path, got {_kind(value)}", key=dotted
        )
    return _resolve_path(value, base, home)


def _resolve_path(value: str, base: Path, home: Path) -> str:
    """``~`` is the given home; a relative path is taken from ``base``."""
    if value == "~" or value.startswith("~/"):
        return str(home / value[2:])
    return str(base / value)


def _convert(merged: dict[str, Any], layers: list[_Layer]) -> AppConfig:
    try:
        config: AppConfig = _struct_convert(merged, AppConfig)
    except msgspec.ValidationError as error:
        raise _validation_error(error, (), lambda key: _source_of(layers, key)) from None
    low, high = config.instances.port_range
    if low >= high:
        key = ("instances", "port_range")
        raise ConfigError(
            f"{_source_of(layers, key)}: instances.port_range: expected [low, high] with low < high, "
            f"got [{low}, {high}]",
            key="instances.port_range",
        )
    if not math.isfinite(config.instances.timeout_check_interval):
        key = ("instances", "timeout_check_interval")
        raise ConfigError(
            f"{_source_of(layers, key)}: instances.timeout_check_interval: expected a finite number",
            key="instances.timeout_check_interval",
        )
    return config


def _struct_convert(value: Any, annotation: Any) -> Any:
    return msgspec.convert(value, annotation, strict=False, dec_hook=_decode_path)


def _decode_path(annotation: type, value: Any) -> Any:
    if annotation is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


_ERROR_LOCATION = re.compile(r"(?P<detail>.*) - at `\$(?P<path>[^`]*)`", re.DOTALL)
_PATH_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _validation_error(
    error: msgspec.ValidationError, base: tuple[str, ...], source_of: Callable[[tuple[str, ...]], str]
) -> ConfigError:
    """msgspec's ``Expected `int`, got `str` - at `$.a.b[0]``` as ``<source>: a.b[0]: Expected ...``."""
    message = str(error)
    keys = list(base)
    shown = ".".join(base)
    match = _ERROR_LOCATION.fullmatch(message)
    if match is not None:
        message = match["detail"]
        for segment in _PATH_SEGMENT.finditer(match["path"]):
            if segment[1] is not None:
                keys.append(segment[1])
                shown = f"{shown}.{segment[1]}" if shown else segment[1]
            else:
                shown = f"{shown}[{segment[2]}]"
    return ConfigError(f"{source_of(tuple(keys))}: {shown}: {message}", key=shown)


def _source_of(layers: list[_Layer], key: tuple[str, ...]) -> str:
    """The highest layer that sets ``key``: the one whose value is in the config."""
    for layer in reversed(layers):
        if _get(layer.values, key) is not None:
            for length in range(len(key), 0, -1):
                if key[:length] in layer.sources:
                    return layer.sources[key[:length]]
            return layer.source
    return "the defaults"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _get(values: dict[str, Any], key: tuple[str, ...]) -> Any:
    value: Any = values
    for part in key:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set(values: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    """Set ``key``, creating sections; a section that is not a mapping is left for msgspec to report."""
    for part in key[:-1]:
        values = values.setdefault(part, {})
        if not isinstance(values, dict):
            return
    values[key[-1]] = value


def _suggestion(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# Redaction --------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"(?:--?[A-Za-z][\w-]*=)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=")
"""A variable assignment in an argument: ``HF_TOKEN=…`` after ``-e``, or ``--env=HF_TOKEN=…``."""
REDACTED = "***"


def _is_secret_name(name: str) -> bool:
    """Whether a variable or header name suggests its value is a secret (``HF_TOKEN``, ``X-Api-Key``)."""
    return _SECRET_NAME.search(name) is not None


def redacted_command(argv: Sequence[str], backend: Backend) -> list[str]:
    """A command line as it may be shown: values of the backend's secret flags (``--api-key``) and of
    secret-looking variable assignments (``-e HF_TOKEN=…``) become ``***``."""
    shown = []
    for token in backend.redacted_arguments(argv, REDACTED):
        assignment = _ASSIGNMENT.match(token)
        if assignment is not None and _is_secret_name(assignment["name"]):
            token = assignment.group(0) + REDACTED
        shown.append(token)
    return shown


def redacted(config: AppConfig) -> dict[str, Any]:
    """The config as JSON-ready builtins without secrets, for ``GET /api/v1/config``.

    Management keys and node API keys become ``***``; so do environment
    variables and response headers whose names suggest a secret (``HF_TOKEN``),
    and the values of secret flags and assignments in a backend's or its
    docker's ``args`` (see ``redacted_command``).
    """
    document: dict[str, Any] = msgspec.to_builtins(config, enc_hook=_encode_path)
    auth = document["auth"]
    auth["management_keys"] = [REDACTED for _ in auth["management_keys"]]
    for node in document["nodes"].values():
        if node["api_key"]:
            node["api_key"] = REDACTED
    named_values = [document["server"]["response_headers"]]
    for key, backend in document["backends"].items():
        named_values += [backend["environment"], backend["response_headers"]]
        backend["args"] = redacted_command(backend["args"], get_backend(key))
        if "docker" in backend:
            named_values.append(backend["docker"]["environment"])
            backend["docker"]["args"] = redacted_command(backend["docker"]["args"], get_backend(key))
    for values in named_values:
        for name in values:
            if _is_secret_name(name):
                values[name] = REDACTED
    return document


def _encode_path(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError
