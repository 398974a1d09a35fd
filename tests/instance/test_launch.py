"""The command line and environment an instance starts with, native and in Docker, as the log shows it."""

import asyncio
import os
import shlex
import sys
from pathlib import Path

import msgspec

from llamactl.instance.launch import BackendSettings, DockerSettings, launch_command
from llamactl.instance.log_file import InstanceLog
from llamactl.instance.options import InstanceOptions, instance_options_from_json
from llamactl.instance.process import BackendProcess

DOCKER = DockerSettings(
    image="vllm/vllm-openai:latest",
    args=["run", "--rm", "--network", "host"],
    environment={"HF_HUB_OFFLINE": "1", "SHARED": "docker"},
)
VLLM = BackendSettings(command="vllm", args=["serve"], environment={"SHARED": "backend"}, docker=DOCKER)


def vllm_options(**extra: object) -> InstanceOptions:
    return instance_options_from_json(
        {
            "backend_type": "vllm",
            "backend_options": {"model": "org/m", "tensor_parallel_size": 2},
            "environment": {"CUDA_VISIBLE_DEVICES": "0,1"},
            **extra,
        }
    )


def test_native_command_with_port_and_environment_precedence() -> None:
    command = launch_command(
        "chat", vllm_options(), VLLM, "127.0.0.1", 8123, {"PATH": "/bin", "SHARED": "os"}
    )
    assert command.argv == [
        "vllm",
        "serve",
        "org/m",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
    ]
    assert command.environment == {"PATH": "/bin", "SHARED": "backend", "CUDA_VISIBLE_DEVICES": "0,1"}


def test_command_override_replaces_the_executable() -> None:
    command = launch_command("chat", vllm_options(command_override="/opt/vllm/bin/vllm"), VLLM, "h", 1, {})
    assert command.argv[:2] == ["/opt/vllm/bin/vllm", "serve"]


def test_docker_run_passes_the_environment_into_the_container_by_name_only() -> None:
    command = launch_command(
        "chat", vllm_options(docker_enabled=True), VLLM, "127.0.0.1", 8123, {"PATH": "/bin"}
    )
    assert command.argv == [
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "--name",
        "llamactl-chat",
        "-e",
        "HF_HUB_OFFLINE",
        "-e",
        "SHARED",
        "-e",
        "CUDA_VISIBLE_DEVICES",
        "vllm/vllm-openai:latest",
        "--model",
        "org/m",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
    ]
    # docker reads each value of "-e NAME" from its own environment: nothing in argv, nothing on disk
    assert command.environment == {
        "PATH": "/bin",
        "HF_HUB_OFFLINE": "1",
        "SHARED": "backend",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    assert command.stop_argv == ["docker", "stop", "llamactl-chat"]


def test_docker_from_the_backend_config_and_overridden_per_instance() -> None:
    enabled = msgspec.structs.replace(VLLM, docker_enabled=True)
    assert launch_command("chat", vllm_options(), enabled, "h", 1, {}).argv[0] == "docker"
    assert launch_command("chat", vllm_options(docker_enabled=False), enabled, "h", 1, {}).argv[0] == "vllm"


def test_no_docker_section_means_native() -> None:
    mlx = BackendSettings(command="mlx_lm.server")
    options = instance_options_from_json({"backend_type": "mlx_lm", "docker_enabled": True})
    assert launch_command("m", options, mlx, "h", 5, {}).argv == [
        "mlx_lm.server",
        "--host",
        "h",
        "--port",
        "5",
    ]


# --- secrets: out of argv, out of the log ---

SECRETS = ("sk-instance-1", "sk-instance-2", "hf_flag_secret", "hf_env_secret", "docker-arg-secret")


def secret_options(**extra: object) -> InstanceOptions:
    return instance_options_from_json(
        {
            "backend_type": "vllm",
            "backend_options": {
                "model": "org/m",
                "api_key": ["sk-instance-1", "sk-instance-2"],
                "hf_token": "hf_flag_secret",
                "extra_args": ["--served-model-name", "m"],
            },
            "environment": {"HF_TOKEN": "hf_env_secret", "CUDA_VISIBLE_DEVICES": "0"},
            **extra,
        }
    )


def test_the_shown_command_is_a_posix_line_without_secrets() -> None:
    command = launch_command("chat", secret_options(), VLLM, "127.0.0.1", 8123, {"PATH": "/bin"})
    assert command.shown == (
        "SHARED=backend 'HF_TOKEN=***' CUDA_VISIBLE_DEVICES=0 vllm serve org/m --host 127.0.0.1 --port 8123"
        " --api-key '***' '***' --hf-token '***' --served-model-name m"
    )
    assert shlex.split(command.shown)[3:5] == ["vllm", "serve"]
    assert "sk-instance-1" in command.argv  # what runs is unchanged


def test_the_shown_docker_command_masks_assignments_in_the_configured_docker_args() -> None:
    docker = msgspec.structs.replace(DOCKER, args=["run", "--rm", "-e", "HF_TOKEN=docker-arg-secret"])
    settings = msgspec.structs.replace(VLLM, docker=docker, docker_enabled=True)
    command = launch_command("chat", secret_options(), settings, "127.0.0.1", 8123, {})
    for secret in SECRETS:
        assert secret not in command.shown
    assert "-e 'HF_TOKEN=***'" in command.shown and "-e HF_TOKEN " in command.shown
    # only what the user typed into docker.args can hold a value; llamactl adds names only
    assert [token for token in command.argv if "hf_env_secret" in token] == []


def test_a_docker_client_gets_the_values_in_its_environment_and_none_in_its_command_line(
    tmp_path: Path,
) -> None:
    """A stand-in ``docker`` on PATH records what ``ps`` would show of it, and the variables it got."""
    seen = tmp_path / "seen"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, pathlib\n"
        "cmdline = pathlib.Path('/proc/self/cmdline').read_bytes().replace(b'\\0', b' ').decode()\n"
        f"pathlib.Path({str(seen)!r}).write_text(cmdline + '\\n' + os.environ.get('HF_TOKEN', '-'))\n"
    )
    fake.chmod(0o755)
    settings = msgspec.structs.replace(VLLM, docker_enabled=True)
    command = launch_command(
        "chat", secret_options(), settings, "127.0.0.1", 8123, {"PATH": f"{fake.parent}:{os.defpath}"}
    )

    async def run() -> None:
        log = InstanceLog(tmp_path / "chat.log", 0, 0)
        process = await BackendProcess.spawn(command, log, stop_grace=5)
        assert await asyncio.wait_for(process.exited, 30) == 0
        log.close()

    asyncio.run(run())
    cmdline, hf_token = seen.read_text().split("\n")
    assert hf_token == "hf_env_secret"
    assert "-e HF_TOKEN " in cmdline and "hf_env_secret" not in cmdline
    log_text = (tmp_path / "chat.log").read_text()
    for secret in SECRETS:
        assert secret not in log_text


def test_llama_server_starts_at_the_verbosity_that_reports_its_buffers_unless_the_user_chose_one() -> None:
    llama = BackendSettings(command="llama-server")

    def argv(backend_options: dict[str, object]) -> list[str]:
        options = instance_options_from_json(
            {"backend_type": "llama_cpp", "backend_options": backend_options}
        )
        return launch_command("m", options, llama, "127.0.0.1", 8000, {}).argv

    def verbosity(backend_options: dict[str, object]) -> str | None:
        words = argv(backend_options)
        return words[words.index("--verbosity") + 1] if "--verbosity" in words else None

    assert verbosity({"model": "/m.gguf"}) == "4"
    assert verbosity({"model": "/m.gguf", "verbosity": 1}) == "1"
    assert verbosity({"model": "/m.gguf", "log_disable": True}) is None
