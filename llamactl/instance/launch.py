"""The argv and environment that start an instance: native or ``docker run``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from llamactl.backends import get_backend
from llamactl.instance.options import InstanceOptions


class DockerSettings(msgspec.Struct, frozen=True):
    image: str
    args: list[str] = []
    environment: dict[str, str] = {}


class BackendSettings(msgspec.Struct, frozen=True):
    """How the config says to run one backend (``backends.<name>``)."""

    command: str
    args: list[str] = []
    environment: dict[str, str] = {}
    docker: DockerSettings | None = None
    docker_enabled: bool = False


class LaunchCommand(msgspec.Struct, frozen=True):
    argv: list[str]
    environment: dict[str, str]
    stop_argv: list[str] = []
    """Run first when stopping: a container outlives its ``docker run`` client unless told to stop."""


def launch_command(
    name: str,
    options: InstanceOptions,
    settings: BackendSettings,
    host: str,
    port: int,
    base_environment: Mapping[str, str] = os.environ,
) -> LaunchCommand:
    """Precedence, later wins: llamactl's environment, the backend's, the instance's.

    In Docker mode the backend's and instance's variables go into the container
    with ``-e`` (the Go version set them on the docker client only, where they
    did nothing), and the container is named after the instance.
    """
    backend = get_backend(options.backend_type)
    typed = backend.with_address(options.backend_options, host, port)
    variables = {**settings.environment, **options.environment}
    use_docker = options.docker_enabled if options.docker_enabled is not None else settings.docker_enabled
    if use_docker and settings.docker is not None:
        docker = settings.docker
        container_variables = {**docker.environment, **variables}
        argv = [
            "docker",
            *docker.args,
            "--name",
            f"llamactl-{name}",
            *(token for key, value in container_variables.items() for token in ("-e", f"{key}={value}")),
            docker.image,
            *backend.build_docker_arguments(typed),
        ]
        return LaunchCommand(
            argv=argv, environment=dict(base_environment), stop_argv=["docker", "stop", f"llamactl-{name}"]
        )
    command = options.command_override or settings.command
    argv = [command, *settings.args, *backend.build_arguments(typed)]
    return LaunchCommand(argv=argv, environment={**base_environment, **variables})
