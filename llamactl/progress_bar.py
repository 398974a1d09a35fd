"""A download's progress on stderr: a bar redrawn in place on a terminal, plain lines in a log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from llamactl.sizes import format_bytes

BAR_WIDTH = 30
PLAIN_INTERVAL = 5.0
"""Seconds between lines when stderr is not a terminal, so a log gets a line now and then, not hundreds."""


def progress_line(done: int, total: int, label: str) -> str:
    """``[#######.......]  45%  1.2 GiB / 2.6 GiB  model.gguf``; before the total is known, the bytes only."""
    if total <= 0:
        return f"{format_bytes(done)}  {label}" if done else label
    share = min(done / total, 1.0)
    filled = round(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {share:4.0%}  {format_bytes(done)} / {format_bytes(total)}  {label}".rstrip()


class ProgressReport:
    """Shows the latest progress: on a terminal one line redrawn with ``\\r``; elsewhere a line when the
    file changes or every ``PLAIN_INTERVAL`` seconds, and the last state at ``finish``."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._terminal = stream.isatty()
        self._latest = ""
        self._written = ""
        self._written_label: str | None = None
        self._written_at = 0.0

    def update(self, done: int, total: int, label: str) -> None:
        line = progress_line(done, total, label)
        if self._terminal:
            # Spaces over what is left of a longer line before.
            self._stream.write("\r" + line.ljust(len(self._latest)))
            self._stream.flush()
        elif label != self._written_label or self._clock() - self._written_at >= PLAIN_INTERVAL:
            self._write_line(line, label)
        self._latest = line

    def finish(self) -> None:
        """End the output with the last progress shown, on a line of its own."""
        if self._terminal and self._latest:
            self._stream.write("\n")
            self._stream.flush()
        elif not self._terminal and self._latest != self._written:
            self._write_line(self._latest, self._written_label)

    def _write_line(self, line: str, label: str | None) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
        self._written = line
        self._written_label = label
        self._written_at = self._clock()
