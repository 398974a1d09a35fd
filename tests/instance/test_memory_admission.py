"""Memory-aware admission: instances over the stand-in, with models whose GGUF headers give their size.

The stand-in does not load the model; llamactl reads its header (sparse files
of a few hundred MB declared, a few KB on disk) and estimates, as it would
for llama-server. The budget is set from those estimates.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from llamactl.backends import MemoryInputs
from llamactl.instance.errors import LimitReached
from llamactl.instance.manager import MemoryPressure
from llamactl.instance.memory_probe import SystemMemory, system_memory
from llamactl.instance.options import InstanceOptions, instance_options_from_json
from llamactl.instance.scheduling import CapacityLimits
from llamactl.instance.status import InstanceStatus
from llamactl.models.model_memory import estimate_model_memory
from tests.instance.helpers import assert_none_alive, eventually, opened_manager
from tests.instance.test_manager import chat, run
from tests.models.gguf_files import LlamaShape, write_llama_gguf

MIB = 1024 * 1024
SHAPE = LlamaShape(embedding=2048, feed_forward=5632, heads=16, kv_heads=8, layers=4, context=2048)


@pytest.fixture
def pids(tmp_path: Path) -> Any:
    path = tmp_path / "pids"
    yield path
    assert_none_alive(path)


def model(tmp_path: Path, name: str, layers: int = SHAPE.layers) -> tuple[Path, int]:
    """A sparse GGUF and what llamactl estimates for it at its own context."""
    path = write_llama_gguf(tmp_path / f"{name}.gguf", dataclasses.replace(SHAPE, layers=layers))
    estimate = estimate_model_memory(MemoryInputs(model_path=str(path), parallel=4))
    assert estimate is not None
    return path, estimate.total_bytes


def options(pids: Path, path: Path, **instance_options: Any) -> InstanceOptions:
    return instance_options_from_json(
        {
            "backend_type": "llama_cpp",
            "backend_options": {"model": str(path), "alias": "tiny"},
            "environment": {"STANDIN_PIDS": str(pids)},
            **instance_options,
        }
    )


def budget(bytes_: int) -> CapacityLimits:
    return CapacityLimits(max_running=-1, group_limits={}, lru_eviction=True, memory_budget=bytes_)


def test_a_start_that_does_not_fit_evicts_the_idle_instance_and_succeeds(tmp_path: Path, pids: Path) -> None:
    first, size = model(tmp_path, "first")
    second, _ = model(tmp_path, "second")

    async def scenario() -> None:
        async with opened_manager(tmp_path, limits=budget(size * 3 // 2)) as m:
            m.create("first", options(pids, first))
            m.create("second", options(pids, second))
            await m.start("first")
            assert m.get("first").memory.estimated_bytes == size
            assert (await chat(m, "second")).status_code == 200
            assert m.get("first").status is InstanceStatus.STOPPED
            assert m.get("second").status is InstanceStatus.RUNNING

    run(scenario)


def test_a_start_blocked_by_a_busy_instance_waits_for_its_request_then_succeeds(
    tmp_path: Path, pids: Path
) -> None:
    first, size = model(tmp_path, "first")
    second, _ = model(tmp_path, "second")

    async def scenario() -> None:
        async with opened_manager(tmp_path, limits=budget(size * 3 // 2), fairness_window=60.0) as m:
            m.create("first", options(pids, first))
            m.create("second", options(pids, second))
            await m.start("first")
            async with m.lease("first"):
                waiting = asyncio.create_task(chat(m, "second"))
                await asyncio.sleep(0.5)
                assert not waiting.done() and m.get("first").status is InstanceStatus.RUNNING
                assert m.get("second").status is InstanceStatus.STOPPED
            async with asyncio.timeout(15):
                assert (await waiting).status_code == 200
            assert m.get("first").status is InstanceStatus.STOPPED

    run(scenario)


def test_a_model_larger_than_the_budget_is_refused_with_the_figures_and_evicts_nothing(
    tmp_path: Path, pids: Path
) -> None:
    small, _ = model(tmp_path, "small", layers=1)
    large, large_size = model(tmp_path, "large", layers=8)

    async def scenario() -> None:
        async with opened_manager(tmp_path, limits=budget(large_size - 1)) as m:
            m.create("small", options(pids, small))
            m.create("large", options(pids, large))
            await m.start("small")
            with pytest.raises(LimitReached) as refused:
                await chat(m, "large")
            assert refused.value.status == 503
            assert str(refused.value).startswith(
                "large needs ~"
            ) and "more than the whole memory budget" in str(refused.value)
            assert m.get("small").status is InstanceStatus.RUNNING

    run(scenario)


def test_a_running_instance_shows_its_estimate_and_its_measured_memory(tmp_path: Path, pids: Path) -> None:
    path, size = model(tmp_path, "one")

    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("one", options(pids, path))
            await m.start("one")
            memory = m.get("one").memory
            assert memory.estimated_bytes == size
            # the stand-in and its watchdog: tens of MB of Python, whatever the model
            assert memory.measured_bytes is not None and 5_000_000 < memory.measured_bytes < 500_000_000

    run(scenario)


def test_a_memory_report_logged_after_readiness_still_counts(tmp_path: Path, pids: Path) -> None:
    """llama.cpp logs from a thread of its own: its buffer sizes can follow /health's first 200."""
    path, _ = model(tmp_path, "late")
    estimate = estimate_model_memory(MemoryInputs(model_path=str(path), parallel=4))
    assert estimate is not None
    late = options(pids, path)
    late.environment["STANDIN_FAULTS"] = "report_memory_after=0.5"

    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("late", late)
            await m.start("late")
            await eventually(lambda: m.get("late").memory.reported_bytes is not None, timeout=5)
            # the stand-in's 130 MiB of buffers, and the estimate's allowance for what is not logged
            assert m.get("late").memory.reported_bytes == 130 * MIB + estimate.extra_bytes

    run(scenario)


class FakeMemory:
    """A system memory reader whose use the test sets."""

    def __init__(self, used_percent: float) -> None:
        self.used_percent = used_percent

    def __call__(self) -> SystemMemory:
        total = 100 * GIB
        available = int(total * (100 - self.used_percent) / 100)
        return SystemMemory(total_bytes=total, available_bytes=available, used_percent=self.used_percent)


GIB = 1024**3


def test_memory_pressure_stops_idle_instances_least_recently_used_first_never_a_busy_one(
    tmp_path: Path, pids: Path
) -> None:
    path, _ = model(tmp_path, "m")
    now = [0.0]
    reader = FakeMemory(used_percent=50)

    async def scenario() -> None:
        pressure = MemoryPressure(threshold_percent=75, check_interval=3600)
        async with opened_manager(
            tmp_path, clock=lambda: now[0], read_system_memory=reader, memory_pressure=pressure
        ) as m:
            for name in ("old", "recent", "busy"):
                m.create(name, options(pids, path))
                await m.start(name)
                now[0] += 10
            assert await m.relieve_memory_pressure() == []  # 50 %: under the threshold
            reader.used_percent = 99.9  # the stand-ins free too little to get under it: all idle ones go
            async with m.lease("busy"):
                assert await m.relieve_memory_pressure() == ["old", "recent"]
            statuses = {i.name: i.status for i in m.list_instances()}
            assert statuses == {
                "old": InstanceStatus.STOPPED,
                "recent": InstanceStatus.STOPPED,
                "busy": InstanceStatus.RUNNING,
            }

    run(scenario)


def test_memory_pressure_reads_the_real_machine_and_a_threshold_below_its_use_stops_an_idle_instance(
    tmp_path: Path, pids: Path
) -> None:
    path, _ = model(tmp_path, "m")
    used = system_memory().used_percent
    assert used > 1  # a machine running this suite uses more than 1 % of its RAM

    async def scenario() -> None:
        pressure = MemoryPressure(threshold_percent=used / 2, check_interval=0.2)
        async with opened_manager(tmp_path, memory_pressure=pressure) as m:
            m.create("idle", options(pids, path))
            await m.start("idle")
            await eventually(lambda: m.get("idle").status is InstanceStatus.STOPPED, timeout=10)

    run(scenario)
