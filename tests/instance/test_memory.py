"""One instance's memory figures: the estimate from its files, and the figure after its start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llamactl.backends import get_backend
from llamactl.instance.memory import START_MARKER, InstanceMemory
from tests.models.gguf_files import MID, write_llama_gguf

MIB = 1024 * 1024
BUFFER_LINES = [
    "load_tensors:   CPU_Mapped model buffer size =   172.49 MiB",
    "llama_kv_cache:        CPU KV buffer size =    32.00 MiB",
    "sched_reserve:        CPU compute buffer size =    30.52 MiB",
]


def memory_of(model: Path, *flags: str) -> InstanceMemory:
    backend = get_backend("llama_cpp")
    return InstanceMemory(backend, backend.options_from_arguments(["-m", str(model), *flags]))


def test_after_the_start_the_figure_is_the_backends_report_of_this_start_and_the_unreported_allowance(
    tmp_path: Path,
) -> None:
    memory = memory_of(write_llama_gguf(tmp_path / "mid.gguf", MID), "-c", "4096")
    asyncio.run(memory.estimate())
    assert memory.profile is not None and memory.profile.estimate is not None
    estimate = memory.profile.estimate
    earlier_start = [
        f"{START_MARKER}llama-server ...",
        "load_tensors:   CPU_Mapped model buffer size = 9.00 MiB",
    ]
    memory.ready([*earlier_start, f"{START_MARKER}llama-server ...", *BUFFER_LINES])
    figures = memory.figures(pid=None)
    assert figures.estimated_bytes == estimate.total_bytes
    assert figures.reported_bytes == round((172.49 + 32.00 + 30.52) * MIB) + estimate.extra_bytes


def test_a_backend_that_reports_nothing_leaves_the_estimate_alone(tmp_path: Path) -> None:
    memory = memory_of(write_llama_gguf(tmp_path / "mid.gguf", MID))
    asyncio.run(memory.estimate())
    memory.ready([f"{START_MARKER}llama-server ...", "srv  llama_server: listening"])
    figures = memory.figures(pid=None)
    assert figures.reported_bytes is None and figures.estimated_bytes is not None
    assert memory.held_bytes(pid=None, running=True) == figures.estimated_bytes
