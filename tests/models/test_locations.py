"""Where each store is found: every rule of each tool's own resolution, from a given environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.models.locations import (
    SYSTEM_OLLAMA_MODELS,
    huggingface_cache,
    lmstudio_home,
    lmstudio_models_dir,
    ollama_roots,
    resolve_locations,
)
from tests.models.stores import write_lmstudio_pointer, write_lmstudio_settings


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "HOME/.cache/huggingface/hub"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
        ({"HF_HOME": "/hf", "XDG_CACHE_HOME": "/xdg"}, "/hf/hub"),
        ({"HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HOME": "/hf"}, "/legacy"),
        ({"HF_HUB_CACHE": "/hub", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HOME": "/hf"}, "/hub"),
        ({"HF_HUB_CACHE": "", "HF_HOME": "/hf"}, "/hf/hub"),
        ({"HF_HOME": "~/hf"}, "HOME/hf/hub"),
    ],
)
def test_huggingface_cache_follows_huggingface_hub(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    assert huggingface_cache(environ, tmp_path) == Path(expected.replace("HOME", str(tmp_path)))


def test_huggingface_cache_matches_huggingface_hub_itself(tmp_path: Path) -> None:
    """The same answer as huggingface_hub's constants, imported under the same environment."""
    import subprocess
    import sys

    environ = {"HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf-home"), "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert huggingface_cache(environ, tmp_path) == Path(printed)


def test_ollama_probes_the_user_store_and_the_system_store(tmp_path: Path) -> None:
    assert ollama_roots({}, tmp_path) == (tmp_path / ".ollama" / "models", SYSTEM_OLLAMA_MODELS)
    assert ollama_roots({"OLLAMA_MODELS": "/big/ollama"}, tmp_path) == (
        Path("/big/ollama"),
        SYSTEM_OLLAMA_MODELS,
    )
    assert ollama_roots({"OLLAMA_MODELS": str(SYSTEM_OLLAMA_MODELS)}, tmp_path) == (SYSTEM_OLLAMA_MODELS,)


def test_lmstudio_home_from_the_environment_first(tmp_path: Path) -> None:
    write_lmstudio_pointer(tmp_path, tmp_path / "pointed")
    assert lmstudio_home({"LMSTUDIO_HOME": "/studio"}, tmp_path) == Path("/studio")


def test_lmstudio_home_from_the_pointer_file_which_is_never_written(tmp_path: Path) -> None:
    assert lmstudio_home({}, tmp_path) == tmp_path / ".lmstudio"
    assert not (tmp_path / ".lmstudio-home-pointer").exists()
    pointer = write_lmstudio_pointer(tmp_path, tmp_path / "moved")
    before = pointer.stat().st_mtime_ns
    assert lmstudio_home({}, tmp_path) == tmp_path / "moved"
    assert pointer.stat().st_mtime_ns == before


def test_lmstudio_legacy_home_only_when_it_exists(tmp_path: Path) -> None:
    assert lmstudio_home({}, tmp_path) == tmp_path / ".lmstudio"
    (tmp_path / ".cache" / "lm-studio").mkdir(parents=True)
    assert lmstudio_home({}, tmp_path) == tmp_path / ".cache" / "lm-studio"


def test_lmstudio_models_dir_from_settings_else_home_models(tmp_path: Path) -> None:
    studio_home = tmp_path / ".lmstudio"
    assert lmstudio_models_dir({}, tmp_path) == studio_home / "models"
    write_lmstudio_settings(studio_home, tmp_path / "downloads")
    assert lmstudio_models_dir({}, tmp_path) == tmp_path / "downloads"


def test_lmstudio_bad_settings_fall_back_to_home_models(tmp_path: Path) -> None:
    studio_home = tmp_path / ".lmstudio"
    studio_home.mkdir()
    for text in ("{not json", "[1, 2]", '{"downloadsFolder": 7}', '{"downloadsFolder": ""}'):
        (studio_home / "settings.json").write_text(text)
        assert lmstudio_models_dir({}, tmp_path) == studio_home / "models"


def test_resolve_locations_bundles_all_three(tmp_path: Path) -> None:
    locations = resolve_locations({"HF_HUB_CACHE": "/hub", "LMSTUDIO_HOME": "/studio"}, tmp_path)
    assert locations.huggingface == Path("/hub")
    assert locations.ollama[0] == tmp_path / ".ollama" / "models"
    assert locations.lmstudio == Path("/studio/models")
