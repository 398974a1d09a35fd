"""LM Studio's models dir: ``<publisher>/<model>/<file>.gguf``, a projector beside it, MLX dirs alike.

The layout mirrors Hugging Face repos (https://lmstudio.ai/docs/basics/import-model),
so the dir below the models dir is the repo (``lmstudio-community/Qwen3-4B-GGUF``)
and the scan is the one of a user-named dir with that naming. Read only.
"""

from __future__ import annotations

import os
from pathlib import Path

from llamactl.models.entry import ModelEntry, ModelSource
from llamactl.models.sources.paths import tree_entries
from llamactl.models.sources.scan_context import ScanContext


def scan_lmstudio(models_dir: Path, context: ScanContext) -> list[ModelEntry]:
    real_dir = Path(os.path.realpath(models_dir))
    if not real_dir.is_dir():
        return []
    return tree_entries(models_dir, real_dir, ModelSource.LMSTUDIO, None, context)
