"""Options sent as JSON (API, config, Go llamactl configs): lenient in spelling, strict in value."""

from typing import Any

import msgspec
import pytest

from llamactl.backends import BackendInputError, OptionValueError, get_backend


def read(backend: str, mapping: dict[str, Any]) -> dict[str, Any]:
    options = get_backend(backend).options_from_json(mapping)
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(options))
    return result


@pytest.mark.parametrize("key", ["gpu_layers", "ngl", "-ngl", "n-gpu-layers", "n_gpu_layers", "--gpu-layers"])
def test_any_spelling_of_a_flag_is_its_key(key: str) -> None:
    assert read("llama-cpp", {key: 99}) == {"gpu_layers": 99}


def test_vllm_short_spelling() -> None:
    assert read("vllm", {"tp": 2, "model": "m"}) == {"tensor_parallel_size": 2, "model": "m"}


def test_zero_and_false_are_kept() -> None:
    assert read("llama-cpp", {"temp": 0, "gpu_layers": 0, "mmap": False}) == {
        "temp": 0.0,
        "gpu_layers": 0,
        "mmap": False,
    }


def test_go_negative_keys_set_the_paired_boolean() -> None:
    assert read("llama-cpp", {"no_mmap": True, "no_webui": True}) == {"mmap": False, "webui": False}
    assert read("vllm", {"disable_prefix_caching": True}) == {"enable_prefix_caching": False}


def test_false_on_a_switch_without_a_negative_is_unset() -> None:
    assert read("llama-cpp", {"mlock": False, "verbose": "true"}) == {"verbose": True}


def test_go_extra_args_map_form() -> None:
    assert read("llama-cpp", {"extra_args": {"future-flag": "x", "--bare": "", "-z": "1"}}) == {
        "extra_args": ["--future-flag", "x", "--bare", "-z", "1"]
    }
    assert read("llama-cpp", {"extra_args": ["--a", "1"]}) == {"extra_args": ["--a", "1"]}


def test_json_valued_flags_accept_objects_and_keep_strings_exactly() -> None:
    assert read("vllm", {"compilation_config": {"level": 3}}) == {"compilation_config": '{"level":3}'}
    assert read("vllm", {"compilation_config": '{ "level" : 3 }'}) == {
        "compilation_config": '{ "level" : 3 }'
    }
    assert read("vllm", {"allowed_origins": ["*"]}) == {"allowed_origins": '["*"]'}


def test_go_string_for_a_list_and_numbers_for_strings() -> None:
    assert read("vllm", {"lora_modules": "a=/x"}) == {"lora_modules": ["a=/x"]}
    assert read("vllm", {"grpc_port": 50051}) == {"grpc_port": "50051"}
    assert read("llama-cpp", {"ctx_size": "4096"}) == {"ctx_size": 4096}


@pytest.mark.parametrize(
    ("backend", "mapping", "field", "message"),
    [
        (
            "llama-cpp",
            {"ctx_sise": 1},
            "ctx_sise",
            "unknown option 'ctx_sise' for llama-server (did you mean 'ctx_size'?)",
        ),
        ("llama-cpp", {"ctx_size": "big"}, "ctx_size", "option ctx_size: Expected `int`, got `str`"),
        ("llama-cpp", {"flash_attn": "yes"}, "flash_attn", "option flash_attn: Invalid enum value 'yes'"),
        (
            "llama-cpp",
            {"ngl": 1, "gpu_layers": 2},
            "gpu_layers",
            "gpu_layers is given twice, as 'ngl' and 'gpu_layers'",
        ),
        ("llama-cpp", {"extra_args": "--x"}, "extra_args", "extra_args takes a list of argv tokens"),
        ("vllm", {"max_lora_rank": 7}, "max_lora_rank", "option max_lora_rank: Invalid enum value 7"),
        ("mlx", {"temp": [1]}, "temp", "option temp: Expected `float`, got `array`"),
        ("llama-cpp", {"port": 70000}, "port", "option port: Expected `int` <= 65535"),
        ("mlx", {"port": -1}, "port", "option port: Expected `int` >= 1"),
        ("vllm", {"--port": "65536"}, "port", "option port: Expected `int` <= 65535"),
        ("llama-cpp", {"host": ""}, "host", "option host: Expected `str` of length >= 1"),
    ],
)
def test_bad_json_options_name_the_key(
    backend: str, mapping: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(OptionValueError) as caught:
        get_backend(backend).options_from_json(mapping)
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize("backend", ["llama-cpp", "mlx", "vllm"])
def test_ports_one_to_65535_and_zero_asks_for_any(backend: str) -> None:
    assert read(backend, {"port": 1, "host": "0.0.0.0"}) == {"port": 1, "host": "0.0.0.0"}
    assert read(backend, {"port": 65535}) == {"port": 65535}
    # as for bind(2) and the Go llamactl: no port of its own, so llamactl allocates one
    assert read(backend, {"port": 0}) == {}


def test_unknown_backend_name() -> None:
    with pytest.raises(BackendInputError, match="known backends: llama-cpp, llama_cpp, mlx, mlx_lm, vllm"):
        get_backend("tgi")
