"""The conversions a deploy needs, cached under llamactl's data dir: the plan's ``Staging``.

Each conversion is cached by what it was made from, so deploying the same
checkpoint again (or after a restart) converts nothing. The results are
named after the adapter, since that name is what clients ask for
(``instance/adapter``) and the backends take adapter names from file and dir
names: the cached artifact sits at ``<hash>/<name>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llamactl.deploy.checkpoint_kinds import PeftLoraDir
from llamactl.deploy.llama_cpp_convert import staged_gguf_lora, staged_gguf_model
from llamactl.deploy.mlx_adapter import staged_mlx_adapter
from llamactl.deploy.plan import DeployRefused


class CachedStaging:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def gguf_model(self, model_dir: str, quantization: str) -> str:
        return str(staged_gguf_model(Path(model_dir), self.cache_dir, quantization))

    def gguf_lora(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        staged = staged_gguf_lora(adapter, Path(base_dir), self.cache_dir)
        return str(_named(staged, f"{name}.gguf"))

    def mlx_adapter(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        staged = staged_mlx_adapter(adapter, _model_config(Path(base_dir)), self.cache_dir)
        return str(_named(staged, name))


def _named(staged: Path, name: str) -> Path:
    """``staged`` under ``name``: a link beside it, ``<staged>.named/<name>``, made once."""
    named = staged.with_name(staged.name + ".named") / name
    if not named.exists():
        named.parent.mkdir(parents=True, exist_ok=True)
        temporary = named.with_name(f".{name}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(staged)
        temporary.replace(named)  # atomic: a concurrent deploy sees the link whole or not at all
    return named


def _model_config(model_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise DeployRefused(f"cannot read the base model's config.json in {model_dir}: {error}") from None
    return config
