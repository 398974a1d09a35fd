"""The lifecycle manager with real processes: the stand-in backend, misbehaving on demand."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from llamactl.backends import LlamaCppOptions
from llamactl.instance.errors import (
    InstanceConflict,
    InstanceNotFound,
    InstanceStopped,
    LimitReached,
    NotStartable,
    StartFailed,
    StartTimedOut,
)
from llamactl.instance.manager import InstanceManager
from llamactl.instance.options import InstanceOptions
from llamactl.instance.process import group_is_alive, start_ticks
from llamactl.instance.scheduling import CapacityLimits
from llamactl.instance.status import InstanceStatus
from llamactl.store import ProcessRecord, Store, StoreError
from tests.instance.helpers import (
    alive,
    assert_none_alive,
    eventually,
    manager,
    opened_manager,
    recorded_pids,
    standin_options,
)
from tests.serve_process import free_port


@pytest.fixture
def pids(tmp_path: Path) -> Any:
    path = tmp_path / "pids"
    yield path
    assert_none_alive(path)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def chat(manager_: InstanceManager, name: str, **body: Any) -> httpx.Response:
    async with manager_.lease(name) as leased, httpx.AsyncClient(base_url=leased.base_url) as client:
        return await client.post("/v1/chat/completions", json={"model": "tiny", **body})


def test_start_means_ready_and_stop_leaves_nothing(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            created = m.create("alpha", standin_options(pids, "load_time=0.3"))
            assert created.status is InstanceStatus.STOPPED and created.running_since is None
            asked = time.time()
            started = await m.start("alpha")
            assert started.status is InstanceStatus.RUNNING
            # its uptime starts at readiness: after the 0.3 s of loading, before now
            assert started.running_since is not None and asked + 0.3 <= started.running_since <= time.time()
            # running means the readiness probe passed: the backend answers at once
            response = await chat(m, "alpha")
            assert response.json()["choices"][0]["message"]["content"] == "hello"
            [pid] = recorded_pids(pids)
            began = time.monotonic()
            stopped = await m.stop("alpha")
            assert time.monotonic() - began < 1.5  # SIGTERM honoured: well inside the 2 s grace
            assert stopped.status is InstanceStatus.STOPPED and stopped.port is None
            assert stopped.running_since is None
            assert not alive(pid)
            log = "\n".join(m.log_tail("alpha", 50))
            assert "starting:" in log and "exited with code" in log and "standin: listening" in log

    run(scenario)


def test_concurrent_on_demand_requests_start_the_backend_once(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, "load_time=0.3"))
            responses = await asyncio.gather(*(chat(m, "alpha") for _ in range(12)))
            assert [r.status_code for r in responses] == [200] * 12
            assert len(recorded_pids(pids)) == 1

    run(scenario)


def test_on_demand_start_can_be_turned_off(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, on_demand_start=False))
            with pytest.raises(NotStartable, match="on_demand_start is off"):
                await chat(m, "alpha")
            assert recorded_pids(pids) == []

    run(scenario)


def test_never_ready_times_out_and_the_half_started_process_is_stopped(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path, start_timeout=1.0) as m:
            m.create("alpha", standin_options(pids, "never_healthy"))
            with pytest.raises(StartTimedOut):
                await chat(m, "alpha")
            # The request's wait and the start share the deadline; the start gives up a moment later.
            await eventually(lambda: m.get("alpha").status is InstanceStatus.FAILED)
            assert "ready in time" in (m.get("alpha").last_error or "")
            assert not any(alive(pid) for pid in recorded_pids(pids))

    run(scenario)


def test_exit_during_start_fails_fast_with_the_last_log_lines(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path, start_timeout=30.0) as m:
            m.create("alpha", standin_options(pids, "exit_at_start=7"))
            began = time.monotonic()
            with pytest.raises(StartFailed, match="exited with code 7"):
                await m.start("alpha")
            assert time.monotonic() - began < 5  # not the 30 s deadline
            info = m.get("alpha")
            assert info.status is InstanceStatus.FAILED
            assert any("exiting at start" in line for line in info.last_log_lines)

    run(scenario)


def test_missing_executable_is_a_failed_start(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, command_override="/nonexistent/llama-server"))
            with pytest.raises(StartFailed, match="exited with code 127"):
                await m.start("alpha")
            last_lines = m.get("alpha").last_log_lines
            assert any("cannot start /nonexistent/llama-server" in line for line in last_lines)

    run(scenario)


def test_a_crash_restarts_with_backoff_then_fails_past_max_restarts(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, "exit_after=0.2", max_restarts=2, restart_delay=0))
            await m.start("alpha")
            deadline = time.monotonic() + 15
            while m.get("alpha").status is not InstanceStatus.FAILED and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            info = m.get("alpha")
            assert info.status is InstanceStatus.FAILED
            assert info.restarts == 2
            assert len(recorded_pids(pids)) == 3  # the first start and two restarts
            assert "exited unexpectedly with code 2" in (info.last_error or "")
            assert any("crashing as asked" in line for line in info.last_log_lines)

    run(scenario)


def test_a_slow_binding_backend_is_waited_for(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, "slow_bind=1.0"))
            began = time.monotonic()
            assert (await m.start("alpha")).status is InstanceStatus.RUNNING
            assert time.monotonic() - began >= 1.0

    run(scenario)


def test_a_port_taken_by_another_program_while_the_backend_loads_fails_the_start(
    tmp_path: Path, pids: Path
) -> None:
    port = free_port()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with opened_manager(tmp_path, port_range=(port, port)) as m:
            m.create("alpha", standin_options(pids, "slow_bind=2.0"))
            starting = asyncio.create_task(m.start("alpha"))
            await asyncio.sleep(0.5)  # the stand-in is spawned and has not bound yet
            server = await asyncio.start_server(impostor, "127.0.0.1", port)
            try:
                with pytest.raises(
                    StartFailed, match=f"port {port} of alpha answers, but from another program"
                ):
                    await starting
            finally:
                server.close()
                await server.wait_closed()

    run(scenario)


def test_the_restart_counter_resets_after_a_stable_period(tmp_path: Path, pids: Path) -> None:
    now = [0.0]

    async def scenario() -> None:
        async with opened_manager(tmp_path, clock=lambda: now[0], stable_period=60.0) as m:
            m.create("alpha", standin_options(pids, "exit_after=0.3", max_restarts=1, restart_delay=0))
            await m.start("alpha")
            now[0] += 61  # ready for a stable minute before each crash: never "failed"
            async with asyncio.timeout(30):
                for crash in range(3):
                    while m.get("alpha").restarts != 1 or m.get("alpha").status is not InstanceStatus.RUNNING:
                        assert m.get("alpha").status is not InstanceStatus.FAILED, f"failed at crash {crash}"
                        await asyncio.sleep(0.01)
                    now[0] += 61
                    while m.get("alpha").status is InstanceStatus.RUNNING:
                        await asyncio.sleep(0.01)  # the next crash
            assert len(recorded_pids(pids)) == 4

    run(scenario)


def test_a_stop_during_backoff_cancels_the_pending_restart(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, "exit_after=0.1", restart_delay=1))
            await m.start("alpha")
            await eventually(lambda: m.get("alpha").status is InstanceStatus.RESTARTING)
            assert (await m.stop("alpha")).status is InstanceStatus.STOPPED
            await asyncio.sleep(1.5)  # past the 1 s back-off: a restart still pending would have run
            assert m.get("alpha").status is InstanceStatus.STOPPED
            assert len(recorded_pids(pids)) == 1

    run(scenario)


def test_a_clean_stop_never_restarts(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids))
            await m.start("alpha")
            await m.stop("alpha")
            await asyncio.sleep(0.3)
            assert m.get("alpha").status is InstanceStatus.STOPPED
            assert len(recorded_pids(pids)) == 1

    run(scenario)


def test_sigterm_ignored_is_killed_after_the_grace_with_its_grandchild(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path, stop_grace=0.5) as m:
            m.create("alpha", standin_options(pids, "ignore_sigterm,fork_grandchild"))
            await m.start("alpha")
            backend, grandchild = recorded_pids(pids)
            began = time.monotonic()
            await m.stop("alpha")
            assert time.monotonic() - began < 3
            # SIGKILL is sent by then; on a loaded machine the kernel may take a moment to end them.
            await eventually(lambda: not alive(backend) and not alive(grandchild), timeout=1.0)

    run(scenario)


def test_a_flood_of_output_never_blocks_the_backend(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("alpha", standin_options(pids, "flood_logs=5000000"))
            assert (await m.start("alpha")).status is InstanceStatus.RUNNING
            assert (await chat(m, "alpha")).status_code == 200
            assert any("truncated" in line for line in m.log_tail("alpha", 20))

    run(scenario)


def test_idle_stop_counts_from_the_end_of_the_last_request(tmp_path: Path, pids: Path) -> None:
    now = [1000.0]

    async def scenario() -> None:
        async with opened_manager(tmp_path, clock=lambda: now[0]) as m:
            m.create("idle", standin_options(pids, idle_timeout=1))
            m.create("pinned", standin_options(pids, idle_timeout=0))
            await m.start("idle")
            await m.start("pinned")
            async with m.lease("idle"):
                now[0] += 3600  # a long request: never idle while it runs
                assert await m.stop_idle() == []
            now[0] += 59
            assert await m.stop_idle() == []
            now[0] += 1
            assert await m.stop_idle() == ["idle"]
            assert m.get("idle").status is InstanceStatus.STOPPED
            assert m.get("pinned").status is InstanceStatus.RUNNING

    run(scenario)


def test_lru_eviction_for_manual_and_on_demand_starts(tmp_path: Path, pids: Path) -> None:
    now = [0.0]

    async def scenario() -> None:
        limits = CapacityLimits(max_running=2, group_limits={}, lru_eviction=True)
        async with opened_manager(tmp_path, clock=lambda: now[0], limits=limits) as m:
            for name in ("a", "b", "c"):
                m.create(name, standin_options(pids))
            await m.start("a")
            now[0] = 10
            await m.start("b")
            now[0] = 20
            await chat(m, "a")  # a is now the most recently used
            now[0] = 30
            await chat(m, "c")  # on demand: evicts b
            assert {i.name: i.status for i in m.list_instances()} == {
                "a": InstanceStatus.RUNNING,
                "b": InstanceStatus.STOPPED,
                "c": InstanceStatus.RUNNING,
            }

    run(scenario)


def test_a_pinned_instance_is_never_evicted_and_a_busy_one_only_after_its_requests(
    tmp_path: Path, pids: Path
) -> None:
    async def scenario() -> None:
        limits = CapacityLimits(max_running=1, group_limits={}, lru_eviction=True)
        async with opened_manager(tmp_path, limits=limits, fairness_window=0.2) as m:
            m.create("pinned", standin_options(pids, idle_timeout=0))
            m.create("busy", standin_options(pids))
            m.create("other", standin_options(pids))
            await m.start("pinned")
            with pytest.raises(LimitReached, match="pinned"):
                await m.start("other")
            await m.stop("pinned")
            async with m.lease("busy") as leased:
                starting_other = asyncio.create_task(m.start("other"))
                await asyncio.sleep(0.6)  # three fairness windows: the swap waits for the request
                assert not starting_other.done() and m.get("busy").status is InstanceStatus.RUNNING
                async with httpx.AsyncClient(base_url=leased.base_url) as client:
                    answer = await client.post("/v1/chat/completions", json={"model": "tiny"})
                assert answer.status_code == 200  # the request in flight is served, not cut
                with pytest.raises(TimeoutError):  # and busy takes no new request meanwhile
                    async with asyncio.timeout(0.3), m.lease("busy"):
                        pass
            assert (await starting_other).status is InstanceStatus.RUNNING
            assert m.get("busy").status is InstanceStatus.STOPPED

    run(scenario)


def test_group_limit(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        limits = CapacityLimits(max_running=-1, group_limits={"gpu0": 1}, lru_eviction=True)
        async with opened_manager(tmp_path, limits=limits) as m:
            m.create("a", standin_options(pids, group="gpu0"))
            m.create("b", standin_options(pids, group="gpu0"))
            m.create("c", standin_options(pids))
            await m.start("a")
            await m.start("c")
            await m.start("b")
            assert [i.status for i in m.list_instances()] == [
                InstanceStatus.STOPPED,
                InstanceStatus.RUNNING,
                InstanceStatus.RUNNING,
            ]

    run(scenario)


def test_instances_survive_a_restart_of_llamactl_and_running_ones_start_again(
    tmp_path: Path, pids: Path
) -> None:
    async def first_life() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("runs", standin_options(pids))
            m.create("rests", standin_options(pids, idle_timeout=5))
            m.create("no-restart", standin_options(pids, auto_restart=False))
            await m.start("runs")
            await m.start("no-restart")
        assert not any(alive(pid) for pid in recorded_pids(pids))

    async def second_life() -> None:
        async with opened_manager(tmp_path) as m:
            assert [i.name for i in m.list_instances()] == ["runs", "rests", "no-restart"]
            assert m.get("rests").options.idle_timeout == 5
            deadline = time.monotonic() + 10
            while m.get("runs").status is not InstanceStatus.RUNNING and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert m.get("runs").status is InstanceStatus.RUNNING
            assert m.get("no-restart").status is InstanceStatus.STOPPED

    run(first_life)
    run(second_life)


def test_backends_die_with_llamactl_even_on_sigkill(tmp_path: Path, pids: Path) -> None:
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from tests.instance.helpers import manager, standin_options
async def main():
    m = manager(Path({str(tmp_path)!r}))
    await m.open()
    m.create("alpha", standin_options(Path({str(pids)!r}), "fork_grandchild"))
    await m.start("alpha")
    print("ready", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""
    llamactl = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert llamactl.stdout is not None and llamactl.stdout.readline() == "ready\n"
    backend_pids = recorded_pids(pids)
    assert len(backend_pids) == 2 and all(alive(pid) for pid in backend_pids)
    llamactl.kill()
    llamactl.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in backend_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in backend_pids)


def test_a_new_llamactl_kills_process_groups_its_predecessor_left(tmp_path: Path) -> None:
    leftover = subprocess.Popen(["sleep", "600"], start_new_session=True)
    ticks = start_ticks(leftover.pid)
    assert ticks is not None
    store = Store(tmp_path / "llamactl.db")
    store.record_process(ProcessRecord("alpha", leftover.pid, ticks))
    store.close()

    async def scenario() -> None:
        async with opened_manager(tmp_path):
            pass  # opening is what cleans up the ledger

    run(scenario)
    assert leftover.wait(timeout=5) == -signal.SIGKILL
    assert not group_is_alive(leftover.pid)


def test_a_recycled_pid_in_the_ledger_is_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        store = Store(tmp_path / "llamactl.db")
        store.record_process(ProcessRecord("alpha", bystander.pid, 1))  # another start time
        store.close()

        async def scenario() -> None:
            async with opened_manager(tmp_path):
                pass  # opening is what reads the ledger

        run(scenario)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path, max_instances=2) as m:
            m.create("alpha", standin_options(pids))
            with pytest.raises(InstanceConflict, match="already exists"):
                m.create("alpha", standin_options(pids))
            with pytest.raises(Exception, match="invalid instance name"):
                m.create("no/slashes", standin_options(pids))
            explicit = msgspec.structs.replace(
                standin_options(pids), backend_options=LlamaCppOptions(model="m", port=9)
            )
            with pytest.raises(InstanceConflict, match=r"outside instances\.port_range"):
                m.create("beta", explicit)
            m.create(
                "beta",
                msgspec.structs.replace(explicit, backend_options=LlamaCppOptions(model="m", port=18500)),
            )
            with pytest.raises(InstanceConflict, match="max_instances"):
                m.create("gamma", standin_options(pids))
            await m.start("alpha")
            with pytest.raises(InstanceConflict, match="stop it before deleting"):
                await m.delete("alpha")
            with pytest.raises(InstanceNotFound):
                await m.start("nope")
            assert [i.name for i in m.list_instances()] == ["alpha", "beta"]
            assert m.get("alpha").status is InstanceStatus.RUNNING

    run(scenario)


def test_duplicate_explicit_ports_and_a_port_taken_by_another_program(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            with_port = msgspec.structs.replace(
                standin_options(pids), backend_options=LlamaCppOptions(model="m", port=18600)
            )
            m.create("a", with_port)
            with pytest.raises(InstanceConflict, match="already used by another instance"):
                m.create("b", with_port)
            with socket.socket() as squatter:
                squatter.bind(("127.0.0.1", 18600))
                squatter.listen()
                with pytest.raises(StartFailed, match="in use by another program"):
                    await m.start("a")
            assert (await m.start("a")).port == 18600

    run(scenario)


def test_a_corrupt_database_is_reported_not_replaced(tmp_path: Path) -> None:
    database = tmp_path / "llamactl.db"
    database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"llamactl\.db"):
        Store(database)
    assert database.read_bytes() == b"this is not a database" * 100


def test_update_restarts_a_running_instance_only_when_its_command_changes(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            options = standin_options(pids)
            m.create("alpha", options)
            await m.start("alpha")
            await m.update("alpha", msgspec.structs.replace(options, idle_timeout=7))
            assert len(recorded_pids(pids)) == 1
            changed: InstanceOptions = msgspec.structs.replace(
                options, backend_options=msgspec.structs.replace(options.backend_options, ctx_size=64)
            )
            info = await m.update("alpha", changed)
            assert info.status is InstanceStatus.RUNNING
            assert len(recorded_pids(pids)) == 2
            assert not alive(recorded_pids(pids)[0])

    run(scenario)


def test_declared_instances_cannot_be_edited_through_the_api(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("decl", standin_options(pids), declared=True)
            with pytest.raises(InstanceConflict, match="declared in the config file"):
                await m.update("decl", standin_options(pids))
            with pytest.raises(InstanceConflict, match="declared in the config file"):
                await m.delete("decl")

    run(scenario)


def test_shutdown_stops_every_backend(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        m = manager(tmp_path)
        await m.open()
        for name in ("a", "b", "c"):
            m.create(name, standin_options(pids))
            await m.start(name)
        began = time.monotonic()
        await m.close(timeout=10)
        assert time.monotonic() - began < 5
        assert len(recorded_pids(pids)) == 3
        assert not any(alive(pid) for pid in recorded_pids(pids))

    run(scenario)


def test_a_reload_with_a_port_clash_changes_nothing(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create(
                "api", msgspec.structs.replace(standin_options(pids), backend_options=port_options(18010))
            )
            declared = {
                "first": standin_options(pids),  # fine on its own, and checked before anything changes
                "second": msgspec.structs.replace(standin_options(pids), backend_options=port_options(18010)),
            }
            with pytest.raises(InstanceConflict, match="port 18010 is already used by api"):
                await m.reconcile_declared(declared)
            assert [i.name for i in m.list_instances()] == ["api"]

    run(scenario)


def test_concurrent_reloads_run_one_at_a_time(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            await m.reconcile_declared({"declared": standin_options(pids)})
            await m.start("declared")
            # Two reloads that both remove the running instance: the second finds nothing to remove.
            first, second = await asyncio.gather(m.reconcile_declared({}), m.reconcile_declared({}))
            assert sorted(first.removed + second.removed) == ["declared"]
            assert m.list_instances() == []

    run(scenario)


def port_options(port: int) -> LlamaCppOptions:
    return LlamaCppOptions(model="/models/tiny.gguf", alias="tiny", port=port)


def test_a_request_arriving_as_an_idle_stop_is_decided_is_served_not_cut(tmp_path: Path, pids: Path) -> None:
    now = [0.0]

    async def scenario() -> None:
        async with opened_manager(tmp_path, clock=lambda: now[0], drain_timeout=0.5) as m:
            m.create("alpha", standin_options(pids, idle_timeout=1))
            await m.start("alpha")
            now[0] = 120  # idle for two minutes
            stopping = asyncio.create_task(m.stop_idle())
            # Sent in the same loop turn as the decision: it must not be cut by the drain timeout.
            streaming = asyncio.create_task(chat(m, "alpha", stream=True, chunks=10, chunk_delay=0.1))
            assert await stopping == ["alpha"]
            answer = await streaming
            assert answer.status_code == 200 and answer.text.rstrip().endswith("data: [DONE]")

    run(scenario)


def test_an_api_stop_of_a_stopped_instance_answers_the_requests_waiting_for_room(
    tmp_path: Path, pids: Path
) -> None:
    async def scenario() -> None:
        limits = CapacityLimits(max_running=1, group_limits={}, lru_eviction=True)
        async with opened_manager(tmp_path, limits=limits) as m:
            m.create("busy", standin_options(pids))
            m.create("waiting", standin_options(pids))
            await m.start("busy")
            async with m.lease("busy"):  # in flight: the swap waits for its fairness window
                queued = asyncio.create_task(chat(m, "waiting"))
                await eventually(lambda: m.get("waiting").queued == 1)
                await m.stop("waiting")
                with pytest.raises(InstanceStopped):
                    async with asyncio.timeout(2):
                        await queued

    run(scenario)


def test_an_instance_that_failed_is_not_started_again_at_the_next_boot(tmp_path: Path, pids: Path) -> None:
    async def first_life() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("crashy", standin_options(pids, "exit_after=0.2", max_restarts=0))
            await m.start("crashy")
            await eventually(lambda: m.get("crashy").status is InstanceStatus.FAILED)

    async def second_life() -> None:
        async with opened_manager(tmp_path) as m:
            await asyncio.sleep(0.5)
            assert m.get("crashy").status is InstanceStatus.STOPPED

    run(first_life)
    run(second_life)
    assert len(recorded_pids(pids)) == 1


def test_requests_that_gave_up_are_owed_nothing_and_do_not_block_a_swap(tmp_path: Path, pids: Path) -> None:
    async def scenario() -> None:
        limits = CapacityLimits(max_running=1, group_limits={}, lru_eviction=True)
        async with opened_manager(tmp_path, limits=limits, fairness_window=0.3) as m:
            m.create("a", standin_options(pids, "load_time=0.5", max_concurrent=1))
            m.create("b", standin_options(pids))
            waiting = [
                asyncio.create_task(chat(m, "a", stream=True, chunks=5, chunk_delay=0.1)) for _ in range(3)
            ]
            await eventually(lambda: m.get("a").in_flight == 1 and m.get("a").queued == 2)
            for task in waiting[1:]:
                task.cancel()  # two clients give up, owed a place since a became ready
            assert (await waiting[0]).status_code == 200
            async with asyncio.timeout(5):  # not the 10 s start timeout: a is swapped out for b
                assert (await chat(m, "b")).status_code == 200

    run(scenario)


def test_a_request_queued_for_an_instance_that_can_no_longer_start_is_answered_at_once(
    tmp_path: Path, pids: Path
) -> None:
    async def scenario() -> None:
        limits = CapacityLimits(max_running=1, group_limits={}, lru_eviction=True)
        async with opened_manager(tmp_path, limits=limits, fairness_window=0.2) as m:
            m.create("manual", standin_options(pids, on_demand_start=False))
            m.create("other", standin_options(pids))
            await m.start("manual")
            async with m.lease("manual"):
                for_other = asyncio.create_task(chat(m, "other"))
                await eventually(lambda: m.get("other").queued == 1)
                await asyncio.sleep(0.4)  # past the window: manual takes no new requests
                for_manual = asyncio.create_task(chat(m, "manual"))
                await eventually(lambda: m.get("manual").queued == 1)
            # manual is swapped out for other; nothing will start it for the request that waits
            with pytest.raises(NotStartable, match="on_demand_start is off"):
                async with asyncio.timeout(3):
                    await for_manual
            assert (await for_other).status_code == 200

    run(scenario)
