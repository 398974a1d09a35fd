"""The GPUs' memory, where nvidia-ml-py (the ``pynvml`` module) is installed and finds NVIDIA GPUs.

Reported in ``GET /api/v1/system`` only: admission counts RAM, since GPU
admission could not be tested on these machines. Without the package, or
without a driver, there are no GPUs to report.
"""

from __future__ import annotations

import logging

import msgspec

logger = logging.getLogger(__name__)


class GpuMemory(msgspec.Struct, frozen=True):
    index: int
    name: str
    total_bytes: int
    used_bytes: int


def gpu_memory() -> list[GpuMemory]:
    try:
        import pynvml as nvml  # type: ignore[import-not-found]  # nvidia-ml-py: optional, GPU machines only
    except ImportError:
        return []
    try:
        nvml.nvmlInit()
    except Exception as error:  # no driver, or no GPU: NVMLError subclasses, nothing to report
        logger.debug("nvidia-ml-py finds no GPU: %s", error)
        return []
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuMemory(index, str(nvml.nvmlDeviceGetName(handle)), memory.total, memory.used))
        return gpus
    finally:
        nvml.nvmlShutdown()
