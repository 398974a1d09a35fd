"""An export as a gzipped tar (what ``GET …/export`` answers), and its unpacking into a new dir.

The unpacking is all or nothing: the members go into a temporary dir beside
the destination, which is renamed into place once every file is there, so a
cut download or a bad member leaves no half-written export behind.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from llamactl.deploy.export import ExportFiles
from llamactl.errors import LlamactlError

_SCRIPT_MODE = 0o755
_FILE_MODE = 0o644


class ExportDirTaken(LlamactlError):
    status = 409
    code = "conflict"


class BadArchive(LlamactlError):
    status = 422
    code = "bad_archive"


def write_archive(files: ExportFiles, into: BinaryIO) -> None:
    """Every file of the export, the copies read from their sources; the scripts executable."""
    now = int(time.time())
    with tarfile.open(fileobj=into, mode="w:gz") as archive:
        for name, content in sorted(files.written.items()):
            member = tarfile.TarInfo(name)
            member.size, member.mtime = len(content), now
            member.mode = _SCRIPT_MODE if name in files.executable else _FILE_MODE
            archive.addfile(member, io.BytesIO(content))
        for name, origin in sorted(files.copied.items()):
            with open(origin, "rb") as source:
                member = archive.gettarinfo(fileobj=source, arcname=name)
                member.mode, member.uid, member.gid, member.uname, member.gname = _FILE_MODE, 0, 0, "", ""
                archive.addfile(member, source)


def check_destination(directory: Path) -> None:
    """An export goes into a new dir, or an empty one: never over files someone may need."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportDirTaken(f"{directory} exists and is not an empty dir: choose a new one")


def unpack_archive(archive: BinaryIO, directory: Path) -> list[str]:
    """The archive's files in ``directory`` (new, or empty), their names answered; nothing on failure."""
    check_destination(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as opened:
            members = opened.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                    raise BadArchive(f"the export holds {member.name!r}, which is not a file inside it")
            # "data" refuses what the check above does, and links out of the dir, a second time.
            opened.extractall(building, filter="data")
        check_destination(directory)  # still new or empty: rename() replaces an empty dir only
        building.rename(directory)
    except (tarfile.TarError, EOFError) as error:
        shutil.rmtree(building, ignore_errors=True)
        raise BadArchive(f"the export is not a whole gzipped tar: {error}") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return sorted(member.name for member in members if member.isfile())
