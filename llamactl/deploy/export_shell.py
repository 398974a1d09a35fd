"""An exported command as bash: words that may hold shell variables, and the launch script around them.

An export's argv is llamactl's own, but a few of its values must be read when
the script runs, not when it was written: the port (so the script can be moved),
the adapters' place (beside the script, wherever it is), and secrets (never
written down). Such a value is marked in a token with ``variable(NAME)``; the
token is then rendered as a double-quoted word that expands ``${NAME}``, and
every other token is quoted as it is.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

# Printable ASCII, so that a mark survives being written into JSON (vLLM's --lora-modules objects).
_MARKED = re.compile(r"%%llamactl:([A-Z_][A-Z0-9_]*)%%")
SCRIPT_DIR = "SCRIPT_DIR"
PORT = "PORT"


def variable(name: str) -> str:
    """A mark, inside a token, for the value of the shell variable ``name`` when the script runs."""
    return f"%%llamactl:{name}%%"


def shell_word(token: str) -> str:
    """``token`` as one bash word: quoted literally, or double-quoted around its variables."""
    if _MARKED.search(token) is None:
        return shlex.quote(token)
    parts = _MARKED.split(token)
    # split() alternates: literal text at even indices, variable names at odd ones.
    text = "".join(
        "${" + part + "}" if index % 2 else re.sub(r'(["\\$`])', r"\\\1", part)
        for index, part in enumerate(parts)
    )
    return f'"{text}"'


def shown(token: str) -> str:
    """``token`` as the manifest records it: each variable as ``$NAME``."""
    return _MARKED.sub(r"$\1", token)


def launch_script(
    header: Sequence[str],
    defaults: Mapping[str, str],
    secrets: Mapping[str, str],
    environment: Mapping[str, str],
    argv: Sequence[str],
) -> str:
    """The script: dlm's shape (``set -euo pipefail``, ``SCRIPT_DIR``, ``export`` lines, ``exec … "$@"``).

    ``defaults``: variables the caller may set, and their values otherwise (``PORT``). ``secrets`` maps
    each variable the script needs but never sets to what it stands for; it stops with that text when
    one is unset.
    """
    lines = ["#!/usr/bin/env bash", *(f"# {line}" for line in header)]
    lines += ["set -euo pipefail", f'{SCRIPT_DIR}="$(cd -- "$(dirname -- "${{BASH_SOURCE[0]}}")" && pwd)"']
    lines += [f'{name}="${{{name}:-{value}}}"' for name, value in defaults.items()]
    if secrets:
        lines.append("# Secrets are not written into an export: set these before running it.")
        lines += [f': "${{{name}:?set {name}: {meaning}}}"' for name, meaning in secrets.items()]
    for name, value in environment.items():
        lines.append(f"export {name}" if value == variable(name) else f"export {name}={shell_word(value)}")
    lines.append(" ".join(["exec", *map(shell_word, argv), '"$@"']))
    return "\n".join(lines) + "\n"
