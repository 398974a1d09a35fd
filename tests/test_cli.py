"""`llamactl parse` and `llamactl command` as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path


def llamactl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamactl", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_parse_prints_instance_options_ready_to_post() -> None:
    result = llamactl(
        "parse", "llama-cpp", "CUDA_VISIBLE_DEVICES=0 llama-server -m 'a b.gguf' -ngl 0 --temp 0"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "backend_type": "llama_cpp",
        "backend_options": {"gpu_layers": 0, "model": "a b.gguf", "temp": 0.0},
        "environment": {"CUDA_VISIBLE_DEVICES": "0"},
    }


def test_parse_reads_standard_input_and_separate_words() -> None:
    from_stdin = llamactl("parse", "vllm", "-", stdin="vllm serve m \\\n  -tp 2\n")
    from_words = llamactl("parse", "vllm", "vllm", "serve", "m", "-tp", "2")
    assert (
        json.loads(from_stdin.stdout)
        == json.loads(from_words.stdout)
        == {
            "backend_type": "vllm",
            "backend_options": {"model": "m", "tensor_parallel_size": 2},
        }
    )


def test_parse_error_is_one_clear_line_and_exit_2() -> None:
    result = llamactl("parse", "mlx", "mlx_lm.server --model m | tee log")
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr == "llamactl: error: the command contains a pipe '|': paste only the server command\n"
    )


def test_command_prints_a_pasteable_shell_command(tmp_path: Path) -> None:
    parsed = llamactl("parse", "llama-cpp", "HF_HOME='/my dir' llama-server -m 'a b.gguf' --no-mmap -c 0")
    options_file = tmp_path / "options.json"
    options_file.write_text(parsed.stdout)
    result = llamactl("command", "llama-cpp", str(options_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HF_HOME='/my dir' llama-server --ctx-size 0 --no-mmap --model 'a b.gguf'\n"
    # and the printed command parses back to the same options
    assert json.loads(llamactl("parse", "llama-cpp", result.stdout).stdout) == json.loads(parsed.stdout)


def test_command_takes_bare_options_from_stdin() -> None:
    result = llamactl("command", "vllm", "-", stdin='{"model": "m", "tp": 2, "enable_prefix_caching": false}')
    assert result.stdout == "vllm serve m --tensor-parallel-size 2 --disable-prefix-caching\n"


def test_command_rejects_bad_options_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"ctx_size": "big"}')
    result = llamactl("command", "llama-cpp", str(bad))
    assert result.returncode == 2
    assert "option ctx_size: Expected `int`, got `str`" in result.stderr
    missing = llamactl("command", "llama-cpp", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_help_lists_the_commands() -> None:
    result = llamactl("--help")
    assert result.returncode == 0
    assert "parse" in result.stdout and "command" in result.stdout
