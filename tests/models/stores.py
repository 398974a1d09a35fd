"""Synthetic model stores, laid out as each tool lays out its own, from tiny models written here.

Nothing is downloaded. The servable files are the end-to-end tests' tiny
llama (``tests/e2e/tiny_models.py``), so an entry built from these stores can
be started on the real llama-server; the others are header-only GGUFs
(``tests/models/gguf_files.py``): valid files whose tensor data is a hole.
Each builder returns the paths the tests check against.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from safetensors.numpy import load_file, save_file

from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model, write_tiny_vllm_model
from tests.models.gguf_files import (
    HeaderWriter,
    LlamaShape,
    write_llama_gguf,
    write_lora_gguf,
    write_mmproj_gguf,
)

GGUF_REPO = "test-org/tiny-GGUF"
GGUF_COMMIT = "1" * 40
SAFETENSORS_REPO = "test-org/tiny-llama"
SAFETENSORS_COMMIT = "2" * 40
OLD_SAFETENSORS_COMMIT = "3" * 40
SMALL_F16 = LlamaShape(name="small-f16", file_type=1, context=4096)
"""A header-only llama whose facts differ from the tiny one's (F16, a 4096 context)."""
OLLAMA_PARAMS = {"temperature": 0.7, "stop": ["<|im_end|>"], "num_ctx": 1024}
OLLAMA_SYSTEM = "You are a tiny test model."
OLLAMA_TEMPLATE = "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"


def write_mlx_model(directory: Path) -> Path:
    """The tiny llama as mlx_lm 0.32 saves it: weights stamped ``{"format": "mlx"}`` (utils.save_model)."""
    write_tiny_mlx_model(directory)
    weights = directory / "model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "mlx"})
    return directory


# --- Hugging Face hub cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class HfCache:
    root: Path
    gguf_snapshot: Path
    safetensors_snapshot: Path
    old_safetensors_snapshot: Path


def _etag(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _cache_file(repo_dir: Path, commit: str, name: str, source: Path, shared_store: Path | None) -> None:
    """Put ``source`` in the cache as huggingface_hub does: a snapshot symlink to the repo's blob.

    With ``shared_store`` (2.x), the repo blob is itself a relative symlink into the cache-wide store.
    """
    content = source.read_bytes()
    etag = _etag(content)
    blob = repo_dir / "blobs" / etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        if shared_store is None:
            blob.write_bytes(content)
        else:
            xet_hash = _etag(b"xet" + content)
            stored = shared_store / xet_hash[:2] / xet_hash
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(content)
            blob.symlink_to(os.path.relpath(stored, blob.parent))
    link = repo_dir / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def _cache_dir_files(repo_dir: Path, commit: str, source_dir: Path, shared_store: Path | None) -> None:
    for path in sorted(source_dir.rglob("*")):
        if path.is_file():
            _cache_file(repo_dir, commit, path.relative_to(source_dir).as_posix(), path, shared_store)


def build_hf_cache(root: Path, work: Path, with_projector: bool = True) -> HfCache:
    """A hub cache with a GGUF repo (two quants and a projector) and a safetensors repo in the 2.x layout.

    The projector is header-only: leave it out (``with_projector=False``) to start the model for real.

    The safetensors repo's blobs live in the shared ``<root>/blobs/`` store, and it has an
    older snapshot that ``refs/main`` no longer names. Around them: a dataset repo, ``.locks``,
    ``CACHEDIR.TAG`` and a partial download, none of which is a model. ``work`` is scratch space.
    """
    gguf_source = work / "gguf-source"
    gguf_source.mkdir(parents=True)
    write_tiny_gguf(gguf_source / "tiny-F32.gguf")
    write_llama_gguf(gguf_source / "tiny-F16.gguf", SMALL_F16)
    if with_projector:
        write_mmproj_gguf(gguf_source / "mmproj-tiny-F16.gguf")
    (gguf_source / "README.md").write_text("# tiny GGUF\n")
    gguf_repo = root / ("models--" + GGUF_REPO.replace("/", "--"))
    _cache_dir_files(gguf_repo, GGUF_COMMIT, gguf_source, shared_store=None)
    _write_ref(gguf_repo, "main", GGUF_COMMIT)
    (gguf_repo / "blobs" / (_etag(b"partial") + ".incomplete")).write_bytes(b"partial")

    shared_store = root / "blobs"
    shared_store.mkdir(parents=True)
    (shared_store / ".huggingface-shared-blobs").write_text("1\n")
    safetensors_source = write_tiny_vllm_model(work / "safetensors-source")
    safetensors_repo = root / ("models--" + SAFETENSORS_REPO.replace("/", "--"))
    _cache_dir_files(safetensors_repo, SAFETENSORS_COMMIT, safetensors_source, shared_store)
    for name in ("config.json", "model.safetensors"):
        _cache_file(safetensors_repo, OLD_SAFETENSORS_COMMIT, name, safetensors_source / name, shared_store)
    _write_ref(safetensors_repo, "main", SAFETENSORS_COMMIT)

    dataset = root / "datasets--test-org--data"
    _cache_file(dataset, "4" * 40, "config.json", safetensors_source / "config.json", None)
    _cache_file(dataset, "4" * 40, "data.safetensors", safetensors_source / "model.safetensors", None)
    _write_ref(dataset, "main", "4" * 40)
    (root / ".locks").mkdir()
    (root / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    return HfCache(
        root=root,
        gguf_snapshot=gguf_repo / "snapshots" / GGUF_COMMIT,
        safetensors_snapshot=safetensors_repo / "snapshots" / SAFETENSORS_COMMIT,
        old_safetensors_snapshot=safetensors_repo / "snapshots" / OLD_SAFETENSORS_COMMIT,
    )


def _write_ref(repo_dir: Path, ref: str, commit: str) -> None:
    path = repo_dir / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)  # huggingface_hub writes no newline


# --- Ollama -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaStore:
    root: Path
    manifest: Path
    model_blob: Path
    adapter_blobs: tuple[Path, ...]
    projector_blob: Path | None
    tensor_manifest: Path
    """A manifest of the newer safetensors layout, which llama.cpp cannot serve."""


def _ollama_blob(root: Path, content: bytes, media_type: str) -> tuple[dict[str, object], Path]:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    path = root / "blobs" / digest.replace(":", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return {"mediaType": media_type, "digest": digest, "size": len(content)}, path


def _write_manifest(
    root: Path, name: str, config: dict[str, object], layers: list[dict[str, object]]
) -> Path:
    path = root / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }
    path.write_text(json.dumps(manifest))
    return path


def build_ollama_store(root: Path, work: Path, with_projector: bool = True) -> OllamaStore:
    """``tiny:latest`` as ``ollama create`` stores it: a GGUF model layer, a LoRA adapter, a projector,
    params, a Go template and a system prompt; and ``tiny-st:latest`` in the safetensors layout.

    The projector is header-only: leave it out (``with_projector=False``) to start the model for real.
    """
    work.mkdir(parents=True, exist_ok=True)
    image = "application/vnd.ollama.image."
    model, model_blob = _ollama_blob(root, write_tiny_gguf(work / "model.gguf").read_bytes(), image + "model")
    adapter, adapter_blob = _ollama_blob(
        root, write_lora_gguf(work / "lora.gguf").read_bytes(), image + "adapter"
    )
    layers = [model, adapter]
    projector_blob = None
    if with_projector:
        projector, projector_blob = _ollama_blob(
            root, write_mmproj_gguf(work / "mmproj.gguf").read_bytes(), image + "projector"
        )
        layers.append(projector)
    layers += [
        _ollama_blob(root, json.dumps(OLLAMA_PARAMS).encode(), image + "params")[0],
        _ollama_blob(root, OLLAMA_TEMPLATE.encode(), image + "template")[0],
        _ollama_blob(root, OLLAMA_SYSTEM.encode(), image + "system")[0],
        _ollama_blob(root, b"MIT License", image + "license")[0],
    ]
    config_facts = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "1M",
        "file_type": "F32",
        "architecture": "amd64",
        "os": "linux",
    }
    config, _ = _ollama_blob(
        root, json.dumps(config_facts).encode(), "application/vnd.docker.container.image.v1+json"
    )
    manifest = _write_manifest(root, "registry.ollama.ai/library/tiny/latest", config, layers)

    tensor_config, _ = _ollama_blob(
        root,
        json.dumps({"model_format": "safetensors", "model_family": "llama", "file_type": "BF16"}).encode(),
        "application/vnd.docker.container.image.v1+json",
    )
    tensor = _ollama_blob(
        root, b"\0" * 64, image + "tensor; name=model.embed_tokens.weight; dtype=BF16; shape=4,8"
    )[0]
    tensor_manifest = _write_manifest(
        root, "registry.ollama.ai/library/tiny-st/latest", tensor_config, [tensor]
    )
    return OllamaStore(root, manifest, model_blob, (adapter_blob,), projector_blob, tensor_manifest)


# --- what a `llamactl serve` is pointed at ------------------------------------------------------------


@dataclass(frozen=True)
class ServedStores:
    hf: HfCache
    ollama: OllamaStore
    environment: dict[str, str]
    """HOME, HF_HUB_CACHE and OLLAMA_MODELS for a `llamactl serve` that finds these stores and none of
    the machine's own."""


def build_served_stores(root: Path, with_projector: bool = True) -> ServedStores:
    """The hub cache and the Ollama store under ``root``, with the environment that points at them."""
    hf = build_hf_cache(root / "hf", root / "work-hf", with_projector)
    ollama = build_ollama_store(root / "ollama", root / "work-ollama", with_projector)
    home = root / "home"
    home.mkdir()
    environment = {"HOME": str(home), "HF_HUB_CACHE": str(hf.root), "OLLAMA_MODELS": str(ollama.root)}
    return ServedStores(hf, ollama, environment)


# --- LM Studio --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LmStudioModels:
    models_dir: Path
    gguf: Path
    projector: Path
    mlx_dir: Path


def build_lmstudio_models(models_dir: Path) -> LmStudioModels:
    """``<publisher>/<model>/<file>.gguf`` with its projector beside it, and an MLX model dir."""
    model_dir = models_dir / "test-pub" / "tiny-GGUF"
    model_dir.mkdir(parents=True)
    gguf = write_tiny_gguf(model_dir / "tiny-F32.gguf")
    projector = write_mmproj_gguf(model_dir / "mmproj-tiny-F16.gguf")
    mlx_dir = write_mlx_model(models_dir / "test-pub" / "tiny-mlx")
    return LmStudioModels(models_dir, gguf, projector, mlx_dir)


def write_lmstudio_pointer(home: Path, studio_home: Path) -> Path:
    """``~/.lmstudio-home-pointer``, the one-line file LM Studio leaves to name a moved home."""
    pointer = home / ".lmstudio-home-pointer"
    pointer.write_text(f"{studio_home}\n")
    return pointer


def write_lmstudio_settings(studio_home: Path, downloads_folder: Path) -> Path:
    settings = studio_home / "settings.json"
    studio_home.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"downloadsFolder": str(downloads_folder), "theme": "dark"}))
    return settings


# --- a dir the user names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainDir:
    root: Path
    top_gguf: Path
    nested_gguf: Path
    shards: tuple[Path, Path]
    hf_dir: Path
    mlx_dir: Path
    loop: Path
    outside_link: Path
    outside_gguf: Path
    """A GGUF outside the root that ``outside_link`` leads to: it must not be listed."""


def build_plain_dir(root: Path, outside: Path) -> PlainDir:
    """GGUFs at the top, nested and split; an HF-style dir and an MLX dir; a LoRA (not a model);
    a symlink loop back to the root and a symlink to ``outside`` the root."""
    root.mkdir(parents=True)
    top_gguf = write_tiny_gguf(root / "tiny.gguf")
    nested_gguf = write_llama_gguf(_made(root / "nested" / "deeper") / "small-F16.gguf", SMALL_F16)
    split = _made(root / "split")
    first = write_llama_gguf(split / "split-model-00001-of-00002.gguf", SMALL_F16)
    second_half = HeaderWriter("llama")
    second_half.writer.add_uint16("split.no", 1)
    second_half.writer.add_uint16("split.count", 2)
    second_half.tensor("blk.9.ffn_up.weight", (128, 64))
    second = second_half.write(split / "split-model-00002-of-00002.gguf")
    write_lora_gguf(root / "nested" / "adapter-lora.gguf")
    hf_dir = write_tiny_vllm_model(root / "hf" / "tiny-llama")
    mlx_dir = write_mlx_model(root / "mlx" / "tiny-llama-mlx")
    loop = root / "nested" / "loop"
    loop.symlink_to(root, target_is_directory=True)
    outside.mkdir(parents=True, exist_ok=True)
    outside_gguf = write_tiny_gguf(outside / "outside.gguf")
    outside_link = root / "elsewhere"
    outside_link.symlink_to(outside, target_is_directory=True)
    return PlainDir(
        root, top_gguf, nested_gguf, (first, second), hf_dir, mlx_dir, loop, outside_link, outside_gguf
    )


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory
