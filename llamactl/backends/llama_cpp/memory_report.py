"""The memory llama-server reports for itself: its buffer-size lines, read as they arrive.

llama-server logs one line per buffer it allocates, but only at
``--log-verbosity 4`` or above: at the default (3) not one of them is printed,
on b10434 and b11434 alike. The format strings are the same in both builds
(``src/llama-model.cpp``, ``src/llama-kv-cache.cpp``, ``src/llama-context.cpp``)::

    load_tensors:   CPU_Mapped model buffer size =   172.49 MiB
    llama_context:        CPU  output buffer size =     0.49 MiB
    llama_kv_cache:        CPU KV buffer size =    32.00 MiB
    sched_reserve:        CPU compute buffer size =    30.52 MiB

Each is ``<function>: <buffer type> <kind> buffer size = <MiB, 2 decimals> MiB``,
behind whatever the log adds in front (llama.cpp's ``0.00.036.461 I`` prefix,
a timestamp of our own, colour codes). The buffer type names the device:
``CPU``, ``CPU_Mapped`` (the mmap-ed GGUF), ``CPU_REPACK``, ``CUDA0``,
``CUDA_Host`` (pinned host memory), ``MTL0_Mapped``, ``Vulkan0``.

Left out on purpose:
- ``llama_kv_cache: size = 32.00 MiB (4096 cells, ...)``: the sum of that
  cache's KV buffer lines again;
- the ``memory breakdown [MiB]`` table (``common_memory_breakdown_print``):
  whole MiB, printed once as the ``--fit`` dry run's projection before the
  model loads and again at exit, so it would count everything twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

__all__ = ["HOST", "BufferBytes", "MemoryReportParser", "ReportedMemory", "parse_memory_report"]

HOST = "CPU"
"""The device name under which host-memory buffers are kept, whichever backend allocated them."""

_MIB = 1024 * 1024
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_BUFFER_LINE = re.compile(
    r"(?P<function>\w+):\s+(?P<buffer>\S+)\s+(?P<kind>model|output|KV|RS|compute|LoRA|DSV4 \S+ state)"
    r" buffer size =\s*(?P<mib>\d+(?:\.\d+)?) MiB"
)
# Which field each kind of buffer counts under.
_FIELD_OF_KIND = {
    # The weights (load_tensors): one line per buffer, so one per shard file when mmap-ed. A quantized
    # model on a CPU also has a CPU_REPACK buffer, a copy of its matrices in the layout of the CPU's
    # kernels, while the mapped buffer still spans the whole file: both count, as both are resident
    # after the load (measured: the mapped pages in RSS as file pages, the copy as anonymous ones),
    # though the kernel may drop the mapped pages of the repacked matrices: clean page cache that
    # is not read again.
    "model": "model_bytes",
    "LoRA": "model_bytes",  # a --lora adapter's weights
    "KV": "kv_cache_bytes",  # one line per cache: two for sliding-window models
    "RS": "kv_cache_bytes",  # the recurrent state of Mamba/RWKV-style layers, their KV cache
    "state": "kv_cache_bytes",  # DeepSeek V4's extra attention state
    "output": "output_bytes",  # logits and embeddings of the last tokens
    "compute": "compute_bytes",  # the scheduler's graph buffers (sched_reserve; clip's for an mmproj)
}


class BufferBytes(msgspec.Struct, frozen=True):
    """What one device holds, or all devices together."""

    model_bytes: int = 0
    kv_cache_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.kv_cache_bytes + self.compute_bytes + self.output_bytes


class ReportedMemory(msgspec.Struct, frozen=True):
    """llama-server's own account of its buffers, summed over devices and kept per device."""

    model_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    output_bytes: int
    total_bytes: int
    devices: dict[str, BufferBytes]
    """By device: ``HOST`` for every buffer in host memory, else the backend's name (``CUDA0``, ``MTL0``)."""


def _device_of(buffer_type: str) -> str:
    """The device a buffer type lives on: host memory, however mapped, or the accelerator it names."""
    if buffer_type.startswith("CPU") or buffer_type.endswith("_Host") or buffer_type == "AMX":
        return HOST
    return buffer_type.removesuffix("_Mapped").removesuffix("_Split")


class MemoryReportParser:
    """Fed llama-server's log one line at a time; ``report`` holds what the lines so far add up to.

    Lines are summed, with two exceptions that keep a long-running log from
    counting a buffer twice: a compute buffer that is reserved again (after a
    LoRA change, ``sched_reserve`` reserves anew and prints every compute line
    again) replaces its earlier size, and a model buffer line after the
    context's lines begins the next model (a draft model, say), whose buffers
    add to the first one's.
    """

    def __init__(self) -> None:
        self._finished: list[dict[tuple[str, str], int]] = []
        self._current: dict[tuple[str, str], int] = {}
        self._compute: dict[tuple[str, str], int] = {}
        self._context_seen = False

    def feed(self, line: str) -> None:
        found = _BUFFER_LINE.search(_ANSI_ESCAPE.sub("", line))
        if found is None:
            return
        kind = found["kind"].split()[-1]
        field, device = _FIELD_OF_KIND[kind], _device_of(found["buffer"])
        size = round(float(found["mib"]) * _MIB)
        if kind == "model" and self._context_seen:
            self._close_model()
        if kind == "compute":
            self._compute[(found["function"], found["buffer"])] = size
            self._context_seen = True
            return
        if kind != "model":
            self._context_seen = True
        self._current[(device, field)] = self._current.get((device, field), 0) + size

    @property
    def report(self) -> ReportedMemory | None:
        """None until the first buffer line."""
        models = [*self._finished, self._current_with_compute()]
        if not any(models):
            return None
        per_device: dict[str, dict[str, int]] = {}
        for model in models:
            for (device, field), size in model.items():
                fields = per_device.setdefault(device, {})
                fields[field] = fields.get(field, 0) + size
        devices = {device: BufferBytes(**fields) for device, fields in sorted(per_device.items())}
        overall = BufferBytes(
            **{
                field: sum(getattr(buffers, field) for buffers in devices.values())
                for field in ("model_bytes", "kv_cache_bytes", "compute_bytes", "output_bytes")
            }
        )
        return ReportedMemory(
            model_bytes=overall.model_bytes,
            kv_cache_bytes=overall.kv_cache_bytes,
            compute_bytes=overall.compute_bytes,
            output_bytes=overall.output_bytes,
            total_bytes=overall.total_bytes,
            devices=devices,
        )

    def _current_with_compute(self) -> dict[tuple[str, str], int]:
        sizes = dict(self._current)
        for (_, buffer), size in self._compute.items():
            key = (_device_of(buffer), "compute_bytes")
            sizes[key] = sizes.get(key, 0) + size
        return sizes

    def _close_model(self) -> None:
        self._finished.append(self._current_with_compute())
        self._current, self._compute, self._context_seen = {}, {}, False


def parse_memory_report(lines: Iterable[str]) -> ReportedMemory | None:
    """The report of a whole log at once."""
    parser = MemoryReportParser()
    for line in lines:
        parser.feed(line)
    return parser.report
