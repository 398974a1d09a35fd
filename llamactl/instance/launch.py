"""The argv and environment that start an instance: native or ``docker run``."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

import msgspec

from llamactl.backends import Backend, get_backend
from llamactl.config import redacted_command
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
    expose_metrics: bool = False
    """``metrics.scrape_backends``: start the backend with its own /metrics on, where it has a switch."""


class LaunchCommand(msgspec.Struct, frozen=True):
    argv: list[str]
    environment: dict[str, str]
    shown: str
    """The command as the instance log shows it: the variables llamactl sets, then argv, as a POSIX
    shell line, with secrets (``--api-key``'s value, ``HF_TOKEN``'s) as ``***``."""
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
    (the Go version set them on the docker client only, where they did nothing)
    as ``-e NAME``, which makes docker take the value from its own environment:
    a value in argv (``-e HF_TOKEN=…``) is readable by every local user in
    ``ps``, and a ``--env-file`` would put it on disk, where it outlives a
    llamactl killed before it could delete it. The docker client sees the
    variables too, so one meant for the container that docker itself reads
    (``DOCKER_HOST``) steers the client as well. The container is named after
    the instance.
    """
    backend = get_backend(options.backend_type)
    typed = backend.launch_options(
        backend.with_address(options.backend_options, host, port), settings.expose_metrics
    )
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
            *(token for key in container_variables for token in ("-e", key)),
            docker.image,
            *backend.build_docker_arguments(typed),
        ]
        return LaunchCommand(
            argv=argv,
            environment={**base_environment, **container_variables},
            shown=_shown(container_variables, argv, backend),
            stop_argv=["docker", "stop", f"llamactl-{name}"],
        )
    command = options.command_override or settings.command
    argv = [command, *settings.args, *backend.build_arguments(typed)]
    return LaunchCommand(
        argv=argv, environment={**base_environment, **variables}, shown=_shown(variables, argv, backend)
    )


def _shown(variables: Mapping[str, str], argv: list[str], backend: Backend) -> str:
    assignments = [f"{key}={value}" for key, value in variables.items()]
    return shlex.join(redacted_command([*assignments, *argv], backend))
