"""A cache key for what a conversion is made from: files and values, hashed in a fixed order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from llamactl.deploy.plan import DeployRefused

CONTENT_HASH_LIMIT = 256 << 20
"""Files up to this size are keyed by their bytes; larger ones by path, size and mtime (see content_key)."""


def content_key(parts: Iterable[tuple[str, str | Path]]) -> str:
    """sha256 over labelled values and files, in label order, so a dir's listing order does not matter.

    A file up to CONTENT_HASH_LIMIT counts by its bytes (read in chunks). A larger one counts by its
    resolved path, size and mtime_ns: hashing a 16 GB model on every deploy would read it all (minutes on a
    cold disk) to find a cached result, while rewriting a weight file gives it a new mtime. The risk taken
    is a file rewritten in place with the same size and mtime; a copy elsewhere converts again.
    """
    digest = hashlib.sha256()
    for label, value in sorted(parts, key=lambda part: part[0]):
        digest.update(f"{label}\0".encode())
        if isinstance(value, str):
            digest.update(f"value {value}\0".encode())
            continue
        try:
            stat = value.stat()
            if stat.st_size > CONTENT_HASH_LIMIT:
                digest.update(f"stat {value.resolve()} {stat.st_size} {stat.st_mtime_ns}\0".encode())
            else:
                with open(value, "rb") as file:
                    digest.update(b"bytes " + hashlib.file_digest(file, "sha256").digest())
        except OSError as error:
            raise DeployRefused(f"cannot read {value}: {error}") from None
    return digest.hexdigest()
