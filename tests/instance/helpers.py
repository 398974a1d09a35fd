"""Building blocks for lifecycle tests: a manager over the stand-in backend, and leak checks."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from llamactl.backends import BackendType
from llamactl.instance.launch import BackendSettings
from llamactl.instance.manager import InstanceManager, ManagerSettings
from llamactl.instance.options import InstanceOptions, instance_options_from_json
from llamactl.instance.scheduling import CapacityLimits
from llamactl.store import Store

STANDIN = Path(__file__).resolve().parents[1] / "standin_backend.py"


def settings(tmp_path: Path, **overrides: Any) -> ManagerSettings:
    standin = BackendSettings(command=sys.executable, args=[str(STANDIN)])
    base = ManagerSettings(
        port_range=(18000, 18999),
        max_instances=-1,
        limits=CapacityLimits(max_running=-1, group_limits={}, lru_eviction=True),
        default_auto_restart=True,
        default_max_restarts=3,
        default_restart_delay=0.05,
        default_on_demand_start=True,
        default_idle_timeout=30,
        start_timeout=10.0,
        idle_check_interval=3600.0,
        logs_dir=tmp_path / "logs",
        log_max_bytes=1_000_000,
        log_backups=2,
        backends={backend_type: standin for backend_type in BackendType},
        stop_grace=2.0,
        drain_timeout=2.0,
    )
    return msgspec.structs.replace(base, **overrides)


def manager(
    tmp_path: Path, clock: Any = None, read_system_memory: Any = None, **overrides: Any
) -> InstanceManager:
    store = Store(tmp_path / "llamactl.db")
    injected = {"clock": clock, "read_system_memory": read_system_memory}
    return InstanceManager(
        settings(tmp_path, **overrides), store, **{k: v for k, v in injected.items() if v is not None}
    )


@asynccontextmanager
async def opened_manager(
    tmp_path: Path, clock: Any = None, read_system_memory: Any = None, **overrides: Any
) -> AsyncIterator[InstanceManager]:
    """An opened manager over the stand-in, closed (every backend stopped) even when the test fails."""
    opened = manager(tmp_path, clock, read_system_memory, **overrides)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def standin_options(pids: Path, faults: str = "", **instance_options: Any) -> InstanceOptions:
    """A llama.cpp instance served by the stand-in, recording its PIDs in ``pids``."""
    return instance_options_from_json(
        {
            "backend_type": "llama_cpp",
            "backend_options": {"model": "/models/tiny.gguf", "alias": "tiny"},
            "environment": {"STANDIN_PIDS": str(pids), "STANDIN_FAULTS": faults},
            **instance_options,
        }
    )


def recorded_pids(pids: Path) -> list[int]:
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []


def alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_none_alive(pids: Path) -> None:
    left = [pid for pid in recorded_pids(pids) if alive(pid)]
    for pid in left:
        os.kill(pid, 9)  # so one failure does not leak into the next tests
    assert left == [], f"processes outlived the test: {left}"


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds; TimeoutError past ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
