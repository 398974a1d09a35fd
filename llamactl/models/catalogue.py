"""The catalogue: every model on the machine, from every enabled store, by id.

``scan`` does blocking file I/O; run it off the event loop
(``await asyncio.to_thread(catalogue.scan)``). It builds the new entries
aside and swaps them in whole, so readers on the loop see either the old
catalogue or the new one, never half of each; scans themselves take turns.
A rescan reuses the GGUF and safetensors headers of files whose (path, size,
mtime) did not change, so an unchanged tree is listed again without opening
a single model file.

No bad file stops a scan: each source passes it over and the scan reports it
in ``ScanReport.skipped`` (see ``sources/scan_context.py``). A source that
fails outright (a bug) is logged and reported the same way, and the other
stores are still listed.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from llamactl.errors import LlamactlError, echo
from llamactl.models.entry import FileType, ModelEntry, ModelFormat, SkippedFile
from llamactl.models.gguf_facts import GgufFacts
from llamactl.models.gguf_header import GgufFormatError, read_gguf_header
from llamactl.models.locations import StoreLocations
from llamactl.models.sources.huggingface import scan_huggingface
from llamactl.models.sources.lmstudio import scan_lmstudio
from llamactl.models.sources.model_dir import CONFIG_FILE, read_json_object
from llamactl.models.sources.ollama import scan_ollama
from llamactl.models.sources.paths import scan_paths
from llamactl.models.sources.scan_context import GgufHeaderReader, HeaderCache, ScanContext
from llamactl.models.sources.tree import FoundFile

logger = logging.getLogger("llamactl.models")

SUGGESTIONS = 3


class DiscoverySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which stores to scan, and where they are (``locations.resolve_locations``)."""

    locations: StoreLocations
    paths: list[Path] = []
    huggingface: bool = True
    ollama: bool = True
    lmstudio: bool = True


class ScanReport(msgspec.Struct, frozen=True, kw_only=True):
    entries: int
    skipped: tuple[SkippedFile, ...]
    headers_read: int
    """GGUF and safetensors headers opened; 0 on a rescan of an unchanged tree."""
    seconds: float


class ModelDetails(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/models/{id}``: the entry and everything its files say."""

    entry: ModelEntry
    gguf: GgufFacts | None = None
    """The GGUF header's facts (of the first shard, with parameters and bytes summed over all)."""
    config: dict[str, Any] | None = None
    """A model dir's ``config.json``."""


class ModelNotFoundError(LlamactlError):
    status = 404
    code = "model_not_found"


class Catalogue:
    def __init__(self, settings: DiscoverySettings, read_header: GgufHeaderReader = read_gguf_header) -> None:
        self.settings = settings
        self._read_header = read_header
        self._entries: dict[str, ModelEntry] = {}
        self._headers = HeaderCache()
        self._scanning = threading.Lock()
        self.last_scan: ScanReport | None = None

    def scan(self) -> ScanReport:
        with self._scanning:
            began = time.perf_counter()
            context = ScanContext(self._headers, self._read_header)
            found: list[ModelEntry] = []
            for source, scan in self._sources():
                try:
                    found += scan(context)
                except Exception as error:  # one store's bug must not hide the others
                    logger.exception("the %s scan failed", source)
                    context.skipped.append(SkippedFile(source, f"the scan failed: {error!r}"))
            self._entries = {entry.id: entry for entry in _unique_ids(found)}
            self._headers = context.cache
            self.last_scan = ScanReport(
                entries=len(self._entries),
                skipped=tuple(context.skipped),
                headers_read=context.headers_read,
                seconds=time.perf_counter() - began,
            )
            return self.last_scan

    def entries(self, filter: str | None = None) -> list[ModelEntry]:
        """Every entry by id; with ``filter``, those whose id, repo or name contains it, in any case."""
        entries = sorted(self._entries.values(), key=lambda entry: entry.id)
        if not filter:
            return entries
        needle = filter.casefold()
        return [
            entry
            for entry in entries
            if any(needle in text.casefold() for text in (entry.id, entry.repo, entry.name))
        ]

    def get(self, model_id: str) -> ModelEntry:
        """The entry with this id, or the only one equal to it in any case; else ``ModelNotFoundError``."""
        entries = self._entries
        entry = entries.get(model_id)
        if entry is not None:
            return entry
        folded = [entry for entry in entries.values() if entry.id.casefold() == model_id.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise ModelNotFoundError(_not_found_message(model_id, list(entries)), field="model")

    def details(self, model_id: str) -> ModelDetails:
        entry = self.get(model_id)
        if entry.format is ModelFormat.GGUF:
            return ModelDetails(entry=entry, gguf=self._gguf_facts(entry))
        config_path = Path(entry.model_path) / CONFIG_FILE
        try:
            config = read_json_object(config_path) if config_path.is_file() else None
        except (OSError, ValueError) as error:
            logger.warning("cannot read %s: %s", config_path, error)
            config = None
        return ModelDetails(entry=entry, config=config)

    def gguf_facts_of(self, path: Path) -> GgufFacts:
        """The facts of one GGUF file, through the scan's cache; ``GgufFormatError`` if it is not one."""
        facts = ScanContext(self._headers, self._read_header).gguf_facts(_found_file(path))
        if facts is None:
            raise GgufFormatError(f"{path} is not a GGUF file the catalogue can read")
        return facts

    def _gguf_facts(self, entry: ModelEntry) -> GgufFacts | None:
        """The facts of the entry's GGUF files, through the scan's cache (a changed file is read again)."""
        context = ScanContext(self._headers, self._read_header)
        shards = [file for file in entry.files if file.type is FileType.GGUF]
        every = [context.gguf_facts(_found_file(Path(file.path))) for file in shards]
        first = every[0] if every else None
        if first is None or None in every:
            return None
        return msgspec.structs.replace(
            first,
            parameters=sum(facts.parameters for facts in every if facts is not None),
            tensor_bytes=sum(facts.tensor_bytes for facts in every if facts is not None),
        )

    def _sources(self) -> list[tuple[str, Callable[[ScanContext], list[ModelEntry]]]]:
        settings, locations = self.settings, self.settings.locations
        sources: list[tuple[str, Callable[[ScanContext], list[ModelEntry]]]] = []
        if settings.paths:
            sources.append(("paths", lambda context: scan_paths(settings.paths, context)))
        if settings.huggingface:
            sources.append(("huggingface", lambda context: scan_huggingface(locations.huggingface, context)))
        if settings.ollama:
            sources.append(("ollama", lambda context: scan_ollama(locations.ollama, context)))
        if settings.lmstudio:
            sources.append(("lmstudio", lambda context: scan_lmstudio(locations.lmstudio, context)))
        return sources


def _found_file(path: Path) -> FoundFile:
    real = Path(os.path.realpath(path))
    try:
        info = os.stat(real)
    except OSError:
        return FoundFile(path, real, -1, -1)  # not in the cache: the read reports the error
    return FoundFile(path, real, info.st_size, info.st_mtime_ns)


def _unique_ids(entries: list[ModelEntry]) -> list[ModelEntry]:
    """Entries that share an id get ``+2``, ``+3``, ... in the order of their model paths."""
    unique: list[ModelEntry] = []
    taken: set[str] = set()
    for entry in sorted(entries, key=lambda entry: (entry.id, entry.model_path)):
        entry_id, number = entry.id, 1
        while entry_id in taken:
            number += 1
            entry_id = f"{entry.id}+{number}"
        taken.add(entry_id)
        unique.append(entry if entry_id == entry.id else msgspec.structs.replace(entry, id=entry_id))
    return unique


def _not_found_message(model_id: str, known: list[str]) -> str:
    folded = model_id.casefold()
    close = [known_id for known_id in sorted(known) if folded in known_id.casefold()][:SUGGESTIONS]
    close += [
        known_id
        for known_id in difflib.get_close_matches(model_id, known, n=SUGGESTIONS, cutoff=0.5)
        if known_id not in close
    ]
    message = f"no model {echo(model_id)} in the catalogue"
    if close:
        return f"{message}; did you mean {', '.join(close[:SUGGESTIONS])}?"
    return f"{message} (`llamactl models list` shows what there is)"
