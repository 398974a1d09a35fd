"""Read a backend's argument list into option values, driven by its CLI spec.

The rules follow the backends' own parsers: a flag that takes a value consumes
the next token whatever it looks like (``--seed -1``), ``--flag=value`` works
for every flag, ``nargs='+'`` flags take tokens up to the next flag, and the
last occurrence of a single-valued flag wins. Well-formed flags the spec does
not know (a newer release's) are kept verbatim, in order, with their values, in
``extra_args``; a malformed one (``---model``, ``--=x``) is refused, naming it.
"""

from __future__ import annotations

from typing import Any

from llamactl.backends.cli_spec import CliSpec, FlagSpec
from llamactl.backends.errors import BackendInputError, OptionValueError
from llamactl.backends.flag_values import describe, is_well_formed_flag, looks_like_flag, parse_token
from llamactl.errors import echo

BOOLEAN_WORDS = {"true": True, "false": False}


def parse_arguments(spec: CliSpec, tokens: list[str]) -> dict[str, Any]:
    """Option values by JSON key, plus ``extra_args`` when some tokens are unknown."""
    reader = _ArgumentReader(spec, tokens)
    return reader.read()


class _ArgumentReader:
    def __init__(self, spec: CliSpec, tokens: list[str]) -> None:
        self.spec = spec
        self.tokens = tokens
        self.position = 0
        self.values: dict[str, Any] = {}
        self.extra: list[str] = []
        self.positional_given = False
        self.options_ended = False

    def read(self) -> dict[str, Any]:
        while self.position < len(self.tokens):
            token = self._take()
            if token == "--" and not self.options_ended:
                self.options_ended = True  # argparse's end of options: what follows is positional
            elif looks_like_flag(token) and not self.options_ended:
                self._read_flag(token)
            else:
                self._read_positional(token)
        if self.extra:
            self.values["extra_args"] = self.extra
        return self.values

    def _take(self) -> str:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _read_flag(self, token: str) -> None:
        spelling, has_inline, inline = token.partition("=")
        target = self.spec.by_spelling.get(spelling) or self.spec.by_spelling.get(spelling.replace("_", "-"))
        if target is None:
            self._keep_unknown(token, has_inline=bool(has_inline))
            return
        flag, truth = target
        if flag.kind == "switch":
            switched_on = self._switch_value(flag, spelling, truth, inline if has_inline else None)
            if switched_on or flag.negations:
                self.values[flag.key] = switched_on
            else:
                # A switch with no negative spelling cannot be written as false: false is unset.
                self.values.pop(flag.key, None)
        elif flag.arity == "optional":
            self.values[flag.key] = self._optional_value(flag, spelling, inline if has_inline else None)
        elif flag.arity == "many":
            self._store(flag, self._many_values(flag, spelling, inline if has_inline else None))
        elif flag.arity == "two":
            if has_inline:
                raise OptionValueError(f"{spelling} takes two values separated by a space", field=flag.key)
            self.values[flag.key] = [self._value(flag, spelling), self._value(flag, spelling)]
        else:
            value = parse_token(flag, spelling, inline) if has_inline else self._value(flag, spelling)
            self._store(flag, [value])

    def _store(self, flag: FlagSpec, values: list[Any]) -> None:
        if flag.repeated:
            self.values.setdefault(flag.key, []).extend(values)
        elif flag.arity == "many":
            self.values[flag.key] = values
        else:
            self.values[flag.key] = values[0]

    def _value(self, flag: FlagSpec, spelling: str) -> Any:
        token = self._peek()
        missing = token is None or (flag.choices and looks_like_flag(token) and token not in flag.choices)
        if missing and flag.implied is not None:
            return flag.implied
        if token is None:
            raise OptionValueError(f"{spelling} needs a value ({describe(flag)})", field=flag.key)
        if missing:
            raise OptionValueError(
                f"{spelling} needs a value ({describe(flag)}) but is followed by {token!r}",
                field=flag.key,
            )
        self.position += 1
        return parse_token(flag, spelling, token)

    def _switch_value(self, flag: FlagSpec, spelling: str, truth: bool, inline: str | None) -> bool:
        # `--flag true` / `--flag=false` are common in configs written for other
        # tools; accept them, the builder writes the plain form back.
        word = inline if inline is not None else self._peek()
        if word is not None and word.lower() in BOOLEAN_WORDS:
            if inline is None:
                self.position += 1
            return BOOLEAN_WORDS[word.lower()] == truth
        if inline is not None:
            raise OptionValueError(
                f"{spelling} is a switch and takes no value; got {inline!r}", field=flag.key
            )
        return truth

    def _optional_value(self, flag: FlagSpec, spelling: str, inline: str | None) -> bool | int | float | str:
        if inline is not None:
            return parse_token(flag, spelling, inline)
        token = self._peek()
        if token is None or looks_like_flag(token):
            return True
        self.position += 1
        return parse_token(flag, spelling, token)

    def _many_values(self, flag: FlagSpec, spelling: str, inline: str | None) -> list[Any]:
        if inline is not None:
            return [parse_token(flag, spelling, inline)]
        values = []
        while (token := self._peek()) is not None and not looks_like_flag(token):
            values.append(parse_token(flag, spelling, token))
            self.position += 1
        if not values:
            raise OptionValueError(f"{spelling} needs one or more values ({describe(flag)})", field=flag.key)
        return values

    def _keep_unknown(self, token: str, has_inline: bool) -> None:
        """Keep an unknown flag and, unless it carries ``=value``, the values after it."""
        if not is_well_formed_flag(token):
            raise BackendInputError(
                f"malformed flag {echo(token)}: a flag is - or -- and a name of letters, digits, "
                "'-', '_' or '.'",
                field=token,
            )
        self.extra.append(token)
        if has_inline:
            return
        while (value := self._peek()) is not None and not looks_like_flag(value):
            self.extra.append(value)
            self.position += 1

    def _read_positional(self, token: str) -> None:
        flag = self.spec.positional
        if flag is None:
            raise OptionValueError(
                f"unexpected argument {token!r}: {self.spec.program} takes no positional arguments "
                f"(for a model file, write --model {token})",
                field=token,
            )
        if self.positional_given:
            raise OptionValueError(
                f"unexpected argument {token!r}: the model is already given as {self.values[flag.key]!r}",
                field=token,
            )
        self.positional_given = True
        self.values[flag.key] = parse_token(flag, flag.key, token)
