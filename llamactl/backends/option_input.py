"""Read backend options from JSON (API bodies, config files, the database).

Keys may use any spelling of a flag (the key, a long or short spelling, with
dashes or underscores, with or without leading dashes); the Go llamactl's
forms are accepted too: ``no_mmap: true`` for ``mmap: false``, a map for
``extra_args``, a string where a list is expected.

Values narrower than their type (a port, a host) are checked by the options
struct's constrained fields; ``port: 0`` asks for any free port, as for
``bind(2)`` and the Go llamactl, so it is left unset and llamactl allocates one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from llamactl.backends.cli_spec import CliSpec, FlagSpec
from llamactl.backends.errors import OptionValueError
from llamactl.backends.options_base import BackendOptions

OptionsT = TypeVar("OptionsT", bound=BackendOptions)

VALIDATION_PATH = re.compile(r" - at `\$\.([^`\[]+)")
LISTEN_PORT = "port"
ANY_PORT = 0


def options_from_mapping(spec: CliSpec, options_type: type[OptionsT], mapping: Mapping[str, Any]) -> OptionsT:
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in mapping.items():
        if name == "extra_args":
            values["extra_args"] = extra_args_from_json(value)
            continue
        target = spec.by_name.get(name) or spec.by_name.get(name.lstrip("-"))
        if target is None:
            raise OptionValueError(_unknown_key_message(spec, name), field=name)
        flag, truth = target
        if flag.key in given_as:
            raise OptionValueError(
                f"option {flag.key} is given twice, as {given_as[flag.key]!r} and {name!r}", field=name
            )
        given_as[flag.key] = name
        coerced = _coerce(flag, truth, value)
        if coerced is not None:
            values[flag.key] = coerced
    return options_from_values(options_type, values, strict=False)


def options_from_values(
    options_type: type[OptionsT], values: dict[str, Any], strict: bool = True
) -> OptionsT:
    """The options struct of values by key (read from argv or JSON); a value out of range names its key."""
    port = values.get(LISTEN_PORT)
    if type(port) is int and port == ANY_PORT:
        del values[LISTEN_PORT]
    try:
        return msgspec.convert(values, options_type, strict=strict)
    except msgspec.ValidationError as error:
        raise _validation_error(error) from None


def extra_args_from_json(value: Any) -> list[str]:
    """``extra_args`` as argv tokens, from a list or the Go llamactl's ``{"flag": "value"}`` map."""
    if isinstance(value, list) and all(isinstance(token, str) for token in value):
        return list(value)
    if isinstance(value, dict):
        tokens: list[str] = []
        for flag, flag_value in value.items():
            tokens.append(flag if str(flag).startswith("-") else f"--{flag}")
            if flag_value not in ("", None):
                tokens.append(str(flag_value))
        return tokens
    raise OptionValueError(
        'extra_args takes a list of argv tokens or a map {"flag": "value"}', field="extra_args"
    )


def _coerce(flag: FlagSpec, truth: bool, value: Any) -> Any:
    if value is None:
        return None
    if flag.kind == "switch":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if isinstance(value, bool):
            value = value == truth
            # A switch with no negative spelling cannot be written as false: false is unset.
            return value if value or flag.negations else None
        return value
    if flag.is_list or flag.arity == "two":
        items = value if isinstance(value, list) else [value]
        return [_coerce_scalar(flag, item) for item in items]
    return _coerce_scalar(flag, value)


def _coerce_scalar(flag: FlagSpec, value: Any) -> Any:
    if flag.kind == "json" and isinstance(value, (dict, list)):
        return msgspec.json.encode(value).decode()
    if flag.kind in ("str", "json") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _unknown_key_message(spec: CliSpec, name: str) -> str:
    close = difflib.get_close_matches(name.lstrip("-").replace("-", "_"), list(spec.by_key), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown option {name!r} for {spec.program}{hint}; put flags llamactl does not know in extra_args"


def _validation_error(error: msgspec.ValidationError) -> OptionValueError:
    text = str(error)
    match = VALIDATION_PATH.search(text)
    if match is None:
        return OptionValueError(f"invalid options: {text}")
    key = match.group(1)
    detail = text[: match.start()].replace(" | null", "")  # every option may be null; saying so adds nothing
    return OptionValueError(f"option {key}: {detail}", field=key)
