"""One instance's log: a size-rotated file, a ring of recent lines, and live followers.

A backend blocks once 64 KiB of its output sit unread in a pipe, so nothing here
ever stops reading: output is read in chunks, never by ``readline`` (a progress
bar's ``\\r`` or a 10 MB line cannot grow memory), and a failing disk or a slow
follower loses lines instead of making the reader wait.
"""

import asyncio
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from io import FileIO
from itertools import islice
from pathlib import Path

from llamactl.private_files import make_private_dirs, open_private

RING_LINES = 1000
FOLLOW_QUEUE_LINES = 1000
_READ_CHUNK = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")

logger = logging.getLogger(__name__)


class _Follower:
    """A bounded queue of lines for one reader; overflow is counted, not queued."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.dropped = 0
        self.closed = False
        self.wake = asyncio.Event()

    def offer(self, line: str) -> None:
        if len(self.lines) >= FOLLOW_QUEUE_LINES:
            self.dropped += 1
            return
        if self.dropped:
            self.lines.append(_dropped_notice(self.dropped))
            self.dropped = 0
        self.lines.append(line)
        self.wake.set()

    def take(self) -> str | None:
        if self.lines:
            return self.lines.popleft()
        if self.dropped:
            notice, self.dropped = _dropped_notice(self.dropped), 0
            return notice
        return None


class InstanceLog:
    """``<logs_dir>/<name>.log``, rotated to ``.log.1`` … ``.log.<backups>`` past ``max_bytes``.

    ``max_bytes == 0`` disables rotation. A file exceeds ``max_bytes`` only when
    one line alone is longer; lines hold at most ``max_line_bytes`` of output.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int, max_line_bytes: int = 64 * 1024) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._max_line_bytes = max_line_bytes
        self._file: FileIO | None = None
        self._size = 0
        self._closed = False
        self._write_failing = False
        self._ring: deque[str] = deque(maxlen=RING_LINES)
        self._followers: set[_Follower] = set()
        self._follows_ended = False

    def write_marker(self, text: str) -> None:
        when = datetime.now().astimezone().isoformat(timespec="seconds")
        self._emit([f"=== llamactl: {' '.join(text.splitlines())} at {when} ==="], "marker")

    async def drain(self, stream: asyncio.StreamReader, label: str) -> None:
        """Copy ``stream`` line by line until EOF; ``label`` names it in write-error reports."""
        pending = bytearray()
        overflow = 0  # bytes of the pending line beyond max_line_bytes, counted and discarded
        after_cr = False  # a "\r\n" split across two chunks is one line end
        while chunk := await stream.read(_READ_CHUNK):
            if after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            after_cr = chunk.endswith(b"\r")
            *complete, rest = _LINE_END.split(chunk)
            lines = []
            for piece in complete:
                overflow += self._keep(pending, piece)
                lines.append(_decoded(pending, overflow))
                pending.clear()
                overflow = 0
            overflow += self._keep(pending, rest)
            self._emit(lines, label)
        if pending or overflow:
            self._emit([_decoded(pending, overflow)], label)

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines: from memory when it holds enough, else from the files."""
        if lines <= len(self._ring):
            return list(islice(self._ring, len(self._ring) - max(lines, 0), None))
        from_files = read_tail(self.path, lines)
        # The files miss what a failing disk dropped; then memory is the better answer.
        return from_files if len(from_files) > len(self._ring) else list(self._ring)

    async def follow(self) -> AsyncIterator[str]:
        """Lines written from the first iteration on, until ``close()``.

        A follower more than FOLLOW_QUEUE_LINES behind loses lines and sees one
        ``[… N lines dropped]`` notice in their place.
        """
        if self._closed or self._follows_ended:
            return
        follower = _Follower()
        self._followers.add(follower)
        try:
            while True:
                if (line := follower.take()) is not None:
                    yield line
                elif follower.closed:
                    return
                else:
                    follower.wake.clear()
                    await follower.wake.wait()
        finally:
            self._followers.discard(follower)

    def close(self) -> None:
        """Close the file and end every follower; later output is discarded."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        self.end_follows()

    def end_follows(self) -> None:
        """End every follower once it has read what it was sent, and refuse new ones; the file goes on."""
        self._follows_ended = True
        for follower in self._followers:
            follower.closed = True
            follower.wake.set()

    def _keep(self, pending: bytearray, piece: bytes) -> int:
        """Append what fits of ``piece`` to the pending line; return how many bytes did not."""
        room = max(self._max_line_bytes - len(pending), 0)
        pending += piece[:room]
        return max(len(piece) - room, 0)

    def _emit(self, lines: list[str], label: str) -> None:
        if self._closed or not lines:
            return
        for line in lines:
            self._ring.append(line)
            for follower in self._followers:
                follower.offer(line)
        try:
            self._write(lines)
            self._write_failing = False
        except OSError as error:
            if not self._write_failing:  # once per failing stretch, not once per line of a full disk
                logger.warning("cannot write %s to %s: %s", label, self.path, error)
            self._write_failing = True

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            data = (line + "\n").encode()
            if self._max_bytes and self._size and self._size + len(data) > self._max_bytes:
                self._rotate()
            if self._file is None:
                # 0600 in a 0700 directory: a backend may print what it was given (a token, a key).
                make_private_dirs(self.path.parent)
                self._file = FileIO(open_private(self.path, os.O_WRONLY | os.O_APPEND), "ab")
                self._size = self._file.seek(0, os.SEEK_END)
            self._size += self._file.write(data)

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for index in range(self._backups, 0, -1):
            source = _backup(self.path, index - 1)
            if source.exists():
                os.replace(source, _backup(self.path, index))
        self.path.unlink(missing_ok=True)  # only left when backups == 0


def read_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` and, when it holds fewer, of its rotated files."""
    found: list[bytes] = []
    index = 0
    while len(found) < lines:
        try:
            found = _file_tail(_backup(path, index), lines - len(found)) + found
        except OSError:
            break  # the rotated files end here, or cannot be read
        index += 1
    return [line.decode("utf-8", errors="replace") for line in found]


def _file_tail(path: Path, lines: int) -> list[bytes]:
    """The last ``lines`` lines of one file, read backwards in blocks from its end."""
    blocks: list[bytes] = []
    newlines = 0
    with path.open("rb") as file:
        position = file.seek(0, os.SEEK_END)
        # One newline more than wanted guarantees the first wanted line is complete.
        while position > 0 and newlines <= lines:
            step = min(_READ_CHUNK, position)
            position -= step
            file.seek(position)
            block = file.read(step)
            blocks.append(block)
            newlines += block.count(b"\n")
    found = b"".join(reversed(blocks)).split(b"\n")
    if found[-1] == b"":
        found.pop()  # the file ends with a line end, not a partial line
    if position > 0:
        found.pop(0)  # the cut fell inside this line
    return found[-lines:] if lines > 0 else []


def _decoded(line: bytearray, overflow: int) -> str:
    text = line.decode("utf-8", errors="replace")
    return f"{text} …[truncated {overflow} bytes]" if overflow else text


def _backup(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def _dropped_notice(count: int) -> str:
    return f"[… {count} lines dropped]"
