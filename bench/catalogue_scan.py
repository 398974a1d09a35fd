"""How long a catalogue scan of a thousand GGUF files takes, cold and warm, against walking the tree.

    .venv/bin/python -m bench.catalogue_scan [--files N] [--rounds N] [--layers N] [--vocab N] [--merges N]

Writes N sparse GGUF files (a real header, the tensor data a hole) shaped like
a 32-layer llama 8B (291 tensors; 9 per layer), spread over ``<publisher>/<model>/`` dirs
of a plain dir, and times, each round: the baseline, a bare ``os.walk`` with
a ``stat`` of every file; a cold scan by a new ``Catalogue`` (no header
cache: every header is read and parsed); and a warm rescan by the same
catalogue (the tree unchanged: no header is opened). "Cold" means cold for
llamactl: the files were just written, so the OS page cache holds them. The
issue's target is a cold scan of 1 000 files under 1 s.

The tensor table and the vocabulary are what cost: the reader parses every
tensor's info, and passes each string of ``tokenizer.ggml.tokens`` and
``.merges`` by its length, so a real 128k-token vocabulary costs ~0.1 s per
file (``--vocab 128256 --merges 280147``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from llamactl.models.catalogue import Catalogue, DiscoverySettings
from llamactl.models.locations import StoreLocations
from tests.models.gguf_files import LlamaShape, write_llama_gguf

FILES_PER_DIR = 10
MODELS_PER_PUBLISHER = 10


def write_tree(root: Path, files: int, shape: LlamaShape) -> int:
    """``files`` copies of one header under ``root``, each extended sparse to the model's full size."""
    template = write_llama_gguf(root.parent / "template.gguf", shape)
    full_size = template.stat().st_size
    with open(template, "rb") as file:
        header = file.read(_data_offset(template))
    template.unlink()
    for number in range(files):
        model = number // FILES_PER_DIR
        directory = root / f"publisher-{model // MODELS_PER_PUBLISHER}" / f"model-{model}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"model-{model}-Q4_K_M-{number % FILES_PER_DIR}.gguf"
        with open(path, "wb") as file:
            file.write(header)
            file.truncate(full_size)
    return len(header)


def _data_offset(path: Path) -> int:
    from llamactl.models.gguf_header import read_gguf_header

    return read_gguf_header(path).data_offset


def walk_and_stat(root: Path) -> int:
    count = 0
    for directory, _, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(directory, name))
            count += 1
    return count


def timed_round(root: Path) -> tuple[float, float, float, int]:
    """Seconds of the baseline walk, a cold scan and a warm rescan; and the entries found."""
    began = time.perf_counter()
    walk_and_stat(root)
    baseline = time.perf_counter() - began
    absent = root / "absent"
    settings = DiscoverySettings(
        locations=StoreLocations(huggingface=absent, ollama=(absent,), lmstudio=absent),
        paths=[root],
        huggingface=False,
        ollama=False,
        lmstudio=False,
    )
    catalogue = Catalogue(settings)
    began = time.perf_counter()
    cold = catalogue.scan()
    cold_seconds = time.perf_counter() - began
    began = time.perf_counter()
    warm = catalogue.scan()
    warm_seconds = time.perf_counter() - began
    assert warm.headers_read == 0 and cold.entries == warm.entries, (cold, warm)
    return baseline, cold_seconds, warm_seconds, cold.entries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--merges", type=int, default=1024)
    arguments = parser.parse_args()
    shape = LlamaShape(
        embedding=4096,
        feed_forward=14336,
        heads=32,
        kv_heads=8,
        layers=arguments.layers,
        vocab=arguments.vocab,
        merges=arguments.merges,
        context=8192,
        file_type=15,
    )
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir) / "models"
        header_bytes = write_tree(root, arguments.files, shape)
        rounds = [timed_round(root) for _ in range(arguments.rounds)]
    entries = rounds[0][3]
    assert entries == arguments.files, (entries, arguments.files)
    print(
        f"{arguments.files} sparse GGUF files ({header_bytes / 1024:.0f} KiB headers: {shape.layers} layers,"
        f" {arguments.vocab} tokens, {arguments.merges} merges) in {arguments.files // FILES_PER_DIR} dirs;"
        f" {arguments.rounds} rounds"
    )
    print(f"{'case':38} {'median ms':>10} {'max ms':>8} {'x baseline':>11}")
    baseline = statistics.median(times[0] for times in rounds)
    labels = ("os.walk + stat (baseline)", "cold scan (no header cache)", "warm rescan (tree unchanged)")
    for index, label in enumerate(labels):
        times = [round_times[index] for round_times in rounds]
        median = statistics.median(times)
        print(f"{label:38} {median * 1000:10.1f} {max(times) * 1000:8.1f} {median / baseline:11.2f}")
    cold = statistics.median(times[1] for times in rounds)
    verdict = "met" if cold < 1.0 else "NOT met"
    print(
        f"target: a cold scan of 1 000 files under 1 s: {verdict} ({cold * 1000:.0f} ms for {entries} files)"
    )


if __name__ == "__main__":
    main()
