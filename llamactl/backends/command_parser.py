"""Turn a pasted shell command into a backend's instance options.

``CUDA_VISIBLE_DEVICES=0 ./llama-server -m model.gguf -ngl 99`` becomes the
environment ``{"CUDA_VISIBLE_DEVICES": "0"}`` and llama.cpp options. The
executable may be left out (arguments only); a command that starts another
backend is refused with that backend named.

An executable given by path (``~/llama.cpp/build/bin/llama-server``,
``./llama-server``) becomes ``command_override``, so the binary the user ran is
the one started; a bare name (``llama-server``) runs the configured command. A
relative path is kept as written: it resolves against llamactl's working
directory when the instance starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.errors import CommandSyntaxError, WrongBackendError
from llamactl.backends.launcher import Launcher, executable_name
from llamactl.backends.options_base import BackendOptions
from llamactl.backends.shell_command import split_shell_command


class ParsedCommand(msgspec.Struct, frozen=True, omit_defaults=True):
    """Ready to be sent as the body of an instance create."""

    backend_type: BackendType
    backend_options: BackendOptions
    environment: dict[str, str] = {}
    command_override: str | None = None
    """The executable, when the command names it by path; the instance option of that name."""


# Windows paths too: the parse runs wherever llamactl does, the paste may come from anywhere.
PATH_SEPARATOR = re.compile(r"[\\/]")


def parse_command(backend: Backend, text: str, all_backends: Sequence[Backend]) -> ParsedCommand:
    shell = split_shell_command(text)
    launcher = _find_launcher(backend, shell.words, all_backends)
    if launcher is None:  # no executable to tell the backend
        options = backend.options_from_arguments(shell.words)
        _refuse_foreign_flags(backend, options.extra_args, all_backends)
        command_override = None
    else:
        taken = launcher.match(shell.words)
        assert taken is not None
        options = backend.options_from_arguments(shell.words[taken:])
        command_override = _executable_path(backend, launcher, shell.words[0])
    return ParsedCommand(
        backend_type=backend.backend_type,
        backend_options=options,
        environment=shell.environment,
        command_override=command_override,
    )


def parse_command_of_any_backend(text: str, all_backends: Sequence[Backend]) -> ParsedCommand:
    """Parse a command whose executable names its backend (``vllm serve …``, ``llama-server …``)."""
    words = split_shell_command(text).words
    for candidate in all_backends:
        if any(launcher.match(words) is not None for launcher in candidate.launchers):
            return parse_command(candidate, text, all_backends)
    known = ", ".join(launcher.describe() for backend in all_backends for launcher in backend.launchers[:1])
    raise CommandSyntaxError(
        f"cannot tell the backend of {words[0]!r}: start the command with {known}, or give backend_type",
        field="command",
    )


def _find_launcher(backend: Backend, words: list[str], all_backends: Sequence[Backend]) -> Launcher | None:
    """The backend's launcher at the head of the command, or None when the command is arguments only."""
    if not words or words[0].startswith("-"):
        return None
    for candidate in all_backends:
        for launcher in candidate.launchers:
            if launcher.match(words) is None:
                continue
            if candidate is not backend:
                raise WrongBackendError(
                    f"this is a {candidate.config_key} command ({launcher.describe()}), not a "
                    f"{backend.config_key} one: create it with backend {candidate.backend_type.value}",
                    field="command",
                )
            return launcher
    _refuse_unknown_launcher(backend, words)
    return None


def _executable_path(backend: Backend, launcher: Launcher, executable: str) -> str | None:
    """The executable if given by path and it can stand for the configured command alone.

    ``command_override`` replaces only the command, never the configured
    arguments, so it fits launchers that are the executable followed by the
    backend's default arguments (``/opt/bin/vllm serve``), not ``python -m …``
    or ``mlx_lm server``: those paths are not kept, and the configured command runs.
    """
    if launcher.python_module or launcher.words[1:] != backend.default_args:
        return None
    return executable if PATH_SEPARATOR.search(executable) else None


def _refuse_unknown_launcher(backend: Backend, words: list[str]) -> None:
    """A first word that is not an argument: a known executable used wrongly, or an unknown one."""
    name = executable_name(words[0])
    for launcher in backend.launchers:
        if not launcher.python_module and len(launcher.words) > 1 and launcher.words[0] == name:
            raise CommandSyntaxError(
                f"{words[0]} needs the {' '.join(launcher.words[1:])} subcommand to start a server "
                f"(e.g. {launcher.describe()} MODEL)",
                field="command",
            )
    if backend.spec.positional is None:
        expected = " or ".join(launcher.describe() for launcher in backend.launchers[:2])
        hint = f" (for a model file, write --model {words[0]})" if "." in name or "/" in words[0] else ""
        raise CommandSyntaxError(
            f"{words[0]!r} is not a {backend.program} command: start it with {expected}, "
            f"or paste only the arguments{hint}",
            field="command",
        )


def _refuse_foreign_flags(backend: Backend, extra_args: list[str], all_backends: Sequence[Backend]) -> None:
    """Arguments pasted without their executable: name the backend when every unknown flag is another's."""
    unknown = [token for token in extra_args if token.startswith("-")]
    if not unknown:
        return
    for candidate in all_backends:
        if candidate is not backend and all(candidate.knows_flag(token) for token in unknown):
            raise WrongBackendError(
                f"this looks like a {candidate.config_key} command: {', '.join(unknown)} "
                f"{'is a flag' if len(unknown) == 1 else 'are flags'} of {candidate.program}, "
                f"not of {backend.program}; create it with backend {candidate.backend_type.value}",
                field=unknown[0],
            )
