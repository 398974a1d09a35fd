"""Pasted commands of every shape become the options a user meant, or an error naming the problem."""

from typing import Any

import msgspec
import pytest

from llamactl.backends import BackendInputError, OptionValueError, WrongBackendError, parse_command


def parsed(backend: str, text: str) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(parse_command(backend, text)))
    return result


def options(backend: str, text: str) -> dict[str, Any]:
    result: dict[str, Any] = parsed(backend, text)["backend_options"]
    return result


@pytest.mark.parametrize(
    "executable",
    [
        "llama-server",
        "./llama-server",
        "/opt/llama.cpp/build/bin/llama-server",
        "llama-server.exe",
        r"'C:\llama\llama-server.exe'",
        "llama-server-vulkan",
        "",
    ],
)
def test_llama_server_executables_and_bare_arguments(executable: str) -> None:
    assert options("llama-cpp", f"{executable} -m model.gguf -c 4096") == {
        "model": "model.gguf",
        "ctx_size": 4096,
    }


@pytest.mark.parametrize(
    "launcher",
    [
        "vllm serve",
        "/usr/local/bin/vllm serve",
        "serve",
        "python -m vllm.entrypoints.openai.api_server --model",
        "python3 -m vllm.entrypoints.openai.api_server --model",
        "python3.11 -m vllm.entrypoints.cli.main serve",
        "",
    ],
)
def test_vllm_launchers_and_positional_model(launcher: str) -> None:
    assert options("vllm", f"{launcher} Qwen/Qwen3-0.6B -tp 2") == {
        "model": "Qwen/Qwen3-0.6B",
        "tensor_parallel_size": 2,
    }


@pytest.mark.parametrize(
    "launcher", ["mlx_lm.server", "mlx_lm server", "python -m mlx_lm.server", "python3 -m mlx_lm server", ""]
)
def test_mlx_launchers(launcher: str) -> None:
    assert options("mlx", f"{launcher} --model mlx-community/x --port 8081") == {
        "model": "mlx-community/x",
        "port": 8081,
    }


@pytest.mark.parametrize(
    ("backend", "text", "command_override"),
    [
        (
            "llama-cpp",
            "~/llama.cpp/build/bin/llama-server -m a",
            "/home/ada/llama.cpp/build/bin/llama-server",
        ),
        ("llama-cpp", "/opt/bin/llama-server -m a", "/opt/bin/llama-server"),
        ("llama-cpp", "./llama-server -m a", "./llama-server"),
        ("llama-cpp", "build/bin/llama-server-vulkan -m a", "build/bin/llama-server-vulkan"),
        ("llama-cpp", r"'C:\llama\llama-server.exe' -m a", r"C:\llama\llama-server.exe"),
        ("vllm", "/usr/local/bin/vllm serve m", "/usr/local/bin/vllm"),
        ("mlx", "~/venv/bin/mlx_lm.server --model m", "/home/ada/venv/bin/mlx_lm.server"),
        # a bare name, or no executable: the configured command
        ("llama-cpp", "llama-server -m a", None),
        ("llama-cpp", "llama-server-vulkan -m a", None),
        ("llama-cpp", "-m a", None),
        ("vllm", "serve m", None),
        # launchers one path cannot stand for: the configured command and arguments
        ("vllm", "/opt/venv/bin/python -m vllm.entrypoints.openai.api_server --model m", None),
        ("mlx", "/opt/bin/mlx_lm server --model m", None),
    ],
)
def test_an_executable_given_by_path_is_the_command_override(
    backend: str, text: str, command_override: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/ada")
    assert parsed(backend, text).get("command_override") == command_override


def test_environment_assignments_become_the_instance_environment() -> None:
    result = parsed("vllm", "CUDA_VISIBLE_DEVICES=0,1 HF_HOME=/data/hf vllm serve m")
    assert result["environment"] == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/data/hf"}
    assert "environment" not in parsed("vllm", "vllm serve m")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # every spelling of a flag lands on one key
        ("-ngl 99", {"gpu_layers": 99}),
        ("--gpu-layers 99", {"gpu_layers": 99}),
        ("--n-gpu-layers=99", {"gpu_layers": 99}),
        ("--n_gpu_layers 99", {"gpu_layers": 99}),
        ("-ngl all", {"gpu_layers": "all"}),
        # zero and false are values, not "unset"
        ("--temp 0 -ngl 0 --top-k 0", {"temp": 0.0, "gpu_layers": 0, "top_k": 0}),
        ("--seed -1 --temp -0.5e-1", {"seed": -1, "temp": -0.05}),
        ("--no-mmap --no-webui", {"mmap": False, "webui": False}),
        ("--mmap --webui", {"mmap": True, "webui": True}),
        ("-nkvo", {"kv_offload": False}),
        ("--no-mmap --mmap", {"mmap": True}),
        # a switch written with an explicit boolean
        ("--jinja true --mlock false", {"jinja": True}),
        ("--jinja=false", {"jinja": False}),
        ("--lora a.gguf --lora b.gguf", {"lora": ["a.gguf", "b.gguf"]}),
        ("--control-vector-layer-range 2 10", {"control_vector_layer_range": [2, 10]}),
        ("-fa on -c 8 -c 16", {"flash_attn": "on", "ctx_size": 16}),
        # bare -fa, from before flash attention took a value, still means on
        ("-fa -c 8", {"flash_attn": "on", "ctx_size": 8}),
        ("--jinja --flash-attn", {"jinja": True, "flash_attn": "on"}),
        ("-a 'my model'", {"alias": "my model"}),
        (
            "--chat-template-kwargs '{\"enable_thinking\": false}'",
            {"chat_template_kwargs": '{"enable_thinking": false}'},
        ),
        ("--chat-template-kwargs='{\"a\":1}'", {"chat_template_kwargs": '{"a":1}'}),
    ],
)
def test_llama_server_values(text: str, expected: dict[str, Any]) -> None:
    assert options("llama-cpp", "llama-server " + text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m --enable-prefix-caching", {"model": "m", "enable_prefix_caching": True}),
        ("m --disable-prefix-caching", {"model": "m", "enable_prefix_caching": False}),
        ("m --no-enforce-eager", {"model": "m", "enforce_eager": False}),
        ("m --enable-uvicorn-access-log", {"model": "m", "disable_uvicorn_access_log": False}),
        (
            "m --lora-modules a=/x b=/y --max-loras 2",
            {"model": "m", "lora_modules": ["a=/x", "b=/y"], "max_loras": 2},
        ),
        ("--served-model-name a b -- m", {"served_model_name": ["a", "b"], "model": "m"}),
        ("m --middleware a --middleware b", {"model": "m", "middleware": ["a", "b"]}),
        ("m --max-model-len 32k", {"model": "m", "max_model_len": "32k"}),
        ("m --max-model-len 4096", {"model": "m", "max_model_len": 4096}),
        ("m --gpu_memory_utilization 0.9", {"model": "m", "gpu_memory_utilization": 0.9}),
        ("m --hf-token", {"model": "m", "hf_token": True}),
        ("m --hf-token hf_abc", {"model": "m", "hf_token": "hf_abc"}),
        ("--model m --dtype half", {"model": "m", "dtype": "half"}),
        ("m --max-lora-rank 64", {"model": "m", "max_lora_rank": 64}),
        (
            'm -cc \'{"level": 3, "cudagraph_capture_sizes": [1, 2]}\'',
            {"model": "m", "compilation_config": '{"level": 3, "cudagraph_capture_sizes": [1, 2]}'},
        ),
    ],
)
def test_vllm_values(text: str, expected: dict[str, Any]) -> None:
    assert options("vllm", "vllm serve " + text) == expected


def test_unknown_flags_are_kept_verbatim_in_order_with_their_values() -> None:
    result = options("llama-cpp", "llama-server -m a --future-flag x y --other=1 -c 8 --bare -Z")
    assert result == {
        "model": "a",
        "ctx_size": 8,
        "extra_args": ["--future-flag", "x", "y", "--other=1", "--bare", "-Z"],
    }


@pytest.mark.parametrize(
    ("backend", "text", "token"),
    [
        ("llama-cpp", "llama-server ---model x.gguf", "---model"),
        ("llama-cpp", "llama-server -m a --=x", "--=x"),
        ("llama-cpp", "llama-server -m a -=x", "-=x"),
        ("llama-cpp", "llama-server -m a --- x", "---"),
        ("llama-cpp", "llama-server -m a '--a b'", "--a b"),
        # after an unknown flag, a malformed token is not taken as its value
        ("llama-cpp", "llama-server -m a --future-flag ---x", "---x"),
        ("llama-cpp", "---ctx-size 4", "---ctx-size"),
        ("vllm", "vllm serve m --=3", "--=3"),
        ("mlx", "mlx_lm.server --model m ---port 1", "---port"),
    ],
)
def test_malformed_flags_are_refused_with_the_token_named(backend: str, text: str, token: str) -> None:
    with pytest.raises(BackendInputError) as caught:
        parse_command(backend, text)
    assert caught.value.field == token
    assert f"malformed flag {token!r}" in caught.value.message


def test_values_and_the_end_of_options_are_not_malformed_flags() -> None:
    assert options("llama-cpp", "llama-server -a --- --future - --x= --y=-=z -- ") == {
        "alias": "---",
        "extra_args": ["--future", "-", "--x=", "--y=-=z"],
    }
    assert options("vllm", "vllm serve -- -") == {"model": "-"}


def test_vllm_dotted_config_arguments_are_kept() -> None:
    assert options("vllm", "vllm serve m -cc.mode=3 --compilation-config.level 3")["extra_args"] == [
        "-cc.mode=3",
        "--compilation-config.level",
        "3",
    ]


@pytest.mark.parametrize(
    ("backend", "text", "message"),
    [
        ("llama-cpp", "llama-server -c lots", "-c takes an integer; got 'lots'"),
        ("llama-cpp", "llama-server --temp hot", "--temp takes a number; got 'hot'"),
        ("llama-cpp", "llama-server -fa maybe", "-fa takes one of on, off, auto; got 'maybe'"),
        ("llama-cpp", "llama-server -sm -m x", "-sm needs a value (one of none, layer, row, tensor)"),
        ("llama-cpp", r"llama-server -m .\models\a.gguf", "backslash before 'm'"),
        ("llama-cpp", "llama-server -m", "-m needs a value (a string)"),
        (
            "llama-cpp",
            "llama-server --split-mode diagonal",
            "--split-mode takes one of none, layer, row, tensor",
        ),
        ("llama-cpp", "llama-server --mlock=yes", "--mlock is a switch and takes no value"),
        ("llama-cpp", "llama-server model.gguf", "write --model model.gguf"),
        ("llama-cpp", "llama-server -m a b.gguf", "unexpected argument 'b.gguf'"),
        ("llama-cpp", "llama-server --control-vector-layer-range 1", "needs a value"),
        ("vllm", "vllm serve m --dtype float8", "--dtype takes one of auto, bfloat16"),
        ("vllm", "vllm serve m --max-lora-rank 7", "--max-lora-rank takes one of 1, 8, 16"),
        ("vllm", "vllm serve m extra", "the model is already given as 'm'"),
        ("vllm", "vllm serve m --served-model-name", "--served-model-name needs one or more values"),
        ("vllm", "vllm chat m", "vllm needs the serve subcommand"),
        ("mlx", "mlx_lm.server --log-level LOUD", "--log-level takes one of DEBUG, INFO"),
        ("mlx", "ollama serve", "'ollama' is not a mlx_lm.server command"),
        ("llama-cpp", "llama-server --port 70000", "option port: Expected `int` <= 65535"),
        ("vllm", "vllm serve m --port -1", "option port: Expected `int` >= 1"),
        ("mlx", "mlx_lm.server --host ''", "option host: Expected `str` of length >= 1"),
    ],
)
def test_bad_values_name_the_flag_and_what_it_takes(backend: str, text: str, message: str) -> None:
    with pytest.raises(BackendInputError) as caught:
        parse_command(backend, text)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("backend", "text", "named"),
    [
        ("llama-cpp", "vllm serve Qwen/Qwen3-0.6B", "this is a vllm command"),
        ("llama-cpp", "python -m vllm.entrypoints.openai.api_server --model m", "this is a vllm command"),
        ("llama-cpp", "mlx_lm.server --model m", "this is a mlx command"),
        ("vllm", "./llama-server -m a.gguf", "this is a llama-cpp command"),
        ("mlx", "llama-server.exe -m a.gguf", "this is a llama-cpp command"),
        ("mlx", "vllm serve m", "this is a vllm command"),
        ("llama-cpp", "--tensor-parallel-size 2 --enable-prefix-caching", "looks like a vllm command"),
        ("mlx", "-ngl 99 -fa on", "looks like a llama-cpp command"),
    ],
)
def test_a_command_of_another_backend_is_named(backend: str, text: str, named: str) -> None:
    with pytest.raises(WrongBackendError, match=named):
        parse_command(backend, text)


def test_errors_carry_the_option_key() -> None:
    with pytest.raises(OptionValueError) as caught:
        parse_command("llama-cpp", "llama-server --ctx-size big")
    assert caught.value.field == "ctx_size"
    with pytest.raises(OptionValueError) as caught:
        parse_command("llama-cpp", "llama-server --port 70000")
    assert caught.value.field == "port"


def test_unknown_backend_is_an_input_error() -> None:
    with pytest.raises(BackendInputError, match="unknown backend 'ollama'"):
        parse_command("ollama", "ollama serve")
