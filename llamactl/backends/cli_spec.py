"""The checked-in description of a backend's command line.

Each backend package holds a ``cli_spec.json`` written by
``tools/generate_cli_specs.py`` from the backend's pinned help text. The parser,
the argv builder and the JSON option reader all work from this one description,
so adding a flag to a backend is a regeneration, not an edit in three places.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import msgspec

HELP_CHARS = 300
"""A flag's help is cut here: enough to choose a flag by, not the whole manual."""

ValueKind = Literal["switch", "int", "float", "str", "json", "int_or_str"]
"""What a flag's value is.

``switch`` takes no value (a boolean); ``json`` is a JSON document kept as the
exact string the user wrote; ``int_or_str`` is a number that may also be a word
(``-ngl all``, vLLM's ``--max-model-len 32k``).
"""

Arity = Literal["one", "optional", "many", "two"]
"""How many values one occurrence of a flag takes: exactly one, zero or one
(argparse ``nargs='?'``), one or more (``nargs='+'``), or exactly two."""


class FlagSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One option of a backend's command line."""

    key: str
    """JSON key and options-struct field name."""
    spellings: tuple[str, ...]
    """Every accepted spelling; the first is the canonical one the builder emits."""
    kind: ValueKind
    negations: tuple[str, ...] = ()
    """For a paired boolean (``--mmap`` / ``--no-mmap``): the spellings meaning false."""
    choices: tuple[str, ...] = ()
    arity: Arity = "one"
    repeated: bool = False
    """The flag may be given several times, each occurrence adding to a list."""
    positional: bool = False
    """The value may also be given as the command's positional argument (vLLM's model)."""
    implied: str | None = None
    """The value meant when the flag is given with none: older releases took it as a switch."""
    secret: bool = False
    """The value is a credential (``--api-key``): logs and ``GET /config`` show ``***`` instead."""
    help: str = ""
    """What the backend's ``--help`` says of it, on one line (at most HELP_CHARS)."""

    @property
    def is_list(self) -> bool:
        return self.repeated or self.arity == "many"

    @property
    def canonical(self) -> str:
        return self.spellings[0]


class CliSpec(msgspec.Struct, frozen=True, dict=True):
    """Every option of one pinned backend version, with look-up indexes built on first use."""

    program: str
    version: str
    flags: tuple[FlagSpec, ...]

    @cached_property
    def by_key(self) -> dict[str, FlagSpec]:
        return {flag.key: flag for flag in self.flags}

    @cached_property
    def by_spelling(self) -> dict[str, tuple[FlagSpec, bool]]:
        """Map every spelling on the command line to its flag and the boolean it sets."""
        index: dict[str, tuple[FlagSpec, bool]] = {}
        for flag in self.flags:
            for spelling in flag.spellings:
                index[spelling] = (flag, True)
            for spelling in flag.negations:
                index[spelling] = (flag, False)
        return index

    @cached_property
    def by_name(self) -> dict[str, tuple[FlagSpec, bool]]:
        """Map every JSON spelling of a flag (key, or any spelling without its
        dashes, with ``-`` or ``_``) to its flag and the boolean it sets."""
        index: dict[str, tuple[FlagSpec, bool]] = {}
        for spelling, target in self.by_spelling.items():
            bare = spelling.lstrip("-")
            index[bare] = target
            index[bare.replace("-", "_")] = target
        for flag in self.flags:
            index[flag.key] = (flag, True)
        return index

    @cached_property
    def positional(self) -> FlagSpec | None:
        return next((flag for flag in self.flags if flag.positional), None)

    @cached_property
    def secret_flags(self) -> dict[str, FlagSpec]:
        """Map every spelling of a flag whose value is a credential to its flag."""
        return {spelling: flag for flag in self.flags if flag.secret for spelling in flag.spellings}


def load_cli_spec(path: Path) -> CliSpec:
    return msgspec.json.decode(path.read_bytes(), type=CliSpec)
