"""A backend's arguments as they may be shown: the values of secret flags masked.

The CLI spec marks which flags take a credential (``--api-key``, ``--hf-token``);
their values are replaced wherever the flag appears, in either form
(``--api-key KEY`` or ``--api-key=KEY``), and for as many values as the flag
takes.
"""

from __future__ import annotations

from collections.abc import Sequence

from llamactl.backends.cli_spec import CliSpec, FlagSpec


def redact_arguments(spec: CliSpec, arguments: Sequence[str], mask: str) -> list[str]:
    shown: list[str] = []
    index = 0
    while index < len(arguments):
        token = arguments[index]
        index += 1
        spelling, equals, _ = token.partition("=")
        flag = spec.secret_flags.get(spelling)
        if flag is None:
            shown.append(token)
        elif equals:
            shown.append(f"{spelling}={mask}")
        else:
            shown.append(token)
            values = _values_taken(flag, arguments[index:])
            shown += [mask] * values
            index += values
    return shown


def _values_taken(flag: FlagSpec, following: Sequence[str]) -> int:
    """How many of the following tokens the flag takes as its values, as the backend would read them."""
    if flag.arity == "one":
        return min(1, len(following))  # whatever the next token looks like: llama-server takes it
    if flag.arity == "two":
        return min(2, len(following))
    taken = 0
    # argparse's nargs "?" and "+": values up to the next token that looks like an option
    while taken < len(following) and not following[taken].startswith("-"):
        taken += 1
        if flag.arity == "optional":
            break
    return taken
