"""Write option values back as a backend's argument list, driven by its CLI spec.

The output is deterministic: the spec's flag order, each flag's canonical
spelling, the positional model first where the backend takes one, and
``extra_args`` last, verbatim. Parsing the result gives the same options.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llamactl.backends.cli_spec import CliSpec, FlagSpec
from llamactl.backends.flag_values import format_value
from llamactl.backends.options_base import BackendOptions


def build_arguments(spec: CliSpec, options: BackendOptions) -> list[str]:
    values: dict[str, Any] = msgspec.to_builtins(options)
    leading: list[str] = []
    flags: list[str] = []
    for flag in spec.flags:
        value = values.get(flag.key)
        if value is None:
            continue
        if flag.positional:
            leading.append(format_value(value))
        else:
            flags.extend(_flag_tokens(flag, value))
    return leading + flags + list(options.extra_args)


def _flag_tokens(flag: FlagSpec, value: Any) -> list[str]:
    if flag.kind == "switch":
        if value:
            return [flag.canonical]
        return [flag.negations[0]] if flag.negations else []
    if flag.arity == "optional" and value is True:
        return [flag.canonical]
    if flag.repeated:
        return [token for item in value for token in (flag.canonical, format_value(item))]
    if flag.arity in ("many", "two"):
        return [flag.canonical, *(format_value(item) for item in value)]
    return [flag.canonical, format_value(value)]
