"""Reading a GGUF header: llamactl's reader against gguf.GGUFReader, the baseline, on the same files.

    .venv/bin/python -m bench.gguf_header_speed [--rounds N]

The files are written into a temp dir by tests/models/gguf_files.py, headers only (the tensor data is a
sparse hole): an 8B llama laid out as Q4_K_M (291 tensors, 128,256 tokens, 280,147 merges, a 7.5 MB
header in a 4.7 GB file) and the tiny default llama. Each reader's best of --rounds is shown.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import gguf

from llamactl.models.gguf_header import read_gguf_header
from tests.models.gguf_files import LLAMA3_8B, write_llama_gguf


def best_seconds(read: Callable[[Path], object], path: Path, rounds: int, calls: int) -> float:
    """The fastest of ``rounds`` timings, each the mean of ``calls`` reads."""
    timings = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            read(path)
        timings.append((time.perf_counter() - began) / calls)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        files = {
            "8B llama Q4_K_M": (write_llama_gguf(Path(workdir) / "llama3-8b.gguf", LLAMA3_8B), 1),
            "tiny llama": (write_llama_gguf(Path(workdir) / "tiny.gguf"), 200),
        }
        print(f"best of {arguments.rounds}; the baseline is gguf {version('gguf')}'s GGUFReader")
        print(f"{'file':18} {'header KB':>10} {'GGUFReader ms':>14} {'llamactl ms':>12} {'x faster':>9}")
        for label, (path, calls) in files.items():
            header = read_gguf_header(path)
            baseline = best_seconds(gguf.GGUFReader, path, arguments.rounds, calls) * 1000
            measured = best_seconds(read_gguf_header, path, arguments.rounds, calls) * 1000
            header_kb = header.data_offset / 1e3
            print(
                f"{label:18} {header_kb:10.1f} {baseline:14.2f} {measured:12.3f} {baseline / measured:9.1f}"
            )


if __name__ == "__main__":
    main()
