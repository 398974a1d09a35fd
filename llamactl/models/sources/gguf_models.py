"""The GGUF models in one dir: split files grouped, projectors attached, as catalogue entries.

Every ``.gguf`` file's header says what it is (``general.type``, or
architecture ``clip`` for an older projector), so a file's name never
decides it. A split model (``<stem>-00001-of-00003.gguf``, llama.cpp's
gguf-split naming) is one model when all of its shards are there; llama-server
loads it from the first. A projector (mmproj) is attached to every model in
its dir; where there are several, the first by name. LoRA adapters and
imatrix files are not models on their own and are not listed.
"""

from __future__ import annotations

import logging
import re

import msgspec

from llamactl.models.entry import FileType, ModelEntry, ModelFile, ModelFormat, ModelSource
from llamactl.models.gguf_facts import GgufFacts
from llamactl.models.sources.scan_context import ScanContext
from llamactl.models.sources.tree import FoundDir, FoundFile

GGUF_SUFFIX = ".gguf"
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


class GgufModel(msgspec.Struct, frozen=True):
    stem: str
    """The file name without ``.gguf``, and without the shard suffix of a split model."""
    shards: tuple[FoundFile, ...]
    """The files in order; one for a model that is not split."""
    facts: GgufFacts
    """The first shard's, with ``parameters`` and ``tensor_bytes`` summed over every shard."""
    projector: FoundFile | None


def gguf_models(directory: FoundDir, context: ScanContext) -> list[GgufModel]:
    models: list[tuple[str, tuple[FoundFile, ...], GgufFacts]] = []
    projectors: list[FoundFile] = []
    for stem, shards in _grouped(directory, context):
        facts = _facts(shards, context)
        if facts is None:
            continue
        if facts.kind == "model":
            models.append((stem, shards, facts))
        elif facts.kind == "mmproj":
            projectors.append(shards[0])
        else:
            context.skip(shards[0].path, f"a GGUF {facts.kind}, not a model", level=logging.DEBUG)
    projector = projectors[0] if projectors else None
    return [GgufModel(stem, shards, facts, projector) for stem, shards, facts in models]


def gguf_entry(
    model: GgufModel, *, entry_id: str, source: ModelSource, repo: str, tag: str, revision: str | None = None
) -> ModelEntry:
    files = [ModelFile(shard.name, str(shard.path), shard.size, FileType.GGUF) for shard in model.shards]
    if model.projector is not None:
        projector = model.projector
        files.append(ModelFile(projector.name, str(projector.path), projector.size, FileType.MMPROJ))
    facts = model.facts
    return ModelEntry(
        id=entry_id,
        source=source,
        format=ModelFormat.GGUF,
        repo=repo,
        tag=tag,
        name=facts.name or model.stem,
        files=tuple(files),
        size_bytes=distinct_size([*model.shards, *([model.projector] if model.projector else [])]),
        architecture=facts.architecture,
        parameters=facts.parameters,
        quantization=facts.quantization,
        context_length=facts.context_length,
        chat_template=facts.has_chat_template,
        model_path=str(model.shards[0].path),
        mmproj_path=None if model.projector is None else str(model.projector.path),
        servable_by_llama_cpp=True,
        revision=revision,
    )


def distinct_size(files: list[FoundFile]) -> int:
    """Bytes on disk, each blob once (two snapshot names may link to one blob)."""
    return sum({file.real_path: file.size for file in files}.values())


def _grouped(directory: FoundDir, context: ScanContext) -> list[tuple[str, tuple[FoundFile, ...]]]:
    singles: list[tuple[str, tuple[FoundFile, ...]]] = []
    splits: dict[tuple[str, int], dict[int, FoundFile]] = {}
    for file in directory.files:
        if not file.name.lower().endswith(GGUF_SUFFIX):
            continue
        shard = _SHARD.match(file.name)
        if shard is None:
            singles.append((file.name[: -len(GGUF_SUFFIX)], (file,)))
        else:
            splits.setdefault((shard["stem"], int(shard["count"])), {})[int(shard["number"])] = file
    for (stem, count), shards in splits.items():
        missing = [number for number in range(1, count + 1) if number not in shards]
        if missing or len(shards) != count:
            context.skip(directory.path / stem, f"a split GGUF without shards {missing} of {count}")
            continue
        singles.append((stem, tuple(shards[number] for number in range(1, count + 1))))
    return sorted(singles, key=lambda group: group[0])


def _facts(shards: tuple[FoundFile, ...], context: ScanContext) -> GgufFacts | None:
    every = [context.gguf_facts(shard) for shard in shards]
    first = every[0]
    if first is None or None in every:
        return None
    if len(every) == 1:
        return first
    return msgspec.structs.replace(
        first,
        parameters=sum(facts.parameters for facts in every if facts is not None),
        tensor_bytes=sum(facts.tensor_bytes for facts in every if facts is not None),
    )
