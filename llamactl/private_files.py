"""Files only their owner may read, and the directories llamactl creates for them.

The database holds instances' environments (``HF_TOKEN``), and instance logs
hold whatever a backend prints, so llamactl creates its files 0600 and the
directories it creates 0700, whatever the umask. A directory that exists
already is left as it is: whoever made it chose its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where each directory created is 0700 (``Path.mkdir`` gives parents the umask's mode)."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: theirs to choose
            os.mkdir(directory, DIRECTORY_MODE)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating ``path`` 0600; an existing file readable by others is made 0600 too.

    A file of llamactl's that others can read predates this rule, and what is
    written into it next may be a secret.
    """
    descriptor = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) & 0o077:
            os.fchmod(descriptor, FILE_MODE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor
