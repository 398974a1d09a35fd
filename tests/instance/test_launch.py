"""The command line and environment an instance starts with, native and in Docker."""

import msgspec

from llamactl.instance.launch import BackendSettings, DockerSettings, launch_command
from llamactl.instance.options import InstanceOptions, instance_options_from_json

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


def test_docker_run_passes_the_environment_into_the_container() -> None:
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
        "HF_HUB_OFFLINE=1",
        "-e",
        "SHARED=backend",
        "-e",
        "CUDA_VISIBLE_DEVICES=0,1",
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
    assert command.environment == {"PATH": "/bin"}
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
