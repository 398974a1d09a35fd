"""The Hugging Face hub cache: ``models--<org>--<name>/snapshots/<commit>/...``, one entry per model in it.

Only ``models--`` repos are read: ``datasets--``, ``spaces--``, ``.locks`` and
huggingface_hub 2.x's cache-wide ``blobs/`` store are passed over by name.
Snapshot files are relative symlinks into the repo's ``blobs/``, and in 2.x
those link on into the shared store; they are resolved (never beyond the
cache) for sizes and headers, and listed by their snapshot path, as the Go
llamactl lists them. Partial downloads (``blobs/*.incomplete``) have no
snapshot link yet, so they are never seen.

``refs/<branch>`` holds a commit with no trailing newline. An entry's tag is
the ref naming its snapshot (``main`` first), else its commit; a snapshot
that ``refs/main`` does not name (an older revision) adds ``@<commit[:12]>``
to its ids. With no ``refs/main`` and a single snapshot, that one is current.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamactl.models.entry import ModelEntry, ModelSource, model_id
from llamactl.models.sources.gguf_models import gguf_entry, gguf_models
from llamactl.models.sources.model_dir import is_model_dir, model_dir_entry, read_model_dir
from llamactl.models.sources.scan_context import ScanContext
from llamactl.models.sources.tree import resolve_within, walk

REPO_PREFIX = "models--"
MAIN_REF = "main"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHORT_REVISION = 12


def scan_huggingface(cache: Path, context: ScanContext) -> list[ModelEntry]:
    real_cache = Path(os.path.realpath(cache))
    try:
        names = sorted(os.listdir(real_cache))
    except OSError:
        return []  # no cache is the usual case, not a problem
    entries: list[ModelEntry] = []
    for name in names:
        repo_id = "/".join(name.split("--")[1:]) if name.startswith(REPO_PREFIX) else ""
        if not repo_id:
            continue
        repo_dir = resolve_within(real_cache / name, real_cache, context)
        if repo_dir is not None and repo_dir.is_dir():
            entries += _repo_entries(repo_dir, repo_id, real_cache, context)
    return entries


def _repo_entries(repo_dir: Path, repo_id: str, cache: Path, context: ScanContext) -> list[ModelEntry]:
    refs = _refs(repo_dir / "refs", context)
    try:
        commits = sorted(name for name in os.listdir(repo_dir / "snapshots") if not name.startswith("."))
    except OSError:
        return []
    main = refs.get(MAIN_REF)
    current = main if main in commits else (commits[0] if main is None and len(commits) == 1 else None)
    entries: list[ModelEntry] = []
    for commit in commits:
        named_by = sorted(
            (ref for ref, target in refs.items() if target == commit), key=lambda r: r != MAIN_REF
        )
        tag = named_by[0] if named_by else commit
        revision_suffix = None if commit == current else commit[:SHORT_REVISION]
        snapshot = repo_dir / "snapshots" / commit
        for directory in walk(snapshot, cache, context):
            below = directory.path.relative_to(snapshot).as_posix()
            prefix = "" if below == "." else below + "/"
            for model in gguf_models(directory, context):
                entry_id = model_id(ModelSource.HUGGINGFACE, repo_id, prefix + model.stem, revision_suffix)
                entries.append(
                    gguf_entry(
                        model,
                        entry_id=entry_id,
                        source=ModelSource.HUGGINGFACE,
                        repo=repo_id,
                        tag=tag,
                        revision=commit,
                    )
                )
            if is_model_dir(directory) and (found := read_model_dir(directory, context)) is not None:
                entry_id = model_id(ModelSource.HUGGINGFACE, repo_id, prefix.rstrip("/"), revision_suffix)
                entries.append(
                    model_dir_entry(
                        found,
                        entry_id=entry_id,
                        source=ModelSource.HUGGINGFACE,
                        repo=repo_id,
                        tag=tag,
                        revision=commit,
                    )
                )
    return entries


def _refs(refs_dir: Path, context: ScanContext) -> dict[str, str]:
    """Ref name (``main``, ``pr/1``) to commit; a ref that holds no commit is noted and left out."""
    refs: dict[str, str] = {}
    for directory, _, files in os.walk(refs_dir):
        for name in files:
            path = Path(directory) / name
            try:
                commit = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError) as error:
                context.skip(path, f"unreadable ref: {error}")
                continue
            if _COMMIT.match(commit):
                refs[path.relative_to(refs_dir).as_posix()] = commit
            else:
                context.skip(path, f"a ref that holds no commit hash: {commit[:50]!r}")
    return refs
