"""The Hugging Face hub cache as downloads change it: refs written, models deleted (Go-compatible)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from llamactl.errors import LlamactlError
from llamactl.models.download_request import DownloadRequestError, check_tag, split_repo

_COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelNotFound(LlamactlError):
    status = 404
    code = "model_not_found"

    def __init__(self, repo: str) -> None:
        super().__init__(f"model not found: {repo}", "repo")


def repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def write_ref(repo_dir: Path, tag: str, commit: str) -> None:
    """``refs/<tag>`` holds the commit, without a newline, replaced atomically as huggingface_hub does."""
    ref = repo_dir / "refs" / tag
    ref.parent.mkdir(parents=True, exist_ok=True)
    partial = ref.with_name(f"{tag}.{secrets.token_hex(4)}.tmp")
    partial.write_text(commit)
    os.replace(partial, ref)


def delete_model(cache_dir: Path, repo: str, tag: str | None = None) -> None:
    """Remove a downloaded model from the hub cache, as the Go llamactl's ``DELETE /api/v1/models``.

    Without a tag the whole ``models--org--name`` dir goes. With one, the
    snapshot ``refs/<tag>`` points at (or the snapshot named by a commit
    hash) goes, with the blobs no other snapshot links to and every ref that
    points at it, so no ref is left dangling; two tags at one commit share a
    snapshot and go together. When no snapshot is left the repo dir goes too.
    Blobs are only ever removed from the repo's own ``blobs/`` dir: a link
    leading anywhere else, the cache-wide shared store included, is never
    followed.
    """
    repo_id, inline_tag = split_repo(repo)
    if inline_tag and tag:
        raise DownloadRequestError("give the tag once: in repo or as tag, not both", "tag")
    tag = tag or inline_tag or None
    if tag is not None:
        check_tag(tag)
    repo_dir = cache_dir / repo_folder(repo_id)
    if repo_dir.is_symlink() or not repo_dir.is_dir():
        raise ModelNotFound(repo_id)
    if tag is None:
        shutil.rmtree(repo_dir)
        return

    commit = _commit_of(repo_dir, tag)
    snapshots = repo_dir / "snapshots"
    snapshot = snapshots / commit if commit else None
    if snapshot is None or snapshot.is_symlink() or not snapshot.is_dir():
        raise ModelNotFound(f"{repo_id}:{tag}")
    kept = {
        blob
        for other in snapshots.iterdir()
        if other.name != commit and other.is_dir() and not other.is_symlink()
        for blob in _linked_blobs(other, repo_dir / "blobs")
    }
    for blob in set(_linked_blobs(snapshot, repo_dir / "blobs")) - kept:
        blob.unlink(missing_ok=True)
    shutil.rmtree(snapshot)
    for ref in _refs(repo_dir / "refs"):
        if _read_commit(ref) == commit:
            ref.unlink()
    if not any(snapshots.iterdir()):
        shutil.rmtree(repo_dir)


def _commit_of(repo_dir: Path, tag: str) -> str | None:
    ref = repo_dir / "refs" / tag
    if ref.is_file() and not ref.is_symlink():
        return _read_commit(ref)
    return tag if _COMMIT.fullmatch(tag) else None


def _read_commit(ref: Path) -> str | None:
    try:
        commit = ref.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.fullmatch(commit) else None


def _refs(refs_dir: Path) -> Iterator[Path]:
    """Every ref file, ``refs/pr/N`` included; links are skipped, not followed."""
    if refs_dir.is_dir() and not refs_dir.is_symlink():
        for root, _dirs, names in os.walk(refs_dir):
            for name in names:
                path = Path(root, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def _linked_blobs(snapshot: Path, blobs_dir: Path) -> Iterable[Path]:
    """The blobs in ``blobs_dir`` that the snapshot's links point at (one hop, never followed further)."""
    blobs_dir = Path(os.path.normpath(blobs_dir))
    for root, _dirs, names in os.walk(snapshot):
        for name in names:
            link = Path(root, name)
            if not link.is_symlink():
                continue
            target = Path(os.path.normpath(Path(root, os.readlink(link))))
            if target.parent == blobs_dir:
                yield target
