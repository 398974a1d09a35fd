"""What an instance's processes take in memory, measured, and how much the machine has left.

An instance runs as a process tree: the watchdog, the backend, and whatever
the backend starts. ``measure_process_tree`` sums the tree. Three figures
per process, from psutil (on Linux, ``/proc/<pid>/smaps_rollup``):

- RSS, every resident page the process maps. A GGUF is mmap-ed, so its
  weights are page cache shared with every other process mapping the same
  file: two instances of one model each show the full weights in RSS.
- PSS, each shared page divided among the processes that map it. Summed over
  all instances it is the RAM they take together, weights counted once.
  **Admission and the memory budget should use PSS**, falling back to RSS
  where the system has no PSS (macOS, or a process of another user).
- USS, the pages only this process maps: what stopping it frees at once.
  It leaves shared weights out entirely, so it undercounts an instance whose
  model another one also serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec
import psutil

__all__ = ["MeasuredMemory", "SystemMemory", "VirtualMemory", "measure_process_tree", "system_memory"]


class MeasuredMemory(msgspec.Struct, frozen=True):
    """A process tree's memory, summed over the processes that could be read."""

    rss_bytes: int
    pss_bytes: int | None
    """None unless every process counted had one (Linux, and readable by us)."""
    uss_bytes: int | None
    """None unless every process counted was readable by us."""
    processes: int
    """How many processes were counted: 0 when the tree's root had already exited."""

    @property
    def admission_bytes(self) -> int:
        """The figure to budget with: PSS where there is one (see the module docstring), else RSS."""
        return self.pss_bytes if self.pss_bytes is not None else self.rss_bytes


class SystemMemory(msgspec.Struct, frozen=True):
    total_bytes: int
    available_bytes: int
    """What can be allocated without swapping: Linux's MemAvailable, which counts droppable page cache."""
    used_percent: float
    """100 · (total - available) / total, as psutil computes it."""


class VirtualMemory(Protocol):
    """The part of ``psutil.virtual_memory()``'s answer that is read; tests pass their own."""

    @property
    def total(self) -> int: ...

    @property
    def available(self) -> int: ...

    @property
    def percent(self) -> float: ...


def _process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def measure_process_tree(pid: int) -> MeasuredMemory:
    """The memory of process ``pid`` and all its descendants; a process that exits meanwhile is skipped."""
    try:
        processes = _process_tree(pid)
    except psutil.NoSuchProcess:
        return MeasuredMemory(rss_bytes=0, pss_bytes=None, uss_bytes=None, processes=0)
    rss, counted = 0, 0
    pss: int | None = 0
    uss: int | None = 0
    for process in processes:
        try:
            try:
                full = process.memory_full_info()
            except psutil.AccessDenied:  # another user's process: its RSS is still public
                rss += process.memory_info().rss
                pss = uss = None
            else:
                rss += full.rss
                uss = None if uss is None else uss + full.uss
                # psutil has PSS only on Linux.
                process_pss: int | None = getattr(full, "pss", None)
                pss = None if pss is None or process_pss is None else pss + process_pss
        except psutil.NoSuchProcess:  # exited since the tree was listed (a zombie is one too)
            continue
        counted += 1
    if counted == 0:
        return MeasuredMemory(rss_bytes=0, pss_bytes=None, uss_bytes=None, processes=0)
    return MeasuredMemory(rss_bytes=rss, pss_bytes=pss, uss_bytes=uss, processes=counted)


def system_memory(read: Callable[[], VirtualMemory] = psutil.virtual_memory) -> SystemMemory:
    """The machine's memory now; ``read`` is psutil's reader unless a test injects its own."""
    memory = read()
    return SystemMemory(
        total_bytes=memory.total, available_bytes=memory.available, used_percent=memory.percent
    )
