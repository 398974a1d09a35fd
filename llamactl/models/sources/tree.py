"""A walk over a model tree that cannot loop and cannot leave its root.

Every symlink is resolved before it is followed. One that resolves outside
the root, is broken, or loops is passed over and noted; a dir already seen
(by device and inode) is not entered again, so a link back up the tree ends
the walk there instead of repeating it. Linked dirs are entered after every
dir reached without a link, so a dir is listed by its own path when it has
one inside the root. Dirs whose name starts with ``.`` are
not entered (``.git``, ``.cache``, Hugging Face's ``.locks``).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec

from llamactl.models.sources.scan_context import ScanContext

logger = logging.getLogger("llamactl.models")


class FoundFile(msgspec.Struct, frozen=True):
    path: Path
    """Where the walk found it, under the dir walked (a snapshot's symlink, not the blob)."""
    real_path: Path
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.name


class FoundDir(msgspec.Struct, frozen=True):
    path: Path
    """Where the walk found it (under a symlinked dir, the path through the link)."""
    files: tuple[FoundFile, ...]
    """Regular files, sorted by name; symlinks are already resolved to them."""


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it; both are resolved, absolute paths."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_within(path: Path, root: Path, context: ScanContext) -> Path | None:
    """``path`` with every symlink resolved, if that stays under ``root`` (itself resolved); else None."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as error:
        context.skip(path, f"broken or looping symlink: {error.strerror or error}")
        return None
    if not inside(real, str(root)):
        context.skip(path, f"leads to {real}, outside {root}", level=logging.INFO)
        return None
    return Path(real)


def walk(top: Path, root: Path, context: ScanContext) -> Iterator[FoundDir]:
    """Every dir at or under ``top`` with its files, parents before children; nothing outside ``root``.

    ``root`` must be resolved. ``top`` may be a symlink into ``root`` (a
    Hugging Face snapshot file is one).
    """
    real_top = resolve_within(top, root, context)
    if real_top is None or not real_top.is_dir():
        return
    seen: set[tuple[int, int]] = set()
    pending = [(top, real_top)]
    linked: list[tuple[Path, Path]] = []
    while pending or linked:
        listed, real = pending.pop() if pending else linked.pop()
        try:
            identity = os.stat(real)
        except OSError as error:
            context.skip(listed, f"cannot read: {error.strerror or error}")
            continue
        if (identity.st_dev, identity.st_ino) in seen:
            continue
        seen.add((identity.st_dev, identity.st_ino))
        files, subdirs, linked_subdirs = _list(listed, real, root, context)
        yield FoundDir(listed, tuple(files))
        # reversed, so the stacks pop them in name order
        pending.extend(reversed(subdirs))
        linked.extend(reversed(linked_subdirs))


def _list(
    listed: Path, real: Path, root: Path, context: ScanContext
) -> tuple[list[FoundFile], list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """The dir's files, its subdirs, and the subdirs it links to."""
    files: list[FoundFile] = []
    subdirs: list[tuple[Path, Path]] = []
    linked: list[tuple[Path, Path]] = []
    try:
        with os.scandir(real) as children:
            entries = sorted(children, key=lambda child: child.name)
    except OSError as error:
        context.skip(listed, f"cannot list: {error.strerror or error}")
        return files, subdirs, linked
    for child in entries:
        child_listed = listed / child.name
        try:
            if child.is_symlink():
                target = resolve_within(child_listed, root, context)
                if target is None:
                    continue
                info = os.stat(target)
            else:
                target = real / child.name
                info = child.stat(follow_symlinks=False)
        except OSError as error:
            context.skip(child_listed, f"cannot stat: {error.strerror or error}")
            continue
        if stat.S_ISDIR(info.st_mode):
            if not child.name.startswith("."):
                (linked if child.is_symlink() else subdirs).append((child_listed, target))
        elif stat.S_ISREG(info.st_mode):
            files.append(FoundFile(child_listed, target, info.st_size, info.st_mtime_ns))
    return files, subdirs, linked
