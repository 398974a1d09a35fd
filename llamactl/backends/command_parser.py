"""Turn a pasted shell command into a backend's instance options.

``CUDA_VISIBLE_DEVICES=0 ./llama-server -m model.gguf -ngl 99`` becomes the
environment ``{"CUDA_VISIBLE_DEVICES": "0"}`` and llama.cpp options. The
executable may be left out (arguments only); a command that starts another
backend is refused with that backend named.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from llamactl.backends.adapter import Backend
from llamactl.backends.backend_type import BackendType
from llamactl.backends.errors import CommandSyntaxError, WrongBackendError
from llamactl.backends.launcher import executable_name
from llamactl.backends.options_base import BackendOptions
from llamactl.backends.shell_command import split_shell_command


class ParsedCommand(msgspec.Struct, frozen=True, omit_defaults=True):
    """Ready to be sent as the body of an instance create."""

    backend_type: BackendType
    backend_options: BackendOptions
    environment: dict[str, str] = {}


def parse_command(backend: Backend, text: str, all_backends: Sequence[Backend]) -> ParsedCommand:
    shell = split_shell_command(text)
    arguments = _strip_launcher(backend, shell.words, all_backends)
    options = backend.options_from_arguments(arguments)
    if arguments is shell.words:  # no executable to tell the backend
        _refuse_foreign_flags(backend, options.extra_args, all_backends)
    return ParsedCommand(
        backend_type=backend.backend_type, backend_options=options, environment=shell.environment
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


def _strip_launcher(backend: Backend, words: list[str], all_backends: Sequence[Backend]) -> list[str]:
    if not words or words[0].startswith("-"):
        return words
    for candidate in all_backends:
        for launcher in candidate.launchers:
            taken = launcher.match(words)
            if taken is None:
                continue
            if candidate is not backend:
                raise WrongBackendError(
                    f"this is a {candidate.config_key} command ({launcher.describe()}), not a "
                    f"{backend.config_key} one: create it with backend {candidate.backend_type.value}",
                    field="command",
                )
            return words[taken:]
    _refuse_unknown_launcher(backend, words)
    return words


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
