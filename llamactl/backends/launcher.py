"""Recognise the words that start a backend server at the head of a command."""

from __future__ import annotations

import re

import msgspec

PYTHON = re.compile(r"python(\d+(\.\d+)*)?")


class Launcher(msgspec.Struct, frozen=True):
    """One way a backend's server is started.

    ``words`` are matched at the head of the command: the first by its base
    name (so ``./llama-server``, ``/opt/x/llama-server.exe`` and
    ``llama-server-vulkan`` match ``llama-server``), the rest exactly (a
    subcommand such as ``serve``). With ``python_module`` the words follow
    ``python -m``.
    """

    words: tuple[str, ...]
    python_module: bool = False

    def match(self, words: list[str]) -> int | None:
        """How many leading words this launcher takes, or None when it does not match."""
        head = words
        skipped = 0
        if self.python_module:
            if len(words) < 2 or not PYTHON.fullmatch(executable_name(words[0])) or words[1] != "-m":
                return None
            head, skipped = words[2:], 2
            if not head or head[0] != self.words[0]:
                return None
        elif not head or not _names_executable(executable_name(head[0]), self.words[0]):
            return None
        if tuple(head[1 : len(self.words)]) != self.words[1:]:
            return None
        return skipped + len(self.words)

    def describe(self) -> str:
        return ("python -m " if self.python_module else "") + " ".join(self.words)


def executable_name(word: str) -> str:
    """The base name of a command word, lower-cased and without a Windows ``.exe``."""
    name = re.split(r"[\\/]", word)[-1].lower()
    return name.removesuffix(".exe")


def _names_executable(name: str, expected: str) -> bool:
    return name == expected or name.startswith(expected + "-")
