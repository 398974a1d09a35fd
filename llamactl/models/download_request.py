"""What a download asks for: ``org/model[:tag]`` and a format, checked so that no name can leave the cache."""

from __future__ import annotations

import re
from typing import Literal, get_args

import msgspec

from llamactl.errors import FieldError, echo

ModelFormat = Literal["gguf", "safetensors"]
_NAME_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_NAME_PART}/{_NAME_PART}")
_TAG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


class DownloadRequestError(FieldError, ValueError):
    """A download request or delete that breaks a rule; ``field`` names the offending field.

    A ValueError too: raised in a struct's ``__post_init__``, msgspec makes it a ValidationError.
    """


def split_repo(repo: str, field: str = "repo") -> tuple[str, str]:
    """``org/model[:tag]`` as ``(org/model, tag)``, the tag ``""`` when absent; split at the last ``:``.

    Only names the hub itself allows pass: one ``/``, letters, digits and
    ``._-``, no ``..`` or ``--`` (which would run into the cache's
    ``models--org--name`` dir names), so a name can never leave the cache.
    """
    repo_id, colon, tag = repo.rpartition(":") if ":" in repo else (repo, "", "")
    if not repo_id:
        raise DownloadRequestError("is required, as 'org/model' or 'org/model:tag'", field)
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise DownloadRequestError(
            f"must be 'org/model' or 'org/model:tag' (letters, digits and ._-, one '/'); got {echo(repo)}",
            field,
        )
    if colon:
        check_tag(tag, field)
    return repo_id, tag


def check_tag(tag: str, field: str = "tag") -> None:
    if not _TAG.fullmatch(tag) or ".." in tag:
        raise DownloadRequestError(f"the tag must be letters, digits and ._-; got {echo(tag)}", field)


class DownloadRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/models/download``.

    Decoded by msgspec, a bad ``repo`` surfaces as a ``ValidationError``
    whose text starts ``repo: `` and whose ``__cause__`` is the
    ``DownloadRequestError``; built directly, the error itself is raised.
    """

    repo: str
    format: ModelFormat = "gguf"

    def __post_init__(self) -> None:
        split_repo(self.repo)
        # msgspec checks the Literal when it decodes, not when the struct is built in code.
        if self.format not in get_args(ModelFormat):
            raise DownloadRequestError(f"must be 'gguf' or 'safetensors'; got {echo(self.format)}", "format")

    @property
    def repo_id(self) -> str:
        return split_repo(self.repo)[0]

    @property
    def tag(self) -> str:
        """The tag as given, ``""`` when absent (what Go's 202 answer echoes)."""
        return split_repo(self.repo)[1]
