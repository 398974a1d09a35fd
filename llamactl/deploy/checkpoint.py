"""What a path holds, said as one ``Checkpoint`` kind, or refused with what was found there.

- A file is a GGUF by its magic: a model, or a LoRA (``general.type``
  ``adapter``). Anything else is refused, named by what it looks like.
- A dir is what it holds (``checkpoint_dir``): an adapter or a model dir.
- A dir that is neither but holds ``checkpoint-N`` dirs is a trainer's
  output dir: the highest N that holds an adapter or a model is taken, and
  the later ones that do not (a save cut short) are named in the result.

A dir named ``checkpoint-N``, or holding a ``trainer_state.json``, says its
step in ``trainer``. Nothing is loaded: headers and configs are all that is
read, so inspecting a 70B checkpoint takes milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from llamactl.deploy.checkpoint_dir import (
    LISTED_NAMES,
    PICKLE_SUFFIXES,
    DirListing,
    holds_checkpoint_files,
    list_dir,
    read_checkpoint_dir,
)
from llamactl.deploy.checkpoint_files import TRAINER_STATE, trainer_global_step
from llamactl.deploy.checkpoint_kinds import (
    Checkpoint,
    CheckpointNotFoundError,
    DirCheckpoint,
    GgufLoraFile,
    GgufModelFile,
    InvalidCheckpointError,
    PassedOverCheckpoint,
    TrainerCheckpoint,
)
from llamactl.models.gguf_facts import gguf_facts
from llamactl.models.gguf_header import GGUF_MAGIC, GgufFormatError, read_gguf_header
from llamactl.models.sources.model_dir import SAFETENSORS_SUFFIX

SERVABLE_KINDS = (
    "a GGUF file, a model dir (config.json plus *.safetensors), a PEFT or mlx_lm adapter dir,"
    " or a trainer's output dir of checkpoint-N dirs"
)
"""What a refusal of a dir with none of these files says to give instead."""

TRAINER_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
"""A trainer's ``checkpoint-N`` dir name; the group is N."""
_ZIP_MAGIC = b"PK\x03\x04"
"""torch.save's format since PyTorch 1.6."""


def inspect_checkpoint(path: str | Path) -> Checkpoint:
    """What ``path`` (``~`` expanded) holds.

    ``InvalidCheckpointError`` (422) saying what it found when nothing there is servable;
    ``CheckpointNotFoundError`` (404) when the path does not exist.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise CheckpointNotFoundError(f"{resolved} does not exist: check the path")
    if resolved.is_dir():
        return _inspect_dir(resolved)
    if resolved.is_file():
        return _inspect_file(resolved)
    raise InvalidCheckpointError(f"{resolved} is neither a file nor a dir")


def _inspect_file(path: Path) -> Checkpoint:
    try:
        with open(path, "rb") as file:
            start = file.read(16)
    except OSError as error:
        raise InvalidCheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    if start[:4] == GGUF_MAGIC:
        return _gguf_file(path)
    raise InvalidCheckpointError(f"{path} is {_what_file(path, start)}")


def _what_file(path: Path, start: bytes) -> str:
    """What a file that is not a GGUF looks like, and what to point at instead."""
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX or start[8:10] == b'{"':  # a header's length, then its JSON
        return "a single safetensors file, not a checkpoint on its own: point at its dir"
    if suffix == ".json":
        return "a JSON file, not weights: point at its dir"
    if suffix in PICKLE_SUFFIXES or start.startswith(_ZIP_MAGIC):
        return "a PyTorch pickle, not a GGUF file: point at its dir, or convert it to safetensors or GGUF"
    return f"not a GGUF file (it starts with {start[:8]!r}): give a GGUF file or a model or adapter dir"


def _gguf_file(path: Path) -> GgufModelFile | GgufLoraFile:
    try:
        header = read_gguf_header(path)
    except GgufFormatError as error:
        raise InvalidCheckpointError(error.message) from None
    except OSError as error:
        raise InvalidCheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    facts = gguf_facts(header)
    if facts.kind == "model":
        return GgufModelFile(
            path=str(path),
            architecture=facts.architecture,
            name=facts.name,
            quantization=facts.quantization,
            context_length=facts.context_length,
            parameters=facts.parameters,
            chat_template=facts.has_chat_template,
            file_bytes=header.file_size,
        )
    if facts.kind == "adapter":
        return GgufLoraFile(
            path=str(path),
            architecture=facts.architecture,
            adapter_type=facts.adapter_type,
            lora_alpha=facts.adapter_lora_alpha,
            file_bytes=header.file_size,
        )
    if facts.kind == "mmproj":
        raise InvalidCheckpointError(
            f"{path} is a GGUF vision projector (mmproj), loaded beside a model: point at the model"
        )
    raise InvalidCheckpointError(f"{path} is a GGUF {facts.kind}, not a model or an adapter")


def _inspect_dir(directory: Path) -> DirCheckpoint:
    listing = list_dir(directory)
    try:
        return _checkpoint_dir(directory, listing)
    except InvalidCheckpointError as refused:
        matches = (TRAINER_CHECKPOINT.fullmatch(name) for name in listing.dirs)
        numbered = sorted(((int(match[1]), directory / match[0]) for match in matches if match), reverse=True)
        if numbered:
            return _latest_checkpoint(directory, listing, numbered, refused)
        if holds_checkpoint_files(listing):
            raise
        raise InvalidCheckpointError(f"{refused.message}. Give {SERVABLE_KINDS}") from None


def _latest_checkpoint(
    output_dir: Path,
    listing: DirListing,
    checkpoints: list[tuple[int, Path]],
    refused: InvalidCheckpointError,
) -> DirCheckpoint:
    """The first of the numbered ``checkpoints`` (latest first) that holds an adapter or a model."""
    passed_over: list[PassedOverCheckpoint] = []
    for number, checkpoint in checkpoints:
        try:
            found = _checkpoint_dir(checkpoint, list_dir(checkpoint))
        except InvalidCheckpointError as error:
            passed_over.append(PassedOverCheckpoint(str(checkpoint), error.message))
            continue
        trainer = TrainerCheckpoint(
            step=number if found.trainer is None else found.trainer.step,
            output_dir=str(output_dir),
            passed_over=tuple(passed_over),
        )
        return msgspec.structs.replace(found, trainer=trainer)
    reasons = [passed.reason for passed in passed_over[:LISTED_NAMES]]
    if holds_checkpoint_files(listing):  # a final save beside the checkpoints, cut short or damaged
        reasons.append(refused.message)
    raise InvalidCheckpointError(
        f"none of the {len(checkpoints)} trainer checkpoints in {output_dir} holds a model or adapter:"
        f" {'; '.join(reasons)}"
    )


def _checkpoint_dir(directory: Path, listing: DirListing) -> DirCheckpoint:
    """The dir as what it holds, with its trainer step when a trainer wrote it."""
    found = read_checkpoint_dir(directory, listing)
    step = trainer_global_step(directory / TRAINER_STATE) if TRAINER_STATE in listing.files else None
    if step is None and (number := TRAINER_CHECKPOINT.fullmatch(directory.name)):
        step = int(number[1])
    return found if step is None else msgspec.structs.replace(found, trainer=TrainerCheckpoint(step=step))
