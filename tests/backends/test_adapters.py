"""What the rest of llamactl asks each backend adapter."""

import pytest

from llamactl.backends import BACKENDS, AdapterRequest, BackendType, get_backend


@pytest.mark.parametrize(
    ("backend", "options", "argv"),
    [
        (
            "llama-cpp",
            {"model": "m.gguf", "port": 8081},
            ["llama-server", "--model", "m.gguf", "--port", "8081"],
        ),
        ("vllm", {"model": "org/m", "port": 8081}, ["vllm", "serve", "org/m", "--port", "8081"]),
        ("mlx", {"model": "/m", "port": 8081}, ["mlx_lm.server", "--model", "/m", "--port", "8081"]),
    ],
)
def test_command_line_has_the_default_executable_and_subcommand(
    backend: str, options: dict[str, object], argv: list[str]
) -> None:
    adapter = get_backend(backend)
    assert adapter.command_line(adapter.options_from_json(options)) == argv


@pytest.mark.parametrize(
    ("backend", "options", "model"),
    [
        ("llama-cpp", {"model": "/m/q.gguf"}, "/m/q.gguf"),
        ("llama-cpp", {"model": "/m/q.gguf", "alias": "qwen,q"}, "qwen"),
        ("vllm", {"model": "org/m"}, "org/m"),
        ("vllm", {"model": "org/m", "served_model_name": ["chat", "other"]}, "chat"),
        ("mlx", {"model": "/m"}, "default_model"),
    ],
)
def test_served_model_name(backend: str, options: dict[str, object], model: str) -> None:
    adapter = get_backend(backend)
    assert adapter.served_model_name(adapter.options_from_json(options)) == model


def test_readiness_probes() -> None:
    assert BACKENDS[BackendType.LLAMA_CPP].readiness_probe.path == "/health"
    assert BACKENDS[BackendType.VLLM].readiness_probe.path == "/health"
    # mlx_lm.server's /health is 200 before its model loads: readiness needs a real completion.
    mlx = BACKENDS[BackendType.MLX_LM].readiness_probe
    assert (mlx.method, mlx.path) == ("POST", "/v1/completions")


def test_registry_by_type_and_config_name() -> None:
    for backend_type, adapter in BACKENDS.items():
        assert get_backend(backend_type.value) is adapter
        assert get_backend(adapter.config_key) is adapter
    assert [b.config_key for b in BACKENDS.values()] == ["llama-cpp", "mlx", "vllm"]


@pytest.mark.parametrize(
    ("backend", "options", "names"),
    [
        ("vllm", {"model": "org/m"}, []),
        (
            "vllm",
            {
                "model": "org/m",
                "lora_modules": [
                    "sql=/loras/sql",
                    '{"name": "chat", "path": "/loras/chat", "base_model_name": "org/m"}',
                    '[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}]',
                ],
            },
            ["sql", "chat", "a", "b"],
        ),
        # llama-server numbers its adapters --lora first, then --lora-scaled: the names keep that order.
        (
            "llama-cpp",
            {"model": "/m.gguf", "lora_scaled": ["/s.gguf:0"], "lora": ["/l.gguf,/k.gguf"]},
            ["l", "k", "s"],
        ),
        ("llama-cpp", {"model": "/m.gguf"}, []),
        ("mlx", {"model": "/m", "adapter_path": "/adapters/sql"}, ["sql"]),
    ],
)
def test_adapter_names_are_the_models_a_backend_serves_besides_its_own(
    backend: str, options: dict[str, object], names: list[str]
) -> None:
    adapter = get_backend(backend)
    assert adapter.adapter_names(adapter.options_from_json(options)) == names


@pytest.mark.parametrize(
    ("backend", "options", "adapter", "request_"),
    [
        ("vllm", {"model": "org/m", "lora_modules": ["sql=/loras/sql"]}, "sql", AdapterRequest(model="sql")),
        (
            "llama-cpp",
            {"model": "/m.gguf", "lora": ["/l.gguf"], "lora_scaled": ["/s.gguf:0", "/h.gguf:0.5"]},
            "s",
            # Loaded at 0, applied at 1; never from a prompt cached under other scales.
            AdapterRequest(members={"lora": [{"id": 1, "scale": 1.0}], "cache_prompt": False}),
        ),
        (
            "llama-cpp",
            {"model": "/m.gguf", "lora": ["/l.gguf"], "lora_scaled": ["/s.gguf:0", "/h.gguf:0.5"]},
            "h",
            AdapterRequest(members={"lora": [{"id": 2, "scale": 0.5}], "cache_prompt": False}),
        ),
        (
            "llama-cpp",
            {"model": "/m.gguf", "lora_scaled": ["/s.gguf:0"]},
            None,  # the base model: its own scales, and no prompt an adapter computed
            AdapterRequest(members={"cache_prompt": False}),
        ),
        ("llama-cpp", {"model": "/m.gguf"}, None, AdapterRequest()),  # no adapter: the request as it came
        ("vllm", {"model": "org/m", "lora_modules": ["sql=/loras/sql"]}, None, AdapterRequest()),
        ("mlx", {"model": "/m", "adapter_path": "/adapters/sql"}, "sql", AdapterRequest()),
    ],
)
def test_a_request_for_an_adapter_reaches_the_backend_as_it_expects(
    backend: str, options: dict[str, object], adapter: str | None, request_: AdapterRequest
) -> None:
    chosen = get_backend(backend)
    assert chosen.adapter_request(chosen.options_from_json(options), adapter) == request_


@pytest.mark.parametrize(
    ("backend", "options", "paths", "moved_options"),
    [
        (
            "llama-cpp",
            {"model": "/m.gguf", "lora": ["/l.gguf,/k.gguf"], "lora_scaled": ["/s.gguf:0,/h.gguf:0.5"]},
            ["/l.gguf", "/k.gguf", "/s.gguf", "/h.gguf"],
            {"lora": ["/new/l.gguf,/k.gguf"], "lora_scaled": ["/new/s.gguf:0,/h.gguf:0.5"]},
        ),
        (
            "vllm",
            {
                "model": "org/m",
                "lora_modules": [
                    "sql=/loras/sql",
                    '{"name": "chat", "path": "/loras/chat", "base_model_name": "org/m"}',
                    '[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}]',
                ],
            },
            ["/loras/sql", "/loras/chat", "/a", "/b"],
            {
                "lora_modules": [
                    "sql=/new/sql",
                    '{"name": "chat", "path": "/new/chat", "base_model_name": "org/m"}',
                    '[{"name": "a", "path": "/new/a"}, {"name": "b", "path": "/b"}]',
                ]
            },
        ),
        (
            "mlx",
            {"model": "/m", "adapter_path": "/adapters/sql"},
            ["/adapters/sql"],
            {"adapter_path": "/new/sql"},
        ),
        ("mlx", {"model": "/m"}, [], {}),
    ],
)
def test_adapter_paths_are_listed_and_moved_in_whichever_form_the_options_name_them(
    backend: str, options: dict[str, object], paths: list[str], moved_options: dict[str, object]
) -> None:
    chosen = get_backend(backend)
    typed = chosen.options_from_json(options)
    assert chosen.adapter_paths(typed) == paths
    moved = {"/l.gguf": "/new/l.gguf", "/s.gguf": "/new/s.gguf", "/loras/sql": "/new/sql"}
    moved |= {"/loras/chat": "/new/chat", "/a": "/new/a", "/adapters/sql": "/new/sql"}
    assert chosen.with_adapter_paths(typed, moved) == chosen.options_from_json({**options, **moved_options})
    assert chosen.adapter_names(chosen.with_adapter_paths(typed, moved)) == chosen.adapter_names(typed)


@pytest.mark.parametrize(
    ("backend", "command", "asked"),
    [
        # `vllm serve --version` is refused by serve's parser: "unrecognized arguments: --version".
        ("vllm", ["/venv/bin/vllm", "serve"], ["/venv/bin/vllm", "--version"]),
        ("llama-cpp", ["python", "standin.py"], ["python", "standin.py", "--version"]),
        ("mlx", ["mlx_lm.server"], ["mlx_lm.server", "--version"]),
    ],
)
def test_a_backends_version_is_asked_of_its_command_without_the_servers_subcommand(
    backend: str, command: list[str], asked: list[str]
) -> None:
    assert get_backend(backend).version_command(command) == asked
