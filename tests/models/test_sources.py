"""Each store's scanner on a synthetic store: the entries, their facts and files, and what is passed over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from llamactl.models.entry import FileType, ModelEntry, ModelFormat, ModelSource
from llamactl.models.sources.huggingface import scan_huggingface
from llamactl.models.sources.lmstudio import scan_lmstudio
from llamactl.models.sources.ollama import ollama_name, scan_ollama
from llamactl.models.sources.paths import scan_paths
from llamactl.models.sources.scan_context import ScanContext
from tests.e2e.tiny_models import N_CTX
from tests.models.gguf_files import write_llama_gguf
from tests.models.stores import (
    GGUF_COMMIT,
    GGUF_REPO,
    OLD_SAFETENSORS_COMMIT,
    OLLAMA_PARAMS,
    OLLAMA_SYSTEM,
    SAFETENSORS_COMMIT,
    SAFETENSORS_REPO,
    SMALL_F16,
    HfCache,
    LmStudioModels,
    OllamaStore,
    PlainDir,
    build_hf_cache,
    build_lmstudio_models,
    build_ollama_store,
    build_plain_dir,
)


def by_id(entries: list[ModelEntry]) -> dict[str, ModelEntry]:
    ids = [entry.id for entry in entries]
    assert len(ids) == len(set(ids)), ids
    return {entry.id: entry for entry in entries}


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> HfCache:
    base = tmp_path_factory.mktemp("hf")
    return build_hf_cache(base / "hub", base / "work")


@pytest.fixture(scope="module")
def ollama_store(tmp_path_factory: pytest.TempPathFactory) -> OllamaStore:
    base = tmp_path_factory.mktemp("ollama")
    return build_ollama_store(base / "models", base / "work")


@pytest.fixture(scope="module")
def lmstudio(tmp_path_factory: pytest.TempPathFactory) -> LmStudioModels:
    return build_lmstudio_models(tmp_path_factory.mktemp("lmstudio") / "models")


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> PlainDir:
    base = tmp_path_factory.mktemp("plain")
    return build_plain_dir(base / "models", base / "outside")


# --- Hugging Face -----------------------------------------------------------------------------------


def test_hf_gguf_repo_gives_one_entry_per_quant_with_the_projector(hf_cache: HfCache) -> None:
    entries = by_id(scan_huggingface(hf_cache.root, ScanContext()))
    f32, f16 = entries[f"hf:{GGUF_REPO}:tiny-F32"], entries[f"hf:{GGUF_REPO}:tiny-F16"]
    snapshot = hf_cache.gguf_snapshot
    for entry in (f32, f16):
        assert (entry.source, entry.format, entry.repo, entry.tag) == (
            ModelSource.HUGGINGFACE,
            ModelFormat.GGUF,
            GGUF_REPO,
            "main",
        )
        assert entry.revision == GGUF_COMMIT
        assert entry.mmproj_path == str(snapshot / "mmproj-tiny-F16.gguf")
        assert entry.servable_by_llama_cpp and entry.chat_template
        assert entry.architecture == "llama"
    assert (f32.quantization, f32.context_length, f32.model_path) == (
        "F32",
        N_CTX,
        str(snapshot / "tiny-F32.gguf"),
    )
    assert (f16.quantization, f16.context_length) == ("F16", SMALL_F16.context)
    assert [(file.name, file.type) for file in f32.files] == [
        ("tiny-F32.gguf", FileType.GGUF),
        ("mmproj-tiny-F16.gguf", FileType.MMPROJ),
    ]
    assert f32.size_bytes == sum(file.size_bytes for file in f32.files)
    assert f32.size_bytes == sum(os.path.getsize(file.path) for file in f32.files)


def test_hf_safetensors_repo_in_the_shared_blob_layout(hf_cache: HfCache) -> None:
    entries = by_id(scan_huggingface(hf_cache.root, ScanContext()))
    current = entries[f"hf:{SAFETENSORS_REPO}"]
    old = entries[f"hf:{SAFETENSORS_REPO}@{OLD_SAFETENSORS_COMMIT[:12]}"]
    assert current.format is ModelFormat.SAFETENSORS
    assert (current.tag, current.revision) == ("main", SAFETENSORS_COMMIT)
    assert (old.tag, old.revision) == (OLD_SAFETENSORS_COMMIT, OLD_SAFETENSORS_COMMIT)
    assert current.model_path == str(hf_cache.safetensors_snapshot)
    assert (current.architecture, current.context_length, current.quantization) == ("llama", N_CTX, "float32")
    assert current.chat_template and not old.chat_template
    assert not current.servable_by_llama_cpp
    # the listed path is the snapshot's; the size is the shared store's blob, two links away
    weights = next(file for file in current.files if file.name == "model.safetensors")
    assert weights.type is FileType.SAFETENSORS
    assert Path(weights.path) == hf_cache.safetensors_snapshot / "model.safetensors"
    assert weights.size_bytes == os.path.getsize(weights.path)
    assert Path(os.path.realpath(weights.path)).is_relative_to(hf_cache.root / "blobs")


def test_hf_safetensors_parameters_from_the_headers(hf_cache: HfCache) -> None:
    from safetensors.numpy import load_file

    entries = by_id(scan_huggingface(hf_cache.root, ScanContext()))
    tensors = load_file(str(hf_cache.safetensors_snapshot / "model.safetensors"))
    assert entries[f"hf:{SAFETENSORS_REPO}"].parameters == sum(tensor.size for tensor in tensors.values())


def test_hf_datasets_shared_blobs_and_partial_downloads_are_not_models(hf_cache: HfCache) -> None:
    context = ScanContext()
    entries = scan_huggingface(hf_cache.root, context)
    assert {entry.repo for entry in entries} == {GGUF_REPO, SAFETENSORS_REPO}
    assert not any(file.path.endswith(".incomplete") for entry in entries for file in entry.files)
    assert context.skipped == []


def test_hf_scan_agrees_with_huggingface_hubs_scan_cache_dir(hf_cache: HfCache) -> None:
    """Same repos, revisions and file sizes as huggingface_hub's own cache scan."""
    entries = scan_huggingface(hf_cache.root, ScanContext())
    theirs = {repo.repo_id: repo for repo in scan_cache_dir(hf_cache.root).repos if repo.repo_type == "model"}
    assert set(theirs) == {entry.repo for entry in entries}
    ours_revisions = {(entry.repo, entry.revision) for entry in entries}
    assert ours_revisions == {
        (repo_id, rev.commit_hash) for repo_id, repo in theirs.items() for rev in repo.revisions
    }
    their_sizes = {
        str(file.file_path): file.size_on_disk
        for repo in theirs.values()
        for revision in repo.revisions
        for file in revision.files
    }
    our_sizes = {file.path: file.size_bytes for entry in entries for file in entry.files}
    assert our_sizes.items() <= their_sizes.items()
    weights = {path for path in their_sizes if path.endswith((".gguf", ".safetensors"))}
    assert weights <= set(our_sizes)
    for entry in entries:
        revision = next(rev for rev in theirs[entry.repo].revisions if rev.commit_hash == entry.revision)
        assert entry.tag in (set(revision.refs) or {revision.commit_hash})


def test_hf_missing_cache_is_empty_not_an_error(tmp_path: Path) -> None:
    context = ScanContext()
    assert scan_huggingface(tmp_path / "absent", context) == []
    assert context.skipped == []


def test_hf_ref_with_a_newline_and_a_broken_snapshot_link(tmp_path: Path) -> None:
    cache = build_hf_cache(tmp_path / "hub", tmp_path / "work")
    (cache.gguf_snapshot.parent.parent / "refs" / "main").write_text(GGUF_COMMIT + "\n")
    (cache.gguf_snapshot / "gone.gguf").symlink_to("../../blobs/" + "f" * 64)
    context = ScanContext()
    entries = by_id(scan_huggingface(cache.root, context))
    assert entries[f"hf:{GGUF_REPO}:tiny-F32"].tag == "main"
    assert [Path(skipped.path).name for skipped in context.skipped] == ["gone.gguf"]


# --- Ollama -----------------------------------------------------------------------------------------


def test_ollama_manifest_to_gguf_with_adapter_projector_params_and_system(ollama_store: OllamaStore) -> None:
    entries = by_id(scan_ollama([ollama_store.root], ScanContext()))
    tiny = entries["ollama:tiny:latest"]
    assert (tiny.repo, tiny.tag, tiny.name) == ("tiny", "latest", "tiny:latest")
    assert (tiny.format, tiny.architecture, tiny.context_length) == (ModelFormat.GGUF, "llama", N_CTX)
    assert tiny.model_path == str(ollama_store.model_blob)
    assert tiny.adapter_paths == tuple(str(path) for path in ollama_store.adapter_blobs)
    assert tiny.mmproj_path == str(ollama_store.projector_blob)
    assert tiny.params == OLLAMA_PARAMS
    assert tiny.system_prompt == OLLAMA_SYSTEM
    # the GGUF's own Jinja template, not the Go template layer
    assert tiny.chat_template and tiny.servable_by_llama_cpp
    kinds = [(file.name, file.type) for file in tiny.files]
    assert kinds == [
        ("model", FileType.GGUF),
        ("adapter", FileType.ADAPTER),
        ("projector", FileType.MMPROJ),
        ("params", FileType.OTHER),
        ("template", FileType.OTHER),
        ("system", FileType.OTHER),
        ("license", FileType.OTHER),
    ]
    assert tiny.size_bytes == sum(os.path.getsize(file.path) for file in tiny.files)


def test_ollama_safetensors_layout_is_listed_but_not_servable_by_llama_cpp(ollama_store: OllamaStore) -> None:
    tensor_model = by_id(scan_ollama([ollama_store.root], ScanContext()))["ollama:tiny-st:latest"]
    assert tensor_model.format is ModelFormat.SAFETENSORS
    assert not tensor_model.servable_by_llama_cpp
    assert tensor_model.model_path == str(ollama_store.tensor_manifest)
    assert (tensor_model.architecture, tensor_model.quantization) == ("llama", "BF16")


def test_ollama_names_as_ollama_shows_them() -> None:
    assert ollama_name("registry.ollama.ai", "library", "llama3.2") == "llama3.2"
    assert ollama_name("registry.ollama.ai", "user", "m") == "user/m"
    assert ollama_name("hf.co", "bartowski", "X-GGUF") == "hf.co/bartowski/X-GGUF"


def test_ollama_root_probed_twice_is_listed_once(ollama_store: OllamaStore, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(ollama_store.root)
    roots = [ollama_store.root, tmp_path / "link", tmp_path / "absent"]
    assert len(scan_ollama(roots, ScanContext())) == 2


def test_ollama_corrupt_manifest_missing_blob_and_bad_model_blob_are_passed_over(tmp_path: Path) -> None:
    store = build_ollama_store(tmp_path / "models", tmp_path / "work")
    library = store.root / "manifests" / "registry.ollama.ai" / "library"
    (library / "broken").mkdir()
    (library / "broken" / "latest").write_text("{not json")
    manifest = store.manifest.read_text()
    (library / "tiny" / "gone").write_text(manifest.replace(store.model_blob.name[7:], "0" * 64))
    corrupt_blob = store.root / "blobs" / ("sha256-" + "e" * 64)
    corrupt_blob.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    (library / "tiny" / "corrupt").write_text(manifest.replace(store.model_blob.name[7:], "e" * 64))
    context = ScanContext()
    entries = by_id(scan_ollama([store.root], context))
    assert set(entries) == {"ollama:tiny:latest", "ollama:tiny-st:latest"}
    assert {Path(skipped.path).name for skipped in context.skipped} == {"latest", "gone", corrupt_blob.name}


# --- LM Studio --------------------------------------------------------------------------------------


def test_lmstudio_publisher_model_file_with_projector_and_mlx_dir(lmstudio: LmStudioModels) -> None:
    entries = by_id(scan_lmstudio(lmstudio.models_dir, ScanContext()))
    assert set(entries) == {"lmstudio:test-pub/tiny-GGUF:tiny-F32", "lmstudio:test-pub/tiny-mlx"}
    gguf = entries["lmstudio:test-pub/tiny-GGUF:tiny-F32"]
    assert (gguf.repo, gguf.format, gguf.context_length) == ("test-pub/tiny-GGUF", ModelFormat.GGUF, N_CTX)
    assert gguf.model_path == str(lmstudio.gguf)
    assert gguf.mmproj_path == str(lmstudio.projector)
    mlx = entries["lmstudio:test-pub/tiny-mlx"]
    assert (mlx.format, mlx.architecture, mlx.context_length) == (ModelFormat.MLX, "llama", N_CTX)
    assert mlx.model_path == str(lmstudio.mlx_dir)


def test_lmstudio_missing_dir_is_empty(tmp_path: Path) -> None:
    assert scan_lmstudio(tmp_path / "absent", ScanContext()) == []


# --- user-named dirs --------------------------------------------------------------------------------


def test_plain_dir_lists_nested_split_hf_and_mlx_models(plain_dir: PlainDir) -> None:
    entries = by_id(scan_paths([plain_dir.root], ScanContext()))
    assert set(entries) == {
        "path:models:tiny",
        "path:models/nested/deeper:small-F16",
        "path:models/split:split-model",
        "path:models/hf/tiny-llama",
        "path:models/mlx/tiny-llama-mlx",
    }
    assert entries["path:models:tiny"].model_path == str(plain_dir.top_gguf)
    nested = entries["path:models/nested/deeper:small-F16"]
    assert (nested.repo, nested.quantization, nested.context_length) == ("models/nested/deeper", "F16", 4096)
    hf = entries["path:models/hf/tiny-llama"]
    assert (hf.format, hf.model_path) == (ModelFormat.SAFETENSORS, str(plain_dir.hf_dir))
    assert entries["path:models/mlx/tiny-llama-mlx"].format is ModelFormat.MLX


def test_split_gguf_is_one_entry_loaded_from_its_first_shard(plain_dir: PlainDir) -> None:
    split = by_id(scan_paths([plain_dir.root], ScanContext()))["path:models/split:split-model"]
    first, second = plain_dir.shards
    assert split.model_path == str(first)
    assert [file.path for file in split.files] == [str(first), str(second)]
    assert split.size_bytes == first.stat().st_size + second.stat().st_size
    from gguf import GGUFReader

    assert split.parameters == sum(
        int(tensor.n_elements) for shard in plain_dir.shards for tensor in GGUFReader(shard).tensors
    )


def test_symlink_loop_ends_and_a_link_out_of_the_root_is_not_followed(plain_dir: PlainDir) -> None:
    context = ScanContext()
    entries = scan_paths([plain_dir.root], context)
    paths = {file.path for entry in entries for file in entry.files}
    assert not any("loop" in Path(path).parts for path in paths)
    assert str(plain_dir.outside_gguf) not in paths
    assert not any("elsewhere" in Path(path).parts for path in paths)
    assert str(plain_dir.outside_link) in {skipped.path for skipped in context.skipped}


def test_a_file_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = write_llama_gguf(tmp_path / "outside.gguf")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked.gguf").symlink_to(outside)
    (root / "up").symlink_to("..")
    context = ScanContext()
    assert scan_paths([root], context) == []
    assert {Path(skipped.path).name for skipped in context.skipped} == {"linked.gguf", "up"}


def test_a_link_within_the_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    write_llama_gguf(root / "real" / "model.gguf")
    (root / "alias").symlink_to("real")
    (root / "other.gguf").symlink_to(root / "real" / "model.gguf")
    entries = by_id(scan_paths([root], ScanContext()))
    # a dir reached twice is walked once, by its own name rather than a link's
    assert set(entries) == {"path:root/real:model", "path:root:other"}


def test_corrupt_and_unreadable_files_are_skipped_and_the_rest_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_llama_gguf(root / "good.gguf")
    (root / "empty.gguf").write_bytes(b"")
    (root / "garbage.gguf").write_bytes(os.urandom(4096))
    (root / "truncated.gguf").write_bytes((root / "good.gguf").read_bytes()[:200])
    hf_dir = root / "bad-hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{not json")
    (hf_dir / "model.safetensors").write_bytes(b"\x10\x00")
    bad_weights = root / "bad-weights"
    bad_weights.mkdir()
    (bad_weights / "config.json").write_text('{"model_type": "llama"}')
    (bad_weights / "model.safetensors").write_bytes((2**62).to_bytes(8, "little"))
    unreadable = write_llama_gguf(root / "unreadable.gguf")
    unreadable.chmod(0)
    (root / "locked").mkdir(mode=0)
    context = ScanContext()
    try:
        entries = scan_paths([root], context)
    finally:
        unreadable.chmod(0o644)
        (root / "locked").chmod(0o755)
    skipped = {Path(skipped.path).name for skipped in context.skipped}
    expected = {"empty.gguf", "garbage.gguf", "truncated.gguf", "config.json", "model.safetensors"}
    if os.geteuid() == 0:  # root reads anything
        assert [entry.id for entry in entries] == ["path:root:good", "path:root:unreadable"]
    else:
        assert [entry.id for entry in entries] == ["path:root:good"]
        expected |= {"unreadable.gguf", "locked"}
    assert skipped == expected


def test_a_split_gguf_missing_a_shard_is_skipped(tmp_path: Path) -> None:
    write_llama_gguf(tmp_path / "m-00001-of-00003.gguf")
    write_llama_gguf(tmp_path / "m-00003-of-00003.gguf")
    context = ScanContext()
    assert scan_paths([tmp_path], context) == []
    assert "without shards [2] of 3" in context.skipped[0].reason
