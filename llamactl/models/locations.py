"""Where each model store lives on this machine, resolved the way its own tool resolves it.

Everything comes in as arguments (the environment mapping and the home dir), so
the rules are tested without touching the real environment. An empty variable
counts as unset. ``~`` in a value means the home dir passed in, not ``$HOME``.
The only file reads are LM Studio's own small pointer and settings files, and
they are only read: LM Studio's ``findLMStudioHome`` writes the pointer file
when it is missing, and llamactl must not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import msgspec

logger = logging.getLogger("llamactl.models")

SYSTEM_OLLAMA_MODELS = Path("/usr/share/ollama/.ollama/models")
"""A Linux system install runs Ollama as user ``ollama`` with this home; probed beside the user's store."""


class StoreLocations(msgspec.Struct, frozen=True, kw_only=True):
    """The dirs the catalogue scans; none of them needs to exist."""

    huggingface: Path
    """The hub cache: ``<dir>/models--org--name/...``."""
    ollama: tuple[Path, ...]
    """Ollama model roots (each holds ``manifests/`` and ``blobs/``), in probe order, without duplicates."""
    lmstudio: Path
    """LM Studio's models dir: ``<dir>/<publisher>/<model>/<file>.gguf``."""


def resolve_locations(environ: Mapping[str, str], home: Path) -> StoreLocations:
    return StoreLocations(
        huggingface=huggingface_cache(environ, home),
        ollama=ollama_roots(environ, home),
        lmstudio=lmstudio_models_dir(environ, home),
    )


def huggingface_cache(environ: Mapping[str, str], home: Path) -> Path:
    """huggingface_hub 2.4's order (``constants.py``): HF_HUB_CACHE, the legacy name, then HF_HOME/hub."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if value := environ.get(variable):
            return _expand(value, home)
    if hf_home := environ.get("HF_HOME"):
        return _expand(hf_home, home) / "hub"
    if xdg_cache := environ.get("XDG_CACHE_HOME"):
        return _expand(xdg_cache, home) / "huggingface" / "hub"
    return home / ".cache" / "huggingface" / "hub"


def ollama_roots(environ: Mapping[str, str], home: Path) -> tuple[Path, ...]:
    """``$OLLAMA_MODELS`` (else ``~/.ollama/models``), then the system install's store.

    The system store is probed even when OLLAMA_MODELS is set: that variable
    moves the user's server, not a system service running as another user.
    """
    user_root = (
        _expand(value, home) if (value := environ.get("OLLAMA_MODELS")) else home / ".ollama" / "models"
    )
    if user_root == SYSTEM_OLLAMA_MODELS:
        return (user_root,)
    return (user_root, SYSTEM_OLLAMA_MODELS)


def lmstudio_home(environ: Mapping[str, str], home: Path) -> Path:
    """lmstudio-js ``findLMStudioHome``: LMSTUDIO_HOME, the pointer file, the legacy dir, ~/.lmstudio."""
    if value := environ.get("LMSTUDIO_HOME"):
        return _expand(value, home)
    pointer = home / ".lmstudio-home-pointer"
    try:
        pointed = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pointed = ""
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("cannot read LM Studio's home pointer %s: %s", pointer, error)
        pointed = ""
    if pointed:
        return _expand(pointed, home)
    legacy = home / ".cache" / "lm-studio"
    if legacy.is_dir():
        return legacy
    return home / ".lmstudio"


def lmstudio_models_dir(environ: Mapping[str, str], home: Path) -> Path:
    """``downloadsFolder`` from ``<home>/settings.json`` (lms ``modelsFolder.ts``), else ``<home>/models``."""
    studio_home = lmstudio_home(environ, home)
    settings = studio_home / "settings.json"
    try:
        downloads = json.loads(settings.read_bytes()).get("downloadsFolder")
    except FileNotFoundError:
        downloads = None
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("cannot read LM Studio's settings %s: %s", settings, error)
        downloads = None
    if isinstance(downloads, str) and downloads:
        return _expand(downloads, home)
    return studio_home / "models"


def _expand(value: str, home: Path) -> Path:
    if value == "~" or value.startswith("~/"):
        return home / value[2:]
    return Path(value)
