"""Instances declared in the config file's ``models:`` section, llama-swap style.

Each entry is an instance name mapped to either a pasted ``command`` (its
backend told by the executable, or by ``backend_type``) or structured
``backend_type`` / ``backend_options``, plus any instance option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from llamactl.backends import BackendInputError, get_backend, parse_command, parse_command_of_known_backend
from llamactl.instance.options import InstanceOptions, check_instance_name, instance_options_from_json


class DeclarationError(ValueError):
    """One declaration is wrong; the message names it and the key (``models.<name>.<key>``)."""


def declared_instances(models: Mapping[str, Mapping[str, Any]]) -> dict[str, InstanceOptions]:
    """Every declaration checked, or DeclarationError for the first bad one."""
    return {name: _declaration(name, entry) for name, entry in models.items()}


def _declaration(name: str, entry: Mapping[str, Any]) -> InstanceOptions:
    try:
        check_instance_name(name)
        document = dict(entry)
        command = document.pop("command", None)
        if command is not None:
            if "backend_options" in document:
                raise BackendInputError("give either command or backend_options, not both", field="command")
            if not isinstance(command, str):
                raise BackendInputError("command must be a string (the pasted command line)", field="command")
            backend_type = document.get("backend_type")
            try:
                parsed = (
                    parse_command(get_backend(backend_type).config_key, command)
                    if backend_type
                    else parse_command_of_known_backend(command)
                )
            except BackendInputError as error:
                raise BackendInputError(error.message, field="command") from None
            document["backend_type"] = parsed.backend_type.value
            document["backend_options"] = msgspec.to_builtins(parsed.backend_options)
            document["environment"] = {**parsed.environment, **document.get("environment", {})}
            if parsed.command_override is not None:
                document.setdefault("command_override", parsed.command_override)
        return instance_options_from_json(document)
    except BackendInputError as error:
        key = f"models.{name}" + (f".{error.field}" if error.field and error.field != "name" else "")
        raise DeclarationError(f"{key}: {error.message}") from None
