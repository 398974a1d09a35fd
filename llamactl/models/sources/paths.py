"""The dirs the user names: every GGUF model and every model dir anywhere below them.

An entry's repo is the root's own name and the dir below it
(``models/qwen/Qwen3-4B``); a GGUF model's id adds its stem. The walk never
leaves the named root, so a link to elsewhere is noted and passed over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from llamactl.models.entry import ModelEntry, ModelSource, model_id
from llamactl.models.sources.gguf_models import gguf_entry, gguf_models
from llamactl.models.sources.model_dir import is_model_dir, model_dir_entry, read_model_dir
from llamactl.models.sources.scan_context import ScanContext
from llamactl.models.sources.tree import walk


def scan_paths(roots: Sequence[Path], context: ScanContext) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if not real_root.is_dir():
            context.skip(root, "not a dir")
            continue
        entries += tree_entries(root, real_root, ModelSource.PATH, real_root.name or "root", context)
    return entries


def tree_entries(
    top: Path, root: Path, source: ModelSource, repo_prefix: str | None, context: ScanContext
) -> list[ModelEntry]:
    """The models at or below ``top``, which resolves to ``root``; a repo is ``repo_prefix/<dir below>``.

    Without a prefix, a model straight in ``top`` is named by its own stem.
    """
    entries: list[ModelEntry] = []
    for directory in walk(top, root, context):
        below = directory.path.relative_to(top).as_posix()
        parts = [part for part in (repo_prefix, below) if part and part != "."]
        repo = "/".join(parts)
        for model in gguf_models(directory, context):
            entry_id = model_id(source, repo, model.stem) if repo else model_id(source, model.stem)
            entries.append(
                gguf_entry(model, entry_id=entry_id, source=source, repo=repo or model.stem, tag="")
            )
        if is_model_dir(directory) and (found := read_model_dir(directory, context)) is not None:
            repo = repo or directory.path.name
            entries.append(
                model_dir_entry(found, entry_id=model_id(source, repo), source=source, repo=repo, tag="")
            )
    return entries
