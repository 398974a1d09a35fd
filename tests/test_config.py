"""Loading the configuration: search order, layers, expansion, errors and redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from llamactl.config import (
    ENV_VARIABLES,
    AppConfig,
    ConfigError,
    LoadedConfig,
    NodeConfig,
    load_config,
    memory_budget_bytes,
    redacted,
)

EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"


class Machine:
    """A working directory, a home and an /etc of its own, so no test reads the real ones."""

    def __init__(self, root: Path) -> None:
        self.cwd = root / "work"
        self.home = root / "home"
        self.etc = root / "etc" / "llamactl"
        for directory in (self.cwd, self.home, self.etc):
            directory.mkdir(parents=True)

    def load(
        self, explicit: Path | None = None, environ: dict[str, str] | None = None, platform: str = "linux"
    ) -> LoadedConfig:
        return load_config(
            explicit, environ or {}, self.cwd, self.home, platform=platform, system_dir=self.etc
        )

    def write(self, relative: str, text: str) -> Path:
        path = self.cwd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def value_at(config: AppConfig, key: tuple[str, ...]) -> Any:
    """A config value by its YAML key path, as JSON builtins."""
    value: Any = msgspec.to_builtins(config, enc_hook=str)
    for part in key:
        value = value[part]
    return value


def error_of(machine: Machine, yaml_text: str | None = None, environ: dict[str, str] | None = None) -> str:
    path = machine.write("config.yaml", yaml_text) if yaml_text is not None else None
    with pytest.raises(ConfigError) as caught:
        machine.load(path, environ)
    return caught.value.message


# Defaults and search order ----------------------------------------------------------------------


def test_no_file_at_all_gives_the_defaults(machine: Machine) -> None:
    loaded = machine.load()
    config = loaded.config
    data_dir = machine.home / ".local/share/llamactl"
    assert loaded.path is None
    assert loaded.models == {}
    assert loaded.warnings == []
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.max_body_bytes == 64 * 1024 * 1024
    assert config.data_dir == data_dir
    assert config.instances.logs_dir == data_dir / "logs"
    assert config.database.path == data_dir / "llamactl.db"
    assert config.instances.port_range == (8000, 9000)
    assert config.instances.timeout_check_interval == 5
    assert config.instances.log_rotation_backups == 5
    assert config.backends.llama_cpp.command == "llama-server"
    assert config.backends.llama_cpp.docker.image == "ghcr.io/ggml-org/llama.cpp:server"
    assert (
        config.backends.llama_cpp.docker.args[-1] == f"{machine.home}/.cache/llama.cpp:/root/.cache/llama.cpp"
    )
    assert config.backends.mlx.command == "mlx_lm.server"
    assert config.backends.vllm.args == ["serve"]
    assert config.backends.vllm.docker.args[-1] == f"{data_dir}/huggingface:/root/.cache/huggingface"
    assert config.nodes == {"main": NodeConfig()}
    assert config.auth.require_management_auth and config.auth.management_keys == []
    assert config.activity.retention == 1000


def test_macos_keeps_data_in_application_support(machine: Machine) -> None:
    config = machine.load(platform="darwin").config
    assert config.data_dir == machine.home / "Library/Application Support/llamactl"
    assert config.backends.llama_cpp.docker.args[-1].startswith(f"{machine.home}/Library/Caches/llama.cpp:")


LOCATIONS = ("--config", "LLAMACTL_CONFIG_PATH", "./llamactl.yaml", "./config.yaml", "~/.config", "/etc")


@pytest.mark.parametrize("winner", range(len(LOCATIONS)), ids=LOCATIONS)
def test_each_location_wins_over_the_later_ones(machine: Machine, winner: int) -> None:
    paths = (
        machine.cwd / "flag.yaml",
        machine.cwd / "env.yaml",
        machine.cwd / "llamactl.yaml",
        machine.cwd / "config.yaml",
        machine.home / ".config/llamactl/config.yaml",
        machine.etc / "config.yaml",
    )
    for port, path in enumerate(paths[winner:], start=9100 + winner):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"server:\n  port: {port}\n")
    explicit = paths[0] if winner == 0 else None
    environ = {"LLAMACTL_CONFIG_PATH": str(paths[1])} if winner <= 1 else {}
    loaded = machine.load(explicit, environ)
    assert loaded.path == paths[winner]
    assert loaded.config.server.port == 9100 + winner


def test_user_config_follows_xdg_config_home(machine: Machine) -> None:
    path = machine.home / "xdg/llamactl/config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("server:\n  port: 9001\n")
    assert machine.load(environ={"XDG_CONFIG_HOME": str(machine.home / "xdg")}).path == path


@pytest.mark.parametrize("by_flag", [True, False], ids=["--config", "LLAMACTL_CONFIG_PATH"])
def test_an_explicit_path_that_does_not_exist_is_an_error(machine: Machine, by_flag: bool) -> None:
    machine.write("config.yaml", "")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found") as caught:
        if by_flag:
            machine.load(Path("missing.yaml"))
        else:
            machine.load(environ={"LLAMACTL_CONFIG_PATH": "missing.yaml"})
    assert ("--config" if by_flag else "LLAMACTL_CONFIG_PATH") in caught.value.message


# Layers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotenv", "yaml_port", "environment", "expected"),
    [
        (False, False, False, 8080),
        (True, False, False, 1001),
        (True, True, False, 1002),
        (True, True, True, 1003),
        (False, False, True, 1003),
    ],
)
def test_defaults_then_dotenv_then_yaml_then_environment(
    machine: Machine, dotenv: bool, yaml_port: bool, environment: bool, expected: int
) -> None:
    if dotenv:
        machine.write(".env", "LLAMACTL_PORT=1001\n")
    if yaml_port:
        machine.write("config.yaml", "server:\n  port: 1002\n")
    environ = {"LLAMACTL_PORT": "1003"} if environment else {}
    assert machine.load(environ=environ).config.server.port == expected


def test_dotenv_never_overrides_the_environment(machine: Machine) -> None:
    machine.write(".env", "HOST_NAME=from-dotenv\nLLAMACTL_PORT=1001\nMODELS=/dotenv/models\n")
    machine.write("config.yaml", "server:\n  host: ${HOST_NAME}\n")
    loaded = machine.load(environ={"HOST_NAME": "from-environment", "LLAMACTL_PORT": "1003"})
    assert loaded.config.server.host == "from-environment"
    assert loaded.config.server.port == 1003
    assert loaded.dotenv == {"MODELS": "/dotenv/models"}


def test_dotenv_syntax(machine: Machine) -> None:
    machine.write(
        ".env",
        "# a comment\n\nexport A=1\nB='two words'\nC=\"x=y\"\nD=  spaced  \nE=#not-a-comment\n",
    )
    assert machine.load().dotenv == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
        "D": "spaced",
        "E": "#not-a-comment",
    }


def test_dotenv_beside_the_config_file_comes_first(machine: Machine) -> None:
    path = machine.write("conf/llamactl.yaml", "server:\n  host: ${WHERE}\n")
    machine.write("conf/.env", "WHERE=beside\n")
    machine.write(".env", "WHERE=cwd\n")
    assert machine.load(path).config.server.host == "beside"
    (machine.cwd / "conf/.env").unlink()
    assert machine.load(path).config.server.host == "cwd"


def test_a_bad_dotenv_line_names_file_and_line(machine: Machine) -> None:
    machine.write(".env", "A=1\nnot a setting\n")
    assert error_of(machine) == f"{machine.cwd / '.env'}:2: expected NAME=value"


# ${VAR} expansion -------------------------------------------------------------------------------


def test_expansion(machine: Machine) -> None:
    machine.write(
        "config.yaml",
        "# ${IN_A_COMMENT} is never expanded\n"
        "server:\n"
        "  host: ${HOST}\n"
        "  port: ${PORT:-9090}\n"
        "  allowed_origins: ['${EMPTY}x', '${EMPTY:-fallback}', '${UNSET:-}y', '$HOST']\n",
    )
    server = machine.load(environ={"HOST": "10.0.0.1", "EMPTY": ""}).config.server
    assert server.host == "10.0.0.1"
    assert server.port == 9090
    assert server.allowed_origins == ["x", "fallback", "y", "$HOST"]


def test_expansion_reads_dotenv(machine: Machine) -> None:
    machine.write(".env", "PORT=9191\n")
    machine.write("config.yaml", "server:\n  port: ${PORT}\n")
    assert machine.load().config.server.port == 9191


def test_an_unset_variable_is_an_error_naming_it_and_the_file(machine: Machine) -> None:
    message = error_of(machine, "server:\n  port: 1\n  host: ${LISTEN_ON}\n")
    assert message.startswith(f"{machine.cwd / 'config.yaml'}:3: ${{LISTEN_ON}} is not set")


# LLAMACTL_* variables ---------------------------------------------------------------------------

BACKEND_PREFIXES = {"LLAMACPP": "llama-cpp", "VLLM": "vllm", "MLX": "mlx"}


def backend_cases(prefix: str, docker: bool) -> list[tuple[str, str, tuple[str, ...], Any]]:
    backend = BACKEND_PREFIXES[prefix]
    cases: list[tuple[str, str, tuple[str, ...], Any]] = [
        (f"LLAMACTL_{prefix}_COMMAND", "/opt/bin/x", ("backends", backend, "command"), "/opt/bin/x"),
        (f"LLAMACTL_{prefix}_ARGS", "--a  1 --b", ("backends", backend, "args"), ["--a", "1", "--b"]),
        (
            f"LLAMACTL_{prefix}_ENV",
            "K=V,K2=a=b",
            ("backends", backend, "environment"),
            {"K": "V", "K2": "a=b"},
        ),
        (
            f"LLAMACTL_{prefix}_RESPONSE_HEADERS",
            "X-Accel-Buffering=no;X-A=1",
            ("backends", backend, "response_headers"),
            {"X-Accel-Buffering": "no", "X-A": "1"},
        ),
    ]
    if docker:
        cases += [
            (f"LLAMACTL_{prefix}_DOCKER_ENABLED", "yes", ("backends", backend, "docker", "enabled"), True),
            (f"LLAMACTL_{prefix}_DOCKER_IMAGE", "img:1", ("backends", backend, "docker", "image"), "img:1"),
            (
                f"LLAMACTL_{prefix}_DOCKER_ARGS",
                "run --rm",
                ("backends", backend, "docker", "args"),
                ["run", "--rm"],
            ),
            (
                f"LLAMACTL_{prefix}_DOCKER_ENV",
                "A=1",
                ("backends", backend, "docker", "environment"),
                {"A": "1"},
            ),
        ]
    return cases


ENV_CASES: list[tuple[str, str, tuple[str, ...], Any]] = [
    ("LLAMACTL_HOST", "0.0.0.0", ("server", "host"), "0.0.0.0"),
    ("LLAMACTL_PORT", "9999", ("server", "port"), 9999),
    (
        "LLAMACTL_ALLOWED_ORIGINS",
        "http://a, http://b",
        ("server", "allowed_origins"),
        ["http://a", "http://b"],
    ),
    ("LLAMACTL_ENABLE_SWAGGER", "TRUE", ("server", "enable_swagger"), True),
    ("LLAMACTL_MAX_BODY_BYTES", "1024", ("server", "max_body_bytes"), 1024),
    ("LLAMACTL_DATA_DIRECTORY", "/srv/llamactl", ("data_dir",), "/srv/llamactl"),
    ("LLAMACTL_LOCAL_NODE", "gpu-box", ("local_node",), "gpu-box"),
    *backend_cases("LLAMACPP", docker=True),
    *backend_cases("VLLM", docker=True),
    *backend_cases("MLX", docker=False),
    ("LLAMACTL_INSTANCE_PORT_RANGE", "7000-7100", ("instances", "port_range"), (7000, 7100)),
    ("LLAMACTL_AUTO_CREATE_DATA_DIR", "no", ("instances", "auto_create_dirs"), False),
    ("LLAMACTL_MAX_INSTANCES", "4", ("instances", "max_instances"), 4),
    ("LLAMACTL_MAX_RUNNING_INSTANCES", "2", ("instances", "max_running_instances"), 2),
    ("LLAMACTL_ENABLE_LRU_EVICTION", "0", ("instances", "enable_lru_eviction"), False),
    ("LLAMACTL_DEFAULT_IDLE_TIMEOUT", "0", ("instances", "default_idle_timeout"), 0),
    ("LLAMACTL_DEFAULT_AUTO_RESTART", "false", ("instances", "default_auto_restart"), False),
    ("LLAMACTL_DEFAULT_MAX_RESTARTS", "7", ("instances", "default_max_restarts"), 7),
    ("LLAMACTL_DEFAULT_RESTART_DELAY", "9", ("instances", "default_restart_delay"), 9),
    ("LLAMACTL_DEFAULT_ON_DEMAND_START", "No", ("instances", "default_on_demand_start"), False),
    ("LLAMACTL_ON_DEMAND_START_TIMEOUT", "60", ("instances", "on_demand_start_timeout"), 60),
    ("LLAMACTL_MAX_QUEUE", "16", ("instances", "max_queue"), 16),
    ("LLAMACTL_SWAP_FAIRNESS_WINDOW", "2.5", ("instances", "swap_fairness_window"), 2.5),
    ("LLAMACTL_SEND_LOADING_STATE", "true", ("instances", "send_loading_state"), True),
    ("LLAMACTL_TIMEOUT_CHECK_INTERVAL", "0.05", ("instances", "timeout_check_interval"), 0.05),
    ("LLAMACTL_METRICS_SCRAPE_BACKENDS", "true", ("metrics", "scrape_backends"), True),
    ("LLAMACTL_METRICS_PER_KEY", "true", ("metrics", "per_key"), True),
    ("LLAMACTL_METRICS_PUBLIC", "true", ("metrics", "public"), True),
    ("LLAMACTL_MEMORY_BUDGET", "85%", ("instances", "memory_budget"), "85%"),
    ("LLAMACTL_LOGS_DIR", "/var/log/llamactl", ("instances", "logs_dir"), "/var/log/llamactl"),
    ("LLAMACTL_LOG_ROTATION_ENABLED", "1", ("instances", "log_rotation_enabled"), True),
    ("LLAMACTL_LOG_ROTATION_MAX_SIZE", "10", ("instances", "log_rotation_max_size"), 10),
    ("LLAMACTL_LOG_ROTATION_COMPRESS", "true", ("instances", "log_rotation_compress"), True),
    ("LLAMACTL_LOG_ROTATION_BACKUPS", "2", ("instances", "log_rotation_backups"), 2),
    ("LLAMACTL_DATABASE_PATH", "/srv/db.sqlite", ("database", "path"), "/srv/db.sqlite"),
    ("LLAMACTL_ACTIVITY_RETENTION", "50", ("activity", "retention"), 50),
    ("LLAMACTL_REQUIRE_INFERENCE_AUTH", "false", ("auth", "require_inference_auth"), False),
    ("LLAMACTL_REQUIRE_MANAGEMENT_AUTH", "false", ("auth", "require_management_auth"), False),
    ("LLAMACTL_MANAGEMENT_KEYS", "k1, k2,", ("auth", "management_keys"), ["k1", "k2"]),
]


def test_the_table_covers_every_variable() -> None:
    assert sorted(name for name, *_ in ENV_CASES) == sorted(variable.name for variable in ENV_VARIABLES)


@pytest.mark.parametrize(
    ("variable", "value", "key", "expected"), ENV_CASES, ids=[case[0] for case in ENV_CASES]
)
def test_each_variable_sets_its_key(
    machine: Machine, variable: str, value: str, key: tuple[str, ...], expected: Any
) -> None:
    machine.write("config.yaml", "")
    assert value_at(machine.load(environ={variable: value}).config, key) == expected


def test_port_range_also_takes_a_comma(machine: Machine) -> None:
    config = machine.load(environ={"LLAMACTL_INSTANCE_PORT_RANGE": "8100,8200"}).config
    assert config.instances.port_range == (8100, 8200)


def test_an_empty_variable_counts_as_unset(machine: Machine) -> None:
    assert machine.load(environ={"LLAMACTL_PORT": ""}).config.server.port == 8080


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLAMACTL_PORT", "80a", "server.port: invalid value '80a': expected an integer"),
        ("LLAMACTL_PORT", "70000", "server.port: Expected `int` <= 65535"),
        ("LLAMACTL_ENABLE_SWAGGER", "maybe", "server.enable_swagger: invalid value 'maybe': expected 1/0"),
        (
            "LLAMACTL_INSTANCE_PORT_RANGE",
            "8000",
            "instances.port_range: invalid value '8000': expected LOW-HIGH",
        ),
        (
            "LLAMACTL_INSTANCE_PORT_RANGE",
            "9000-8000",
            "instances.port_range: expected [low, high] with low < high",
        ),
        ("LLAMACTL_TIMEOUT_CHECK_INTERVAL", "nan", "instances.timeout_check_interval: invalid value 'nan'"),
        ("LLAMACTL_MAX_INSTANCES", "-2", "instances.max_instances: Expected `int` >= -1"),
        ("LLAMACTL_ACTIVITY_RETENTION", "0", "activity.retention: Expected `int` >= 1"),
        ("LLAMACTL_LLAMACPP_ENV", "A=1,B", "backends.llama-cpp.environment: invalid value 'A=1,B'"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(
    machine: Machine, variable: str, value: str, expected: str
) -> None:
    assert error_of(machine, environ={variable: value}).startswith(
        f"environment variable {variable}: {expected}"
    )


def test_a_bad_dotenv_variable_names_the_file(machine: Machine) -> None:
    machine.write(".env", "LLAMACTL_PORT=eighty\n")
    assert error_of(machine).startswith(
        f"LLAMACTL_PORT in {machine.cwd / '.env'}: server.port: invalid value"
    )


def test_unknown_and_unsupported_variables_are_warned_about(machine: Machine) -> None:
    loaded = machine.load(environ={"LLAMACTL_DATA_DIR": "/x", "LLAMACTL_INSTANCES_DIR": "/y", "PATH": "/bin"})
    assert loaded.warnings == [
        "LLAMACTL_DATA_DIR: unknown variable, ignored; did you mean LLAMACTL_DATA_DIRECTORY?",
        "LLAMACTL_INSTANCES_DIR: a Go llamactl setting this version does not use; ignored",
    ]


def test_the_variables_of_llamactls_own_client_are_known(machine: Machine) -> None:
    environ = {"LLAMACTL_API_KEY": "sk-management", "LLAMACTL_URL": "http://127.0.0.1:8080"}
    assert machine.load(environ=environ).warnings == []
    machine.write(".env", "LLAMACTL_API_KEY=sk-management\n")
    assert machine.load().warnings == []


# Paths ------------------------------------------------------------------------------------------


def test_paths_follow_data_dir_and_expand_home(machine: Machine) -> None:
    machine.write("config.yaml", "data_dir: ~/llm\n")
    config = machine.load().config
    assert config.data_dir == machine.home / "llm"
    assert config.instances.logs_dir == machine.home / "llm/logs"
    assert config.database.path == machine.home / "llm/llamactl.db"
    assert config.backends.vllm.docker.args[-1] == f"{machine.home}/llm/huggingface:/root/.cache/huggingface"


def test_relative_paths(machine: Machine) -> None:
    machine.write("config.yaml", "data_dir: data\ninstances:\n  logs_dir: logs2\ndatabase:\n  path: ''\n")
    config = machine.load().config
    assert config.data_dir == machine.cwd / "data"
    assert config.instances.logs_dir == machine.cwd / "data/logs2"
    assert config.database.path == machine.cwd / "data/llamactl.db"


# Files ------------------------------------------------------------------------------------------


def test_the_example_documents_the_real_defaults(machine: Machine) -> None:
    loaded = machine.load(EXAMPLE)
    assert loaded.warnings == []
    assert loaded.config == machine.load().config


def documented_keys(struct: type[msgspec.Struct]) -> list[str]:
    keys = []
    for field in msgspec.structs.fields(struct):
        keys.append(field.encode_name)
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            keys += documented_keys(field.type)
    return keys


def test_the_example_names_every_key() -> None:
    text = EXAMPLE.read_text()
    missing = [key for key in documented_keys(AppConfig) if f"{key}:" not in text]
    assert missing == []
    assert "address:" in text and "api_key:" in text


def test_the_example_models_section_parses_when_uncommented(machine: Machine) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# models:")
    models = "\n".join(line.removeprefix("# ") for line in lines[start:])
    machine.write("config.yaml", models)
    assert machine.load().models == {
        "qwen": {"command": "CUDA_VISIBLE_DEVICES=0 llama-server -m /models/qwen.gguf -ngl 99"},
        "llama-8b": {
            "backend_type": "llama_cpp",
            "backend_options": {"model": "/models/llama-8b.gguf", "gpu_layers": 99},
            "idle_timeout": 10,
            "on_demand_start": True,
            "group": "gpu0",
        },
    }


GO_CONFIG = """\
server:
  host: "0.0.0.0"                # Server host to bind to
  port: 8080
  allowed_origins: ["*"]
  allowed_headers: ["*"]
  enable_swagger: false

backends:
  llama-cpp:
    command: "llama-server"
    args: []
    environment:
      CUDA_VISIBLE_DEVICES: 0
    cache_dir: ~/.cache/llama.cpp
    docker:
      enabled: false
      image: "ghcr.io/ggml-org/llama.cpp:server"
      args: ["run", "--rm", "--network", "host", "--gpus", "all"]
      environment: {}
    response_headers:
      X-Accel-Buffering: "no"

  vllm:
    command: "vllm"
    args: ["serve"]
    environment: {}
    docker:
      enabled: false
      image: "vllm/vllm-openai:latest"
      args: ["run", "--rm", "--network", "host", "--gpus", "all", "--shm-size", "1g"]
      environment: {}
    response_headers: {}

  mlx:
    command: "mlx_lm.server"
    args: []
    environment: {}
    response_headers: {}

data_dir: ~/.local/share/llamactl

instances:
  port_range: [8000, 9000]
  configs_dir: data_dir/instances
  logs_dir: /var/log/llamactl
  auto_create_dirs: true
  max_instances: -1
  max_running_instances: 2
  group_limits:
    gpu0: 1
  enable_lru_eviction: true
  default_idle_timeout: 30
  default_auto_restart: true
  default_max_restarts: 3
  default_restart_delay: 5
  default_on_demand_start: true
  on_demand_start_timeout: 120
  timeout_check_interval: 5
  log_rotation_enabled: true
  log_rotation_max_size: 100
  log_rotation_compress: false

database:
  path: data_dir/llamactl.db
  max_open_connections: 25
  max_idle_connections: 5
  connection_max_lifetime: 5m

auth:
  require_inference_auth: true
  inference_keys: []
  require_management_auth: true
  management_keys: ["mgmt-1"]

local_node: "main"
nodes:
  main:
  worker1:
    address: "http://192.168.1.10:8080"
    api_key: "worker1-api-key"
"""


def test_a_go_llamactl_config_loads_unchanged(machine: Machine) -> None:
    path = machine.write("config.yaml", GO_CONFIG)
    loaded = machine.load()
    config = loaded.config
    assert config.server.host == "0.0.0.0"
    assert config.backends.llama_cpp.environment == {"CUDA_VISIBLE_DEVICES": "0"}
    assert config.backends.llama_cpp.response_headers == {"X-Accel-Buffering": "no"}
    assert config.backends.llama_cpp.docker.args == ["run", "--rm", "--network", "host", "--gpus", "all"]
    assert config.instances.max_running_instances == 2
    assert config.instances.group_limits == {"gpu0": 1}
    assert config.instances.logs_dir == Path("/var/log/llamactl")
    assert config.database.path == machine.home / ".local/share/llamactl/data_dir/llamactl.db"
    assert config.auth.management_keys == ["mgmt-1"]
    assert config.nodes["main"].address == ""
    assert config.nodes["worker1"].api_key == "worker1-api-key"
    ignored = [
        "backends.llama-cpp.cache_dir",
        "instances.configs_dir",
        "database.max_open_connections",
        "database.max_idle_connections",
        "database.connection_max_lifetime",
        "auth.inference_keys",
    ]
    assert [warning.split(": ")[1] for warning in loaded.warnings] == ignored
    assert all(warning.startswith(f"{path}: ") for warning in loaded.warnings)


def test_an_empty_section_means_its_defaults(machine: Machine) -> None:
    defaults = machine.load().config
    machine.write("config.yaml", "server:\ninstances:\n")
    assert machine.load().config == defaults


def test_models_are_kept_raw_after_expansion(machine: Machine) -> None:
    machine.write(
        "config.yaml", "models:\n  a:\n    command: llama-server -m ${DIR:-/m}/a.gguf\n    anything: [1]\n"
    )
    assert machine.load().models == {"a": {"command": "llama-server -m /m/a.gguf", "anything": [1]}}


@pytest.mark.parametrize("section", ["models: [a]\n", "models:\n  a: llama-server -m x\n"])
def test_models_must_map_names_to_mappings(machine: Machine, section: str) -> None:
    message = error_of(machine, section)
    assert message.startswith(f"{machine.cwd / 'config.yaml'}: models")


# Errors -----------------------------------------------------------------------------------------


def test_an_unknown_key_is_an_error_with_a_suggestion(machine: Machine) -> None:
    message = error_of(machine, "instances:\n  max_instance: 3\n")
    assert (
        message
        == f"{machine.cwd / 'config.yaml'}: instances.max_instance: unknown key; did you mean max_instances?"
    )


def test_an_unknown_top_level_key_is_an_error(machine: Machine) -> None:
    assert "serverr: unknown key; did you mean server?" in error_of(machine, "serverr:\n  port: 1\n")


def test_a_wrong_type_names_the_key(machine: Machine) -> None:
    message = error_of(machine, "instances:\n  max_instances: lots\n")
    assert message == f"{machine.cwd / 'config.yaml'}: instances.max_instances: Expected `int`, got `str`"


def test_a_wrong_type_in_a_map_names_the_entry(machine: Machine) -> None:
    message = error_of(machine, "nodes:\n  worker1:\n    address: [1]\n")
    assert message.endswith("nodes.worker1.address: Expected `str`, got `array`")


@pytest.mark.parametrize(
    ("port_range", "expected"),
    [
        ("[9000, 8000]", "instances.port_range: expected [low, high] with low < high, got [9000, 8000]"),
        ("[8000, 8000]", "instances.port_range: expected [low, high] with low < high"),
        ("[0, 8000]", "instances.port_range[0]: Expected `int` >= 1"),
        ("[8000, 70000]", "instances.port_range[1]: Expected `int` <= 65535"),
        ("[8000]", "instances.port_range: Expected `array` of length 2"),
        ("8000-9000", "instances.port_range: Expected `array`, got `str`"),
    ],
)
def test_a_bad_port_range(machine: Machine, port_range: str, expected: str) -> None:
    message = error_of(machine, f"instances:\n  port_range: {port_range}\n")
    assert message.startswith(f"{machine.cwd / 'config.yaml'}: {expected}")


@pytest.mark.parametrize(
    "setting",
    [
        "default_idle_timeout: -1",
        "default_restart_delay: -1",
        "on_demand_start_timeout: -5",
        "timeout_check_interval: 0",
        "timeout_check_interval: .inf",
    ],
)
def test_negative_timeouts_are_refused(machine: Machine, setting: str) -> None:
    message = error_of(machine, f"instances:\n  {setting}\n")
    assert f"instances.{setting.split(':')[0]}: " in message


def test_a_yaml_syntax_error_names_file_and_line(machine: Machine) -> None:
    message = error_of(machine, "server:\n  port: 8080\n  host: [oops\n")
    assert message.startswith(f"{machine.cwd / 'config.yaml'}:4:1: invalid YAML:")
    assert "line 3" in message


def test_a_duplicate_key_is_an_error(machine: Machine) -> None:
    message = error_of(machine, "server:\n  port: 1\n  port: 2\n")
    assert message == f"{machine.cwd / 'config.yaml'}:3:3: invalid YAML: duplicate key 'port'"


def test_a_file_that_is_not_a_mapping_is_an_error(machine: Machine) -> None:
    assert error_of(machine, "- server\n").endswith("expected a mapping of settings, got list")


# Redaction --------------------------------------------------------------------------------------


def test_redaction_hides_secrets(machine: Machine) -> None:
    machine.write(
        "config.yaml",
        "auth:\n  management_keys: [s3cr3t-1, s3cr3t-2]\n"
        "nodes:\n  worker1:\n    address: http://w1\n    api_key: node-s3cr3t\n"
        "backends:\n  vllm:\n    environment: {HF_TOKEN: hf_s3cr3t, CUDA_VISIBLE_DEVICES: '1'}\n",
    )
    document = redacted(machine.load().config)
    assert document["auth"]["management_keys"] == ["***", "***"]
    assert document["nodes"] == {
        "worker1": {"address": "http://w1", "api_key": "***"},
        "main": {"address": "", "api_key": ""},
    }
    assert document["backends"]["vllm"]["environment"] == {"HF_TOKEN": "***", "CUDA_VISIBLE_DEVICES": "1"}
    assert document["backends"]["llama-cpp"]["command"] == "llama-server"
    assert document["data_dir"] == str(machine.home / ".local/share/llamactl")
    assert "s3cr3t" not in msgspec.json.encode(document).decode()


def test_redaction_hides_secret_flags_and_assignments_in_backend_and_docker_args(machine: Machine) -> None:
    machine.write(
        "config.yaml",
        "backends:\n"
        "  llama-cpp:\n"
        "    args: [--api-key, s3cr3t-a, '--api-key=s3cr3t-b', -hft, s3cr3t-c, --api-key-file, /keys.txt]\n"
        "  vllm:\n"
        "    args: [serve, --api-key, s3cr3t-d, s3cr3t-e, --port, '1', --hf-token]\n"
        "    docker:\n"
        "      image: vllm/vllm-openai\n"
        "      args: [run, -e, HF_TOKEN=s3cr3t-f, '--env=WANDB_API_KEY=s3cr3t-g',\n"
        "             -e, CUDA_VISIBLE_DEVICES=0]\n",
    )
    document = redacted(machine.load().config)
    backends = document["backends"]
    assert backends["llama-cpp"]["args"] == [
        "--api-key",
        "***",
        "--api-key=***",
        "-hft",
        "***",
        "--api-key-file",  # a path to a file of keys is not a key
        "/keys.txt",
    ]
    # --api-key takes one or more values in vLLM, --hf-token zero or one
    assert backends["vllm"]["args"] == ["serve", "--api-key", "***", "***", "--port", "1", "--hf-token"]
    assert backends["vllm"]["docker"]["args"] == [
        "run",
        "-e",
        "HF_TOKEN=***",
        "--env=WANDB_API_KEY=***",
        "-e",
        "CUDA_VISIBLE_DEVICES=0",
    ]
    assert "s3cr3t" not in msgspec.json.encode(document).decode()


@pytest.mark.parametrize(
    ("budget", "total", "expected"),
    [
        ("48GiB", 1, 48 * 1024**3),
        ("512 MB", 1, 512 * 1000**2),
        ("50%", 8 * 1024**3, 4 * 1024**3),
        (4096, 1, 4096),
    ],
)
def test_a_memory_budget_is_bytes_a_size_or_a_share_of_ram(
    machine: Machine, budget: int | str, total: int, expected: int
) -> None:
    machine.write(
        "llamactl.yaml",
        f"instances:\n  memory_budget: {budget!r}\n"
        if isinstance(budget, str)
        else f"instances:\n  memory_budget: {budget}\n",
    )
    configured = machine.load().config.instances.memory_budget
    assert configured is not None
    assert memory_budget_bytes(configured, total) == expected


@pytest.mark.parametrize("budget", ["lots", "12 parsecs", "0", "150%"])
def test_a_memory_budget_that_is_not_a_size_is_an_error_naming_the_key(machine: Machine, budget: str) -> None:
    machine.write("llamactl.yaml", f"instances:\n  memory_budget: {budget!r}\n")
    with pytest.raises(ConfigError, match="memory_budget"):
        machine.load()


def test_discovery_paths_are_taken_from_the_working_directory_and_home(machine: Machine) -> None:
    machine.write("llamactl.yaml", "discovery:\n  paths: [models, ~/gguf]\n  ollama: false\n")
    discovery = machine.load().config.discovery
    assert discovery.paths == [machine.cwd / "models", machine.home / "gguf"]
    assert (discovery.huggingface, discovery.ollama, discovery.lmstudio) == (True, False, True)


def test_memory_pressure_has_the_documented_defaults(machine: Machine) -> None:
    machine.write("llamactl.yaml", "instances:\n  memory_pressure: {}\n")
    pressure = machine.load().config.instances.memory_pressure
    assert pressure is not None
    assert (pressure.threshold_percent, pressure.check_interval) == (75.0, 30.0)
