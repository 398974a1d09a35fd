"""Turn one command-line token into the typed value of a flag, and back."""

from __future__ import annotations

import math
import re

from llamactl.backends.cli_spec import FlagSpec
from llamactl.backends.errors import OptionValueError

INTEGER = re.compile(r"[+-]?\d+")
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Every spelling of the pinned backends has this shape (vLLM's dotted ``-cc.mode`` included), so
# an unknown flag without it (``---model``, ``--=x``, ``-=x``) is a typo, never a newer flag.
WELL_FORMED_FLAG = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.\-]*(=.*)?", re.DOTALL)

KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "json": "a JSON document",
    "int_or_str": "a number or a word",
}

ScalarValue = bool | int | float | str


def describe(flag: FlagSpec) -> str:
    """What a flag takes, for error messages."""
    if flag.choices:
        return "one of " + ", ".join(flag.choices)
    return KIND_NAMES.get(flag.kind, "no value")


def looks_like_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not NEGATIVE_NUMBER.fullmatch(token)


def is_well_formed_flag(token: str) -> bool:
    """Whether ``token`` (with any ``=value``) is one or two dashes and a name a backend could know."""
    return WELL_FORMED_FLAG.fullmatch(token) is not None


def parse_token(flag: FlagSpec, spelling: str, token: str) -> int | float | str:
    """The typed value of ``token`` given to ``spelling``; raise naming the flag if it does not fit."""
    value: int | float | str
    if flag.kind == "int":
        if not INTEGER.fullmatch(token):
            raise _mismatch(flag, spelling, token)
        value = int(token)
    elif flag.kind == "float":
        if not DECIMAL.fullmatch(token):
            raise _mismatch(flag, spelling, token)
        value = float(token)
    elif flag.kind == "int_or_str":
        value = int(token) if INTEGER.fullmatch(token) else token
    else:
        value = token
    if flag.choices and str(value) not in flag.choices:
        raise _mismatch(flag, spelling, token)
    return value


def format_value(value: ScalarValue) -> str:
    """The command-line token for a typed value: floats in their shortest exact form."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionValueError(f"{value} is not a finite number")
        return repr(value)
    return str(value)


def _mismatch(flag: FlagSpec, spelling: str, token: str) -> OptionValueError:
    return OptionValueError(f"{spelling} takes {describe(flag)}; got {token!r}", field=flag.key)
