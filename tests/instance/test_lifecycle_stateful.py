"""Randomised lifecycle: create, start, stop, restart, update, delete, requests and crashes, in any order.

Real stand-in processes, a capacity of two for three instances (so requests
queue and swap), and after every step the invariants a user relies on: the
status the API shows matches the processes, no request ends in anything but
an answer or a shaped error, and nothing is left once llamactl shuts down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from llamactl.errors import LlamactlError
from llamactl.instance.manager import InstanceManager
from llamactl.instance.process import group_is_alive
from llamactl.instance.scheduling import CapacityLimits
from llamactl.instance.status import InstanceStatus
from tests.instance.helpers import alive, manager, recorded_pids, standin_options

NAMES = ("a", "b", "c")
SHAPED = {429, 503, 504}
TRANSIENT = {InstanceStatus.STARTING, InstanceStatus.SHUTTING_DOWN, InstanceStatus.RESTARTING}


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=os.environ["LIFECYCLE_TMP"]))
        limits = CapacityLimits(max_running=2, group_limits={}, lru_eviction=True)
        self.manager: InstanceManager = manager(
            self.root,
            limits=limits,
            fairness_window=0.3,
            start_timeout=5.0,
            drain_timeout=1.0,
            stop_grace=1.0,
        )
        self.run(self.manager.open())
        self.requests: list[asyncio.Task[int]] = []

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))

    def pids(self, name: str) -> Path:
        return self.root / f"{name}.pids"

    def exists(self, name: str) -> bool:
        return any(info.name == name for info in self.manager.list_instances())

    async def attempt(self, coroutine: Any) -> None:
        """An API call: it succeeds or fails with a shaped error, never anything else."""
        try:
            await coroutine
        except LlamactlError as error:
            assert error.status < 500 or error.status in SHAPED, error

    @rule(name=st.sampled_from(NAMES))
    def create(self, name: str) -> None:
        async def create() -> None:  # on the loop: the instance's supervisor is a task
            self.manager.create(name, standin_options(self.pids(name)))

        if not self.exists(name):
            self.run(create())

    @rule(name=st.sampled_from(NAMES))
    def start(self, name: str) -> None:
        if self.exists(name):
            self.run(self.attempt(self.manager.start(name)))

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        if self.exists(name):
            self.run(self.attempt(self.manager.stop(name)))

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        if self.exists(name):
            self.run(self.attempt(self.manager.restart(name)))

    @rule(name=st.sampled_from(NAMES), ctx=st.sampled_from([None, 64, 128]))
    def update(self, name: str, ctx: int | None) -> None:
        if not self.exists(name):
            return
        options = self.manager.get(name).options
        backend_options = msgspec.structs.replace(options.backend_options, ctx_size=ctx)
        changed = msgspec.structs.replace(options, backend_options=backend_options)
        self.run(self.attempt(self.manager.update(name, changed)))

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        if self.exists(name):
            self.run(self.attempt(self.manager.delete(name)))

    @rule(name=st.sampled_from(NAMES), streamed=st.booleans())
    def request(self, name: str, streamed: bool) -> None:
        """A request in the background: it may wait, be queued or swapped in while other steps run."""
        if self.exists(name):
            self.requests.append(self.loop.create_task(self.chat(name, streamed)))
            self.run(asyncio.sleep(0.05))

    async def chat(self, name: str, streamed: bool) -> int:
        try:
            async with (
                self.manager.lease(name) as leased,
                httpx.AsyncClient(base_url=leased.base_url) as client,
            ):
                body = {"model": "tiny", "stream": streamed, "chunks": 3, "chunk_delay": 0.05}
                response = await client.post("/v1/chat/completions", json=body, timeout=10)
                return response.status_code
        except LlamactlError as error:
            return error.status
        except httpx.TransportError:
            return 502  # the backend was killed under the request: the proxy answers 502

    @rule(name=st.sampled_from(NAMES))
    def crash(self, name: str) -> None:
        """SIGKILL a running backend's group (drawn from the names, not the running set, so runs replay)."""
        if not self.exists(name):
            return
        victim = self.manager.get(name)
        if victim.status is not InstanceStatus.RUNNING or victim.pid is None:
            return
        os.killpg(victim.pid, signal.SIGKILL)
        self.run(self.crash_noticed(name, victim.pid))

    async def crash_noticed(self, name: str, pid: int) -> None:
        async with asyncio.timeout(10):
            while self.exists(name):
                info = self.manager.get(name)
                if info.status is not InstanceStatus.RUNNING or info.pid != pid:
                    return
                await asyncio.sleep(0.02)

    @invariant()
    def statuses_match_processes(self) -> None:
        self.run(self.settle())
        for info in self.manager.list_instances():
            if info.status is InstanceStatus.RUNNING:
                assert info.pid is not None and group_is_alive(info.pid), info
            elif info.status in (InstanceStatus.STOPPED, InstanceStatus.FAILED):
                assert info.pid is None, info
                left = [pid for pid in recorded_pids(self.pids(info.name)) if alive(pid)]
                assert left == [], f"{info.name} is {info.status.value} but {left} live"

    @invariant()
    def no_request_ends_unshaped(self) -> None:
        for task in [t for t in self.requests if t.done()]:
            status = task.result()  # an unshaped failure raises here
            assert status in (200, 502) or status in SHAPED, status
            self.requests.remove(task)

    async def finish_requests(self) -> None:
        await asyncio.gather(*self.requests, return_exceptions=True)

    async def settle(self) -> None:
        """Let transitions in progress finish (bounded), so the statuses are ones to check."""
        async with asyncio.timeout(15):
            while any(i.status in TRANSIENT for i in self.manager.list_instances()):
                await asyncio.sleep(0.02)
            await self.manager.settled()

    def teardown(self) -> None:
        try:
            self.run(self.finish_requests())
            self.run(self.manager.close(timeout=20))
            for name in NAMES:
                left = [pid for pid in recorded_pids(self.pids(name)) if alive(pid)]
                assert left == [], f"left after shutdown: {left}"
        finally:
            self.loop.close()


@pytest.fixture(autouse=True)
def lifecycle_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_TMP", str(tmp_path))


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
