"""The catalogue over every store at once: entries, stable ids, the header cache, lookups and failures."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from llamactl.models import catalogue as catalogue_module
from llamactl.models.catalogue import Catalogue, DiscoverySettings, ModelNotFoundError
from llamactl.models.entry import ModelFormat, ModelSource
from llamactl.models.gguf_header import GgufHeader, read_gguf_header
from llamactl.models.locations import StoreLocations
from llamactl.models.sources.scan_context import ScanContext
from tests.e2e.tiny_models import N_CTX
from tests.models.gguf_files import write_llama_gguf
from tests.models.stores import (
    GGUF_REPO,
    SAFETENSORS_REPO,
    build_hf_cache,
    build_lmstudio_models,
    build_ollama_store,
    build_plain_dir,
)


class CountingReader:
    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> GgufHeader:
        self.paths.append(path)
        return read_gguf_header(path)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> DiscoverySettings:
    base = tmp_path_factory.mktemp("stores")
    build_hf_cache(base / "hub", base / "work-hf")
    build_ollama_store(base / "ollama", base / "work-ollama")
    build_lmstudio_models(base / "lmstudio" / "models")
    build_plain_dir(base / "models", base / "outside")
    locations = StoreLocations(
        huggingface=base / "hub",
        ollama=(base / "ollama", base / "absent"),
        lmstudio=base / "lmstudio" / "models",
    )
    return DiscoverySettings(locations=locations, paths=[base / "models"])


# id -> (source, format, architecture, context length)
EXPECTED = {
    f"hf:{GGUF_REPO}:tiny-F32": (ModelSource.HUGGINGFACE, ModelFormat.GGUF, "llama", N_CTX),
    f"hf:{GGUF_REPO}:tiny-F16": (ModelSource.HUGGINGFACE, ModelFormat.GGUF, "llama", 4096),
    f"hf:{SAFETENSORS_REPO}": (ModelSource.HUGGINGFACE, ModelFormat.SAFETENSORS, "llama", N_CTX),
    f"hf:{SAFETENSORS_REPO}@333333333333": (ModelSource.HUGGINGFACE, ModelFormat.SAFETENSORS, "llama", N_CTX),
    "ollama:tiny:latest": (ModelSource.OLLAMA, ModelFormat.GGUF, "llama", N_CTX),
    "ollama:tiny-st:latest": (ModelSource.OLLAMA, ModelFormat.SAFETENSORS, "llama", None),
    "lmstudio:test-pub/tiny-GGUF:tiny-F32": (ModelSource.LMSTUDIO, ModelFormat.GGUF, "llama", N_CTX),
    "lmstudio:test-pub/tiny-mlx": (ModelSource.LMSTUDIO, ModelFormat.MLX, "llama", N_CTX),
    "path:models:tiny": (ModelSource.PATH, ModelFormat.GGUF, "llama", N_CTX),
    "path:models/nested/deeper:small-F16": (ModelSource.PATH, ModelFormat.GGUF, "llama", 4096),
    "path:models/split:split-model": (ModelSource.PATH, ModelFormat.GGUF, "llama", 4096),
    "path:models/hf/tiny-llama": (ModelSource.PATH, ModelFormat.SAFETENSORS, "llama", N_CTX),
    "path:models/mlx/tiny-llama-mlx": (ModelSource.PATH, ModelFormat.MLX, "llama", N_CTX),
}


def test_every_store_listed_with_format_architecture_and_context(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    report = catalogue.scan()
    found = {
        entry.id: (entry.source, entry.format, entry.architecture, entry.context_length)
        for entry in catalogue.entries()
    }
    assert found == EXPECTED
    assert report.entries == len(EXPECTED)
    # only the link out of the named dir and the LoRA adapter (not a model) were passed over
    assert sorted(Path(skipped.path).name for skipped in report.skipped) == ["adapter-lora.gguf", "elsewhere"]


def test_sizes_are_the_files_on_disk(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    catalogue.scan()
    for entry in catalogue.entries():
        sizes = {os.path.realpath(file.path): os.path.getsize(file.path) for file in entry.files}
        assert [file.size_bytes for file in entry.files] == [
            os.path.getsize(file.path) for file in entry.files
        ]
        assert entry.size_bytes == sum(sizes.values()), entry.id


def test_ids_are_stable_across_rescans_and_catalogues(settings: DiscoverySettings) -> None:
    first = Catalogue(settings)
    first.scan()
    ids = [entry.id for entry in first.entries()]
    first.scan()
    second = Catalogue(settings)
    second.scan()
    assert [entry.id for entry in first.entries()] == ids == [entry.id for entry in second.entries()]
    assert first.entries() == second.entries()


def test_a_rescan_of_an_unchanged_tree_reads_no_headers(settings: DiscoverySettings) -> None:
    reader = CountingReader()
    catalogue = Catalogue(settings, read_header=reader)
    cold = catalogue.scan()
    assert len(reader.paths) == len(set(reader.paths))  # each file once, even within one scan
    assert len(reader.paths) > 10
    reader.paths.clear()
    warm = catalogue.scan()
    assert (reader.paths, warm.headers_read, warm.entries) == ([], 0, cold.entries)


def test_a_changed_file_is_read_again_and_a_deleted_one_drops_out(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_llama_gguf(tmp_path / f"{name}.gguf")
    reader = CountingReader()
    catalogue = Catalogue(_paths_only(tmp_path), read_header=reader)
    catalogue.scan()
    reader.paths.clear()
    changed = tmp_path / "a.gguf"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000))
    (tmp_path / "b.gguf").unlink()
    report = catalogue.scan()
    assert reader.paths == [changed]
    assert report.headers_read == 1
    assert [entry.id for entry in catalogue.entries()] == [f"path:{tmp_path.name}:a"]


def test_a_corrupt_file_is_reported_on_every_scan_but_read_once(tmp_path: Path) -> None:
    write_llama_gguf(tmp_path / "good.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\xff" * 100)
    reader = CountingReader()
    catalogue = Catalogue(_paths_only(tmp_path), read_header=reader)
    reports = [catalogue.scan(), catalogue.scan()]
    assert [[Path(skipped.path).name for skipped in report.skipped] for report in reports] == [
        ["bad.gguf"]
    ] * 2
    assert sorted(path.name for path in reader.paths) == ["bad.gguf", "good.gguf"]
    assert [entry.id for entry in catalogue.entries()] == [f"path:{tmp_path.name}:good"]


def test_a_failing_source_does_not_hide_the_others(
    settings: DiscoverySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(cache: Path, context: ScanContext) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(catalogue_module, "scan_huggingface", broken)
    catalogue = Catalogue(settings)
    report = catalogue.scan()
    assert {entry.source for entry in catalogue.entries()} == {
        ModelSource.OLLAMA,
        ModelSource.LMSTUDIO,
        ModelSource.PATH,
    }
    assert ("huggingface", "the scan failed: RuntimeError('a bug')") in {
        (skipped.path, skipped.reason) for skipped in report.skipped
    }


def test_disabled_sources_are_not_scanned(settings: DiscoverySettings) -> None:
    only_ollama = msgspec.structs.replace(settings, paths=[], huggingface=False, lmstudio=False)
    catalogue = Catalogue(only_ollama)
    catalogue.scan()
    assert {entry.source for entry in catalogue.entries()} == {ModelSource.OLLAMA}


def test_filter_is_a_case_insensitive_substring_of_id_repo_or_name(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    catalogue.scan()
    assert [entry.id for entry in catalogue.entries("TINY-gguf")] == [
        f"hf:{GGUF_REPO}:tiny-F16",
        f"hf:{GGUF_REPO}:tiny-F32",
        "lmstudio:test-pub/tiny-GGUF:tiny-F32",
    ]
    assert [entry.id for entry in catalogue.entries("SMALL-f16")] == [  # the F16 files' general.name
        f"hf:{GGUF_REPO}:tiny-F16",
        "path:models/nested/deeper:small-F16",
        "path:models/split:split-model",
    ]
    assert catalogue.entries("no such model") == []
    assert len(catalogue.entries(None)) == len(catalogue.entries("")) == len(EXPECTED)


def test_get_finds_an_id_and_suggests_close_ones(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    catalogue.scan()
    assert catalogue.get("ollama:tiny:latest").repo == "tiny"
    assert catalogue.get("OLLAMA:TINY:LATEST").id == "ollama:tiny:latest"
    with pytest.raises(ModelNotFoundError) as raised:
        catalogue.get("ollama:tiny:lates")
    error = raised.value
    assert (error.status, error.code) == (404, "model_not_found")
    assert "'ollama:tiny:lates'" in error.message
    assert "ollama:tiny:latest" in error.message
    with pytest.raises(ModelNotFoundError, match="llamactl models list"):
        catalogue.get("zzzzzzzzzzzzzzzzzzzzzzz")


def test_details_carry_the_gguf_facts_or_the_config(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    catalogue.scan()
    split = catalogue.details("path:models/split:split-model")
    assert split.gguf is not None
    assert (split.gguf.kind, split.gguf.block_count, split.gguf.parameters) == (
        "model",
        2,
        split.entry.parameters,
    )
    hf = catalogue.details(f"hf:{SAFETENSORS_REPO}")
    assert hf.gguf is None and hf.config is not None
    assert hf.config["model_type"] == "llama"


def test_two_models_that_would_share_an_id_are_told_apart(tmp_path: Path) -> None:
    for parent in ("one", "two"):
        write_llama_gguf(_made(tmp_path / parent / "models") / "m.gguf")
    settings = _paths_only(tmp_path / "one" / "models", tmp_path / "two" / "models")
    catalogue = Catalogue(settings)
    catalogue.scan()
    entries = catalogue.entries()
    assert [(entry.id, Path(entry.model_path).parent.parent.name) for entry in entries] == [
        ("path:models:m", "one"),
        ("path:models:m+2", "two"),
    ]


def test_ids_need_no_quoting(tmp_path: Path) -> None:
    write_llama_gguf(tmp_path / "my model (v2) ü.gguf")
    catalogue = Catalogue(_paths_only(tmp_path))
    catalogue.scan()
    [entry] = catalogue.entries()
    assert entry.id == f"path:{tmp_path.name}:my_model__v2___"
    assert entry.name == "test-llama"


def test_entries_encode_in_the_go_shape(settings: DiscoverySettings) -> None:
    catalogue = Catalogue(settings)
    catalogue.scan()
    encoded = msgspec.json.decode(msgspec.json.encode(catalogue.get("ollama:tiny:latest")))
    assert {"repo", "tag", "files", "size_bytes"} <= set(encoded)
    assert set(encoded["files"][0]) == {"name", "path", "size_bytes", "type"}
    assert encoded["files"][0]["type"] == "gguf"
    assert encoded["params"]["num_ctx"] == 1024


def _paths_only(*paths: Path) -> DiscoverySettings:
    absent = paths[0] / "absent"
    locations = StoreLocations(huggingface=absent, ollama=(absent,), lmstudio=absent)
    return DiscoverySettings(
        locations=locations, paths=list(paths), huggingface=False, ollama=False, lmstudio=False
    )


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory
