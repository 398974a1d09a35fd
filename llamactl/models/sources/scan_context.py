"""What one scan carries through every source: the header reads, cached, and the files passed over.

Headers are cached by (resolved path, size, mtime_ns): a rescan hands the
previous scan's cache in, and a file whose three are unchanged is not opened
again. Failures are cached too, so a corrupt file is reported on every scan
but read once. The cache of a scan keeps only the files that scan met, so
deleted files drop out.

A source never raises for a bad file: it asks ``gguf_facts`` or
``safetensors_header``, which answer None for a file that cannot be read or
parsed and record it in ``skipped`` with a logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec

from llamactl.models.entry import SkippedFile
from llamactl.models.gguf_facts import GgufFacts, gguf_facts
from llamactl.models.gguf_header import GgufFormatError, GgufHeader, read_gguf_header
from llamactl.models.sources.safetensors_header import (
    SafetensorsFormatError,
    SafetensorsHeader,
    read_safetensors_header,
)

if TYPE_CHECKING:
    from llamactl.models.sources.tree import FoundFile

logger = logging.getLogger("llamactl.models")

T = TypeVar("T")
FileKey = tuple[Path, int, int]
GgufHeaderReader = Callable[[Path], GgufHeader]


class ReadFailure(msgspec.Struct, frozen=True):
    reason: str


class HeaderCache(msgspec.Struct):
    """The headers one scan read or reused, for the next scan to reuse."""

    gguf: dict[FileKey, GgufFacts | ReadFailure] = {}
    safetensors: dict[FileKey, SafetensorsHeader | ReadFailure] = {}


class ScanContext:
    def __init__(
        self, previous: HeaderCache | None = None, read_header: GgufHeaderReader = read_gguf_header
    ) -> None:
        self._previous = previous or HeaderCache()
        self._read_header = read_header
        self.cache = HeaderCache()
        self.skipped: list[SkippedFile] = []
        self.headers_read = 0

    def skip(self, path: Path, reason: str, level: int = logging.WARNING) -> None:
        logger.log(level, "model scan skips %s: %s", path, reason)
        self.skipped.append(SkippedFile(str(path), reason))

    def gguf_facts(self, file: FoundFile) -> GgufFacts | None:
        def read() -> GgufFacts:
            return gguf_facts(self._read_header(file.real_path))

        return self._cached(file, self._previous.gguf, self.cache.gguf, read, GgufFormatError)

    def safetensors_header(self, file: FoundFile) -> SafetensorsHeader | None:
        def read() -> SafetensorsHeader:
            return read_safetensors_header(file.real_path)

        return self._cached(
            file, self._previous.safetensors, self.cache.safetensors, read, SafetensorsFormatError
        )

    def _cached(
        self,
        file: FoundFile,
        previous: dict[FileKey, T | ReadFailure],
        current: dict[FileKey, T | ReadFailure],
        read: Callable[[], T],
        format_error: type[Exception],
    ) -> T | None:
        key = (file.real_path, file.size, file.mtime_ns)
        result = current.get(key) or previous.get(key)
        if result is None:
            self.headers_read += 1
            try:
                result = read()
            except format_error as error:
                result = ReadFailure(str(error))
            except OSError as error:
                # not cached: a permission change leaves size and mtime as they were
                self.skip(file.path, f"cannot read: {error.strerror or error}")
                return None
        current[key] = result
        if isinstance(result, ReadFailure):
            self.skip(file.path, result.reason)
            return None
        return result
