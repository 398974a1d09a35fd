"""One instance's memory: estimated from its model before it starts, reported and measured once it runs.

The swap policy's memory budget counts what each instance holds, or would
hold if started:

- while it runs: the larger of what its process tree measures (PSS, else RSS)
  and what the backend reported allocating at start (llama-server's buffer
  sizes), else the estimate: weights it has not touched yet are not
  resident, but will be;
- while it starts: the larger of the measurement and what it would hold;
- otherwise: what it measured when it last ran, else the estimate from its
  model's files (a GGUF header, or a model dir's config and weights).

A change of the model's files makes a new estimate and forgets the old
measurement, which was of another model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from llamactl.backends import Backend, BackendOptions
from llamactl.instance.memory_probe import measure_process_tree
from llamactl.models.model_memory import ModelProfile, profile_model

MEASURE_INTERVAL = 2.0
"""Seconds a measurement is reused: the scheduler asks on every pass, and psutil reads /proc."""
START_MARKER = "=== llamactl: starting: "
"""The log line the process module writes before each start (``InstanceLog.write_marker``)."""


class MemoryFigures(msgspec.Struct, frozen=True, omit_defaults=True):
    """An instance's memory as the API shows it, in bytes; a figure not known is left out."""

    estimated_bytes: int | None = None
    """From the model's files and the options, before the start."""
    reported_bytes: int | None = None
    """What the backend said it allocated while starting, with the estimate's allowance for the rest."""
    measured_bytes: int | None = None
    """What its processes hold now (PSS, else RSS), or held when it last ran."""


class InstanceMemory:
    """The figures of one instance with one set of options; touched only on the event loop."""

    def __init__(self, backend: Backend, options: BackendOptions) -> None:
        self._backend = backend
        self._inputs = backend.memory_inputs(options)
        self.profile: ModelProfile | None = None
        """What the model is (context, architecture, size) and its estimate; None until read."""
        self._estimated_for: tuple[int, int] | None = None
        self._reported: int | None = None
        self._measured: int | None = None
        self._measured_at = 0.0
        self._measured_pid: int | None = None

    async def estimate(self) -> None:
        """Estimate from the model's files, in a worker thread, unless they did not change since."""
        if self._inputs is None:
            return
        signature = await asyncio.to_thread(_file_signature, Path(self._inputs.model_path).expanduser())
        if signature is not None and signature == self._estimated_for:
            return
        self.profile = await asyncio.to_thread(profile_model, self._inputs)
        if self._estimated_for is not None:
            self._measured = self._reported = None  # of the files before
        self._estimated_for = signature

    def ready(self, log_lines: Sequence[str]) -> bool:
        """Read what the backend reported in the lines of this start; False while the report is missing."""
        starts = [index for index, line in enumerate(log_lines) if line.startswith(START_MARKER)]
        startup = log_lines[starts[-1] :] if starts else log_lines
        reported = self._backend.reported_memory_bytes(startup)
        # The report covers the backend's buffers; the process itself, and work buffers it does not
        # log, are what the estimate's extra allows for (bench/memory_estimate.py: within 2 %).
        estimate = self.profile.estimate if self.profile is not None else None
        unreported = estimate.extra_bytes if estimate is not None else 0
        self._reported = None if reported is None else reported + unreported
        return reported is not None

    def held_bytes(self, pid: int | None, running: bool) -> int:
        """What the instance holds (``pid`` is its process tree's root while it has one), else would hold."""
        measured = self._measure(pid) if pid is not None else None
        if running:
            return max(measured or 0, self._reported or self._estimated_bytes or 0)
        expected = self._measured or self._estimated_bytes or 0
        return max(measured or 0, expected)

    def figures(self, pid: int | None) -> MemoryFigures:
        measured = self._measure(pid) if pid is not None else self._measured
        return MemoryFigures(
            estimated_bytes=self._estimated_bytes, reported_bytes=self._reported, measured_bytes=measured
        )

    @property
    def _estimated_bytes(self) -> int | None:
        estimate = self.profile.estimate if self.profile is not None else None
        return estimate.total_bytes if estimate is not None else None

    def _measure(self, pid: int) -> int | None:
        now = time.monotonic()
        if pid != self._measured_pid or now - self._measured_at >= MEASURE_INTERVAL:
            measured = measure_process_tree(pid)
            self._measured_pid, self._measured_at = pid, now
            if measured.processes:
                # Kept after the stop: the best guess of what the next start will take.
                self._measured = measured.admission_bytes
        return self._measured if self._measured_pid == pid else None


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
