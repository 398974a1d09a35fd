"""The InstanceManager: the registry of instances, their request queues and the swap scheduler.

Each instance has a supervisor (``supervisor.py``) that owns its lifecycle
(``lifecycle.py``: every status change goes through the pure transition
table). The manager owns what spans instances: definitions (create, update,
delete, reconcile), the request queue in front of every instance, and the
scheduling decisions (``scheduling.py``: admit, start, swap out, refuse),
made in one synchronous ``_schedule`` pass on the event loop after anything
that can change them, so no decision is split by an ``await``. See design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path

import msgspec

from llamactl.backends import BackendType, get_backend
from llamactl.errors import echo
from llamactl.instance.errors import (
    InstanceConflict,
    InstanceError,
    InstanceNotFound,
    InstanceStopped,
    LimitReached,
    NotStartable,
    QueueFull,
    StartFailed,
    StartTimedOut,
)
from llamactl.instance.events import EventBus, EventKind
from llamactl.instance.launch import BackendSettings, LaunchCommand, launch_command
from llamactl.instance.lifecycle import (
    BackoffElapsed,
    CrashPolicy,
    Drained,
    Event,
    Exited,
    Lifecycle,
    Phase,
    Ready,
    Restart,
    Start,
    Stop,
    StopReason,
    Then,
)
from llamactl.instance.lifecycle import StartFailed as StartFailedEvent
from llamactl.instance.log_file import RING_LINES, InstanceLog
from llamactl.instance.memory import InstanceMemory, MemoryFigures
from llamactl.instance.memory_probe import SystemMemory, system_memory
from llamactl.instance.options import InstanceOptions, check_instance_name
from llamactl.instance.ports import PortAllocator
from llamactl.instance.process import kill_leftover_group
from llamactl.instance.provenance import ExecutableVersions
from llamactl.instance.scheduling import (
    Candidate,
    CapacityLimits,
    IdleCandidate,
    Occupancy,
    PressureCandidate,
    idle_instances,
    plan_swaps,
    pressure_victims,
)
from llamactl.instance.status import InstanceStatus
from llamactl.instance.supervisor import ProcessSettings, Supervisor, SupervisorHooks
from llamactl.models.model_memory import ModelProfile
from llamactl.private_files import make_private_dirs
from llamactl.store import InstanceRecord, Store

logger = logging.getLogger("llamactl.instance")

PROGRESS_INTERVAL = 3.0
"""Seconds between progress reports to a waiting request (SSE keep-alive comments)."""
MEMORY_REPORT_WAIT = 10.0
"""How long after readiness the backend's memory report may still arrive in its log."""
MEMORY_REPORT_POLL = 0.2


class ManagerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the manager takes from the config (see ``llamactl.config``)."""

    port_range: tuple[int, int]
    max_instances: int
    limits: CapacityLimits
    default_auto_restart: bool
    default_max_restarts: int
    default_restart_delay: float
    default_on_demand_start: bool
    default_idle_timeout: int
    start_timeout: float
    """Seconds a start may take, and a request may wait in a queue (``on_demand_start_timeout``)."""
    idle_check_interval: float
    logs_dir: Path
    log_max_bytes: int
    log_backups: int
    backends: dict[BackendType, BackendSettings]
    host: str = "127.0.0.1"
    max_queue: int = 256
    """Requests waiting over all instances; past it, 429."""
    fairness_window: float = 10.0
    """Seconds a request waits for a swap before the running instance stops taking new requests."""
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    drain_timeout: float = 30.0
    """Seconds a stop (not a swap) waits for requests in flight."""
    stable_period: float = 60.0
    """Seconds ready after which a crash counts as the first again."""
    memory_pressure: MemoryPressure | None = None


class MemoryPressure(msgspec.Struct, frozen=True):
    threshold_percent: float
    """Of the machine's RAM in use, past which idle instances are stopped."""
    check_interval: float
    """Seconds."""


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An instance as the API shows it."""

    id: int
    name: str
    status: InstanceStatus
    created: int
    options: InstanceOptions
    served_model: str | None = None
    """The ``model`` name the backend expects in OpenAI requests."""
    port: int | None = None
    pid: int | None = None
    """The backend's process group (its watchdog's PID) while it runs."""
    declared: bool = False
    """Declared in the config file's ``models:``; edit it there."""
    restarts: int = 0
    last_error: str | None = None
    last_log_lines: list[str] = []
    queued: int = 0
    """Requests waiting for this instance."""
    in_flight: int = 0
    memory: MemoryFigures = MemoryFigures()
    model: ModelProfile | None = None
    """What its model's files say: context, architecture, quantization, size, the estimate's parts."""
    served_context: int | None = None
    """The context the running backend says it has (llama-server's /props, vLLM's max_model_len)."""
    running_since: float | None = None
    """Unix seconds when the backend became ready, while it runs (its uptime's start)."""


class Leased(msgspec.Struct, frozen=True):
    """A ready instance held for one request, and where its backend listens."""

    info: InstanceInfo
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class WaitProgress(msgspec.Struct, frozen=True):
    """What a request waiting for its instance is waiting for, reported every few seconds."""

    instance: str
    waited: float
    """Seconds since the request arrived."""
    message: str
    """For people: ``starting qwen (12 s)``, ``queued for qwen behind 3 requests (4 s)``."""


ProgressCallback = Callable[[WaitProgress], Awaitable[None]]


class ReconcileReport(msgspec.Struct):
    created: list[str] = []
    updated: list[str] = []
    removed: list[str] = []


class _Waiter:
    """A request (or an API start) waiting for its instance."""

    def __init__(self, arrived: float, lease: bool, manual: bool) -> None:
        self.arrived = arrived
        self.lease = lease
        """Takes a place in flight once admitted; an API start only waits for readiness."""
        self.manual = manual
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Instance:
    """One instance: its definition, its supervisor, its queue. Touched only on the event loop."""

    def __init__(self, record: InstanceRecord, log: InstanceLog, now: float) -> None:
        self.id = record.id
        self.name = record.name
        self.created = record.created
        self.options = record.options
        self.served_model = served_model(record.options)
        self.memory = memory_of(record.options)
        self.declared = record.declared
        self.was_running = record.was_running
        self.log = log
        self.claimed_port = claimed_port(record.options)
        self.supervisor: Supervisor
        self.queue: deque[_Waiter] = deque()
        self.in_flight = 0
        self.owed = 0
        """Requests that waited for the current start and are not yet admitted."""
        self.closed_for: str | None = None
        """Taking no new requests: draining to be swapped out for this instance."""
        self.last_used = now
        self.stop_waiters: list[asyncio.Future[None]] = []
        self.published_queue = 0
        self.waiting_for: str | None = None
        """Why its queue cannot be served yet, with the figures (the swap policy's words)."""
        self.swap_began: float | None = None
        """When the swap policy first stopped another instance to make room for this one."""

    @property
    def phase(self) -> Phase:
        return self.supervisor.state.phase

    def record(self) -> InstanceRecord:
        return InstanceRecord(self.name, self.created, self.options, self.was_running, self.declared, self.id)


class InstanceManager:
    def __init__(
        self,
        settings: ManagerSettings,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        read_system_memory: Callable[[], SystemMemory] = system_memory,
    ) -> None:
        """``clock`` drives the idle, fairness and least-recently-used decisions; deadlines use real time.

        ``read_system_memory`` is what the memory-pressure rule reads (tests pass their own).
        """
        self.settings = settings
        self._read_system_memory = read_system_memory
        self.events = EventBus()
        self._store = store
        self._clock = clock
        self._ports = PortAllocator(*settings.port_range)
        make_private_dirs(settings.logs_dir)
        self._instances: dict[str, _Instance] = {}
        self._process_settings = ProcessSettings(
            host=settings.host,
            stop_grace=settings.stop_grace,
            start_timeout=settings.start_timeout,
            drain_timeout=settings.drain_timeout,
            stable_period=settings.stable_period,
        )
        self._idle_task: asyncio.Task[None] | None = None
        self._pressure_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        """Model files being read (``_read_model_soon``), starts being recorded (``_record_start_soon``)."""
        self.versions = ExecutableVersions()
        """Each backend executable's ``--version``, asked once: for start records and exports alike."""
        self._schedule_pending = False
        self._wake: asyncio.TimerHandle | None = None
        self._closing = False
        self._reconciling = asyncio.Lock()

    # ------------------------------------------------------------------ boot and shutdown

    async def open(self) -> None:
        """Clean up what a previous llamactl left running, load instances, start those that ran."""
        for leftover in self._store.load_processes():
            kill_leftover_group(leftover.pgid, leftover.start_ticks)
            self._store.forget_process(leftover.name)
        for record in self._store.load_instances():
            self._add(record)
        booting = [i for i in self._instances.values() if i.was_running and self._policy(i).auto_restart]
        await asyncio.gather(*(instance.memory.estimate() for instance in booting))
        for instance in booting:
            waiter = _Waiter(self._clock(), lease=False, manual=False)
            waiter.admitted.add_done_callback(_log_boot_start(instance.name))
            self._enqueue(instance, waiter)
        self._idle_task = asyncio.create_task(self._idle_loop(), name="idle stop")
        if self.settings.memory_pressure is not None:
            self._pressure_task = asyncio.create_task(
                self._pressure_loop(self.settings.memory_pressure), name="memory pressure"
            )

    def end_streams(self) -> None:
        """llamactl is stopping: the events stream and the log follows end, so no client holds
        the shutdown for its whole grace; requests in flight keep it."""
        self.events.end_subscribers()
        for instance in self._instances.values():
            instance.log.end_follows()

    async def close(self, timeout: float | None = None) -> None:
        """Stop every backend (bounded), keeping which ones ran for the next boot."""
        self._closing = True
        for task in (self._idle_task, self._pressure_task, *self._background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.versions.close()
        if self._wake is not None:
            self._wake.cancel()
        for instance in self._instances.values():
            self._fail_waiters(instance, NotStartable("llamactl is shutting down"))
        stops = [self._stop(instance, StopReason.SHUTDOWN) for instance in self._instances.values()]
        if stops:
            # Past the timeout llamactl exits anyway, and the watchdogs take down what is left.
            with contextlib.suppress(TimeoutError):
                results = await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), timeout)
                for result in results:
                    if isinstance(result, BaseException):
                        logger.error("stopping a backend failed", exc_info=result)
        for instance in self._instances.values():
            await instance.supervisor.close()
        self._store.close()

    # ------------------------------------------------------------------ definitions

    def list_instances(self) -> list[InstanceInfo]:
        return [self._info(instance) for instance in self._instances.values()]

    def get(self, name: str) -> InstanceInfo:
        return self._info(self._find(name))

    def create(self, name: str, options: InstanceOptions, declared: bool = False) -> InstanceInfo:
        check_instance_name(name)
        if name in self._instances:
            raise InstanceConflict(f"an instance named {name!r} already exists", field="name")
        limit = self.settings.max_instances
        if 0 <= limit <= len(self._instances):
            raise InstanceConflict(f"instances.max_instances ({limit}) reached", field="name")
        record = InstanceRecord(name=name, created=time.time(), options=options, declared=declared)
        instance = self._add(record)
        instance.id = self._store.save_instance(record)
        status = instance.supervisor.state.status.value
        self.events.publish(EventKind.STATUS, name, status=status, reason="created")
        return self._info(instance)

    async def update(self, name: str, options: InstanceOptions, from_config: bool = False) -> InstanceInfo:
        """Replace the options; a running instance restarts (on its new port too) if its command changed."""
        instance = self._find(name)
        if instance.declared and not from_config:
            raise InstanceConflict(
                f"{name} is declared in the config file (models.{name}); edit it there and reload",
                field="name",
            )
        new_port = claimed_port(options)
        if new_port != instance.claimed_port:
            if new_port is not None:
                self._ports.claim(new_port, name)
            old_port, instance.claimed_port = instance.claimed_port, new_port
            # A port the backend still listens on stays reserved until the backend is gone.
            if old_port is not None and old_port != instance.supervisor.port:
                self._ports.release(old_port)
        changed = self._launch_for(instance, options) != self._launch_for(instance, instance.options)
        instance.options = options
        instance.served_model = served_model(options)
        instance.memory = memory_of(options)
        self._read_model_soon(instance)
        self._store.save_instance(instance.record())
        if changed and instance.phase in (Phase.STARTING, Phase.RUNNING, Phase.DRAINING):
            return await self.restart(name)
        return self._info(instance)

    async def delete(self, name: str, from_config: bool = False) -> None:
        instance = self._find(name)
        if instance.declared and not from_config:
            raise InstanceConflict(
                f"{name} is declared in the config file (models.{name}); remove it there and reload",
                field="name",
            )
        if from_config:
            await self._stop(instance, StopReason.RELOAD)
        elif instance.phase not in (Phase.STOPPED, Phase.FAILED):
            raise InstanceConflict(
                f"{name} is {instance.supervisor.state.status.value}; stop it before deleting it",
                field="name",
            )
        self._fail_waiters(instance, InstanceStopped(f"{name} was deleted"))
        if instance.claimed_port is not None:
            self._ports.release(instance.claimed_port)
        await instance.supervisor.close()
        instance.log.close()
        del self._instances[name]
        self._store.delete_instance(name)
        self.events.publish(EventKind.STATUS, name, status="deleted", previous=instance.phase.value)
        self._schedule()

    async def reconcile_declared(self, declared: dict[str, InstanceOptions]) -> ReconcileReport:
        """Make the declared instances match the config file's ``models:``.

        Creates what is new, updates what changed (a running instance restarts
        only if its command changed), stops and removes what the file no longer
        declares, and never touches instances created through the API. Every
        conflict (names, ports, max_instances) is found before anything changes,
        and reconciles run one at a time (a SIGHUP during an API reload waits).
        """
        async with self._reconciling:
            return await self._reconcile(declared)

    async def _reconcile(self, declared: dict[str, InstanceOptions]) -> ReconcileReport:
        self._check_declarations(declared)
        # Ports that move between declared instances (a and b swap theirs): free them all first.
        for name, options in declared.items():
            instance = self._instances.get(name)
            if (
                instance is not None
                and instance.claimed_port not in (None, claimed_port(options))
                and instance.claimed_port != instance.supervisor.port
            ):
                self._ports.release(instance.claimed_port)
        report = ReconcileReport()
        for name, options in declared.items():
            if name not in self._instances:
                self.create(name, options, declared=True)
                report.created.append(name)
            elif self._instances[name].options != options:
                await self.update(name, options, from_config=True)
                report.updated.append(name)
        for name in [n for n, i in self._instances.items() if i.declared and n not in declared]:
            await self.delete(name, from_config=True)
            report.removed.append(name)
        return report

    def _check_declarations(self, declared: dict[str, InstanceOptions]) -> None:
        clashes = [n for n in declared if n in self._instances and not self._instances[n].declared]
        if clashes:
            raise InstanceConflict(
                f"models.{clashes[0]}: an instance of that name was created through the API; "
                "rename one of them",
                field="name",
            )
        kept = [i for i in self._instances.values() if not i.declared or i.name in declared]
        limit = self.settings.max_instances
        total = len(kept) + len([n for n in declared if n not in self._instances])
        if 0 <= limit < total:
            raise InstanceConflict(f"instances.max_instances ({limit}) is too low for the declared instances")
        # The ports every instance will claim once the file is applied, API instances first.
        owners: dict[int, str] = {}
        claims = [(i.name, i.claimed_port) for i in self._instances.values() if not i.declared]
        claims += [(name, claimed_port(options)) for name, options in declared.items()]
        low, high = self.settings.port_range
        for name, port in claims:
            if port is None:
                continue
            if not low <= port <= high:
                raise InstanceConflict(
                    f"models.{name}: port {port} is outside instances.port_range [{low}-{high}]", field="port"
                )
            if port in owners:
                raise InstanceConflict(
                    f"models.{name}: port {port} is already used by {owners[port]}", field="port"
                )
            owners[port] = name

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str) -> InstanceInfo:
        """Start (making room as the swap policy allows) and wait until ready or failed."""
        instance = self._find(name)
        if instance.phase in (Phase.BACKOFF, Phase.DRAINING, Phase.STOPPING):
            # It holds its place already: start now (skipping a back-off), or again once stopped.
            instance.supervisor.post(Start(manual=True))
        if instance.phase is not Phase.RUNNING:
            await instance.memory.estimate()  # the swap policy weighs it before the start
            waiter = _Waiter(self._clock(), lease=False, manual=True)
            self._enqueue(instance, waiter)
            await self._await_admission(instance, waiter, None)
        return self._info(instance)

    async def stop(self, name: str) -> InstanceInfo:
        instance = self._find(name)
        await self._stop(instance, StopReason.API)
        return self._info(instance)

    async def restart(self, name: str) -> InstanceInfo:
        """Stop and start again; requests waiting across a restart are served once it is ready."""
        instance = self._find(name)
        if instance.phase in (Phase.STOPPED, Phase.FAILED, Phase.BACKOFF):
            return await self.start(name)
        waiter = _Waiter(self._clock(), lease=False, manual=True)
        self._enqueue(instance, waiter)
        instance.supervisor.post(Restart())
        await self._await_admission(instance, waiter, None)
        return self._info(instance)

    @contextlib.asynccontextmanager
    async def lease(
        self, name: str, on_demand: bool = True, progress: ProgressCallback | None = None
    ) -> AsyncIterator[Leased]:
        """Hold a ready instance for one request: started on demand, never stopped while held.

        A request that cannot be served now waits in the instance's queue (FIFO)
        for a start, a swap or a free place under ``max_concurrent``, at most
        ``on_demand_start_timeout`` seconds. ``on_demand=False`` never starts
        the instance (the instance proxy). ``progress`` is called every few
        seconds while the request waits. The idle clock restarts when the last
        lease is released.
        """
        instance = self._find(name)
        if self._closing:
            raise NotStartable("llamactl is shutting down")
        if not self._can_admit(instance) or instance.queue:
            if not on_demand and instance.phase is not Phase.RUNNING:
                raise NotStartable(f"{name} is {instance.supervisor.state.status.value}; start it first")
            if not self._can_start(instance):
                raise NotStartable(
                    f"{name} is {instance.supervisor.state.status.value} and on_demand_start is off"
                )
            if instance.phase in (Phase.STOPPED, Phase.FAILED):
                await instance.memory.estimate()  # the swap policy weighs it before the start
            waiter = _Waiter(self._clock(), lease=True, manual=False)
            self._enqueue(instance, waiter)
            await self._await_admission(instance, waiter, progress)
        else:
            instance.in_flight += 1  # checked and taken with no await in between
        try:
            assert instance.supervisor.port is not None  # running, and held from here on
            yield Leased(self._info(instance), self.settings.host, instance.supervisor.port)
        finally:
            self._release_lease(instance)

    def log_tail(self, name: str, lines: int) -> list[str]:
        return self._find(name).log.tail(lines)

    def follow_log(self, name: str) -> AsyncIterator[str]:
        return self._find(name).log.follow()

    async def stop_idle(self) -> list[str]:
        """Stop every running instance past its idle timeout; returns their names."""
        candidates = [
            IdleCandidate(
                i.name, self._idle_timeout(i), bool(i.in_flight or i.queue or i.closed_for), i.last_used
            )
            for i in self._instances.values()
            if i.phase is Phase.RUNNING
        ]
        names = idle_instances(candidates, self._clock())
        # Posted in the same step as the decision: a request arriving now queues for the restart.
        stopped = [self._post_stop(self._instances[n], StopReason.IDLE) for n in names]
        await asyncio.gather(*stopped)
        return names

    async def relieve_memory_pressure(self) -> list[str]:
        """Past the pressure threshold, stop idle instances (LRU) until under it; returns their names."""
        pressure = self.settings.memory_pressure
        assert pressure is not None
        memory = self._read_system_memory()
        used = memory.total_bytes - memory.available_bytes
        candidates = [
            PressureCandidate(
                i.name,
                busy=bool(i.in_flight or i.queue or i.closed_for),
                pinned=self._idle_timeout(i) == 0,
                last_used=i.last_used,
                memory_bytes=i.memory.held_bytes(self._pid(i), running=True),
            )
            for i in self._instances.values()
            if i.phase is Phase.RUNNING
        ]
        names = pressure_victims(candidates, used, memory.total_bytes, pressure.threshold_percent)
        if names:
            detail = (
                f"memory pressure: {100 * used / memory.total_bytes:.0f}% of RAM in use, "
                f"past instances.memory_pressure.threshold_percent ({pressure.threshold_percent:g})"
            )
            logger.warning("%s; stopping %s", detail, ", ".join(names))
            # Posted in the same step as the decision, as for idle stops.
            await asyncio.gather(
                *(self._post_stop(self._instances[n], StopReason.EVICTED, detail) for n in names)
            )
        return names

    async def settled(self) -> None:
        """Wait until every supervisor has performed the effects posted so far (tests)."""
        for instance in list(self._instances.values()):
            await instance.supervisor.idle()

    # ------------------------------------------------------------------ the request queue

    def _can_admit(self, instance: _Instance) -> bool:
        limit = instance.options.max_concurrent
        return (
            instance.phase is Phase.RUNNING
            and instance.closed_for is None
            and (limit is None or instance.in_flight < limit)
        )

    def _can_start(self, instance: _Instance) -> bool:
        if self._closing:
            return False
        if instance.phase in (Phase.STOPPED, Phase.FAILED):
            return self._on_demand_start(instance)
        # Starting, running, stopping or restarting: the request waits for how that ends (the
        # scheduler answers it if the instance ends stopped and may not start on demand).
        return True

    def _enqueue(self, instance: _Instance, waiter: _Waiter) -> None:
        if waiter.lease:
            limit = instance.options.max_queue
            if limit is not None and len(instance.queue) >= limit:
                raise QueueFull(f"the queue of {instance.name} is full (max_queue {limit})")
            total = sum(len(i.queue) for i in self._instances.values())
            if total >= self.settings.max_queue:
                raise QueueFull(f"instances.max_queue ({self.settings.max_queue}) requests are waiting")
        instance.queue.append(waiter)
        self._schedule()

    async def _await_admission(
        self, instance: _Instance, waiter: _Waiter, progress: ProgressCallback | None
    ) -> None:
        """Wait for the scheduler to admit ``waiter``, report progress, and leave the queue on any exit."""
        timeout = self.settings.start_timeout
        deadline = time.monotonic() + timeout
        extended = False
        admitted = False
        try:
            while not waiter.admitted.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0 and instance.phase is Phase.STARTING and not extended:
                    # The start has a deadline of its own, as long, from a moment later: its
                    # outcome (with its error and log lines) says more than this wait's end.
                    deadline, extended = time.monotonic() + timeout, True
                    continue
                if remaining <= 0:
                    raise StartTimedOut(
                        f"{instance.name} could not take the request within {timeout:g} s "
                        f"(instances.on_demand_start_timeout); it is {self._describe(instance)}"
                    )
                await asyncio.wait([waiter.admitted], timeout=min(PROGRESS_INTERVAL, remaining))
                if not waiter.admitted.done() and progress is not None:
                    waited = self._clock() - waiter.arrived
                    message = f"{self._describe(instance)} ({waited:.0f} s)"
                    await progress(WaitProgress(instance.name, waited, message))
            waiter.admitted.result()
            admitted = True
        finally:
            if not admitted:
                self._withdraw(instance, waiter)

    def _withdraw(self, instance: _Instance, waiter: _Waiter) -> None:
        """A waiter that gave up (timed out, disconnected) leaves the queue, or gives back its admission."""
        if waiter in instance.queue:
            instance.queue.remove(waiter)
        elif (
            waiter.lease
            and waiter.admitted.done()
            and not waiter.admitted.cancelled()
            and waiter.admitted.exception() is None
        ):
            self._release_lease(instance)  # admitted, but gone before it could use the place
            return
        if not waiter.admitted.done():
            waiter.admitted.cancel()
        self._schedule()

    def _release_lease(self, instance: _Instance) -> None:
        instance.in_flight -= 1
        instance.last_used = self._clock()
        if instance.in_flight == 0 and instance.phase is Phase.DRAINING:
            instance.supervisor.post(Drained(), instance.supervisor.generation)
        # A freed place matters only to requests that wait: with none, the hot path skips the scheduler.
        if instance.queue or instance.closed_for is not None or (instance.in_flight == 0 and self._waiting()):
            self._schedule()

    def _waiting(self) -> bool:
        return any(instance.queue for instance in self._instances.values())

    def _describe(self, instance: _Instance) -> str:
        """What a request for ``instance`` is waiting for, in words."""
        phase = instance.phase
        if phase is Phase.RUNNING:
            return f"queued for {instance.name} behind {instance.in_flight} requests in flight"
        if phase is Phase.STARTING:
            return f"starting {instance.name}"
        if phase in (Phase.DRAINING, Phase.STOPPING):
            restarting = instance.supervisor.state.then is Then.START
            return f"waiting for {instance.name} to {'restart' if restarting else 'stop'}"
        if phase is Phase.BACKOFF:
            return f"waiting for {instance.name} to restart after a crash"
        leaving = [i.name for i in self._instances.values() if i.closed_for == instance.name]
        if leaving:
            return f"waiting for {', '.join(leaving)} to finish its requests, to swap in {instance.name}"
        if instance.waiting_for is not None:
            return f"waiting for room: {instance.waiting_for}"
        return f"waiting for room to start {instance.name}"

    def _fail_waiters(self, instance: _Instance, error: InstanceError, api_starts: bool = True) -> None:
        """Answer everything waiting for ``instance`` with ``error``; API starts too, unless told not to."""
        kept: deque[_Waiter] = deque()
        for waiter in instance.queue:
            if not api_starts and not waiter.lease:
                kept.append(waiter)
            elif not waiter.admitted.done():
                waiter.admitted.set_exception(error)
        instance.queue = kept
        instance.owed = 0

    # ------------------------------------------------------------------ the scheduler

    def _schedule(self) -> None:
        """Run the scheduler soon, once however many changes ask for it."""
        if not self._schedule_pending:
            self._schedule_pending = True
            asyncio.get_running_loop().call_soon(self._run_schedule)

    def _run_schedule(self) -> None:
        self._schedule_pending = False
        try:
            self._schedule_now()
        except Exception:
            logger.exception("the scheduler failed; it runs again at the next change")

    def _schedule_now(self) -> None:
        """Admit what can be served, then start, swap out and refuse as the swap policy says."""
        for instance in self._instances.values():
            self._admit(instance)
        now = self._clock()
        plan = plan_swaps(
            [self._candidate(i) for i in self._instances.values()],
            self.settings.limits,
            now,
            self.settings.fairness_window,
        )
        for name, reason in plan.refuse.items():
            self._fail_waiters(self._instances[name], LimitReached(reason))
        for instance in self._instances.values():
            stopped = instance.phase in (Phase.STOPPED, Phase.FAILED)
            if instance.queue and stopped and (self._closing or not self._on_demand_start(instance)):
                # Stopped since these requests came (an eviction, an idle stop): no start will come.
                message = f"{instance.name} is stopped and on_demand_start is off"
                self._fail_waiters(instance, NotStartable(message), api_starts=False)
        for instance in self._instances.values():
            instance.closed_for = plan.close.get(instance.name)
            instance.waiting_for = plan.waiting.get(instance.name)
        for name in plan.start:
            instance = self._instances[name]
            manual = any(w.manual for w in instance.queue)
            instance.supervisor.post(Start(manual=manual))
        for victim, beneficiary in plan.stop.items():
            instance = self._instances[victim]
            logger.info("%s: swapped out for %s", victim, beneficiary)
            instance.supervisor.post(Stop(StopReason.EVICTED, f"evicted for {beneficiary}"))
            swapped_in = self._instances[beneficiary]
            if swapped_in.swap_began is None:
                swapped_in.swap_began = now
        for instance in self._instances.values():
            stopped = instance.phase in (Phase.STOPPED, Phase.FAILED)
            if instance.swap_began is not None and not instance.queue and stopped:
                instance.swap_began = None  # its requests gave up before the start: no swap came of it
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if plan.wake_at is not None:
            delay = max(plan.wake_at - now, 0.0)
            self._wake = asyncio.get_running_loop().call_later(delay, self._schedule)
        for instance in self._instances.values():
            if len(instance.queue) != instance.published_queue:
                instance.published_queue = len(instance.queue)
                self.events.publish(
                    EventKind.QUEUE, instance.name, queued=len(instance.queue), in_flight=instance.in_flight
                )

    def _admit(self, instance: _Instance) -> None:
        while instance.queue and self._can_admit(instance):
            waiter = instance.queue.popleft()
            if waiter.admitted.done():
                continue  # gave up already
            if waiter.lease:
                instance.in_flight += 1
            instance.owed = max(instance.owed - 1, 0)
            waiter.admitted.set_result(None)

    def _candidate(self, instance: _Instance) -> Candidate:
        phase = instance.phase
        if phase in (Phase.STOPPED, Phase.FAILED):
            occupancy = Occupancy.FREE
        elif phase in (Phase.DRAINING, Phase.STOPPING) and instance.supervisor.state.then is not Then.START:
            occupancy = Occupancy.LEAVING
        else:
            occupancy = Occupancy.HOLDING
        live = [w for w in instance.queue if not w.admitted.done()]
        return Candidate(
            name=instance.name,
            group=instance.options.group,
            occupancy=occupancy,
            running=phase is Phase.RUNNING,
            restarting=phase is Phase.BACKOFF,
            pinned=self._idle_timeout(instance) == 0,
            in_flight=instance.in_flight,
            queued=len(live),
            oldest_arrival=live[0].arrived if live else None,
            owed=min(instance.owed, len(live)),  # waiters that gave up are owed nothing
            startable=not self._closing
            and (self._on_demand_start(instance) or any(not w.lease for w in live)),
            last_used=instance.last_used,
            memory_bytes=instance.memory.held_bytes(self._pid(instance), phase is Phase.RUNNING)
            if self.settings.limits.memory_budget is not None
            else 0,
        )

    def _pid(self, instance: _Instance) -> int | None:
        process = instance.supervisor.process
        return process.pid if process is not None and process.running else None

    # ------------------------------------------------------------------ supervisor hooks

    def _transitioned(self, instance: _Instance, old: Lifecycle, new: Lifecycle, event: Event) -> None:
        reason = self._reason(instance, old, new, event)
        swap_seconds = None
        if instance.swap_began is not None and new.phase in (Phase.RUNNING, Phase.STOPPED, Phase.FAILED):
            if new.phase is Phase.RUNNING:
                swap_seconds = self._clock() - instance.swap_began
            instance.swap_began = None
        self.events.publish(
            EventKind.STATUS,
            instance.name,
            status=new.status.value,
            previous=old.status.value,
            reason=reason,
            cause=_cause(old, event),
            swap_seconds=swap_seconds,
        )
        if new.status is not old.status:
            logger.info("%s: %s -> %s (%s)", instance.name, old.status.value, new.status.value, reason)
        if new.phase is Phase.STARTING and old.phase is not Phase.STARTING:
            self._record_start_soon(instance, _start_reason(event, reason))
        if new.phase is Phase.RUNNING:
            instance.owed = len(instance.queue)
            instance.last_used = self._clock()
            if old.phase is not Phase.RUNNING:
                self._read_memory_report_soon(instance)
        elif new.phase is Phase.FAILED or (new.phase is Phase.STOPPING and new.then is Then.FAIL):
            message = f"{instance.name}: {instance.supervisor.last_error or 'the start failed'}"
            timed_out = isinstance(event, StartFailedEvent) and event.timed_out
            self._fail_waiters(instance, StartTimedOut(message) if timed_out else StartFailed(message))
        elif new.phase is Phase.STOPPING and old.phase is Phase.STARTING and new.then is Then.STOP:
            self._fail_stopped_waiters(instance, new.stop_reason)
        if new.phase in (Phase.STOPPED, Phase.FAILED):
            if new.phase is Phase.STOPPED:
                self._fail_stopped_waiters(instance, new.stop_reason)
            waiters, instance.stop_waiters = instance.stop_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._schedule()

    def _fail_stopped_waiters(self, instance: _Instance, reason: StopReason | None) -> None:
        """Waiters for an instance stopped on purpose get a 503; after an idle stop or a swap they wait on."""
        if reason in (StopReason.API, StopReason.RELOAD):
            assert reason is not None
            self._fail_waiters(instance, InstanceStopped(f"{instance.name} was stopped ({reason.value})"))
        elif reason is StopReason.SHUTDOWN:
            self._fail_waiters(instance, NotStartable("llamactl is shutting down"))

    def _reason(self, instance: _Instance, old: Lifecycle, new: Lifecycle, event: Event) -> str:
        match event:
            case Start(manual=manual):
                return "by API" if manual else "on demand"
            case Stop(reason=reason, detail=detail):
                return detail or reason.value
            case Restart():
                return "restart"
            case Ready():
                return "ready"
            case StartFailedEvent(error=error):
                return f"start failed: {error}"
            case Exited(code=code):
                return f"exited with code {code}" + (" (crashed)" if old.phase is Phase.RUNNING else "")
        return type(event).__name__.lower()

    # ------------------------------------------------------------------ internals

    def _add(self, record: InstanceRecord) -> _Instance:
        log = InstanceLog(
            self.settings.logs_dir / f"{record.name}.log",
            self.settings.log_max_bytes,
            self.settings.log_backups,
        )
        instance = _Instance(record, log, self._clock())
        if instance.claimed_port is not None:
            self._ports.claim(instance.claimed_port, record.name)
        instance.supervisor = Supervisor(
            record.name,
            self._process_settings,
            self._hooks(instance),
            log,
            self._ports,
            self._store,
            self._clock,
        )
        self._instances[record.name] = instance
        self._read_model_soon(instance)
        return instance

    def _read_model_soon(self, instance: _Instance) -> None:
        """Read the model's files in the background, so its facts show before its first start."""
        self._in_background(instance.memory.estimate())

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` as a task the manager keeps, and cancels at shutdown."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _read_memory_report_soon(self, instance: _Instance) -> None:
        """Read the backend's memory report from the lines of this start, waiting a little for them.

        Readiness can come before the report is in the ring: llama.cpp logs from a worker
        thread of its own, and the pipe is read by another task.
        """

        async def read() -> None:
            deadline = time.monotonic() + MEMORY_REPORT_WAIT
            while not instance.memory.ready(instance.log.tail(RING_LINES)):
                if instance.phase is not Phase.RUNNING or time.monotonic() >= deadline:
                    return
                await asyncio.sleep(MEMORY_REPORT_POLL)

        self._in_background(read())

    def _record_start_soon(self, instance: _Instance, reason: str) -> None:
        """Write the start to the instance's history, with what runs, once ``--version`` has said."""
        when = time.time()
        options = instance.options  # this start's, whatever an update changes meanwhile

        async def record() -> None:
            try:
                settings = self.settings.backends[options.backend_type]
                command = launch_command(instance.name, options, settings, self.settings.host, 0)
                entry = await self.versions.start_entry(command, settings, reason, when)
                self._store.add_history(instance.id, entry)
            except Exception:  # the start goes on without its entry
                logger.exception("%s: cannot record the start in its history", instance.name)

        self._in_background(record())

    def _hooks(self, instance: _Instance) -> SupervisorHooks:
        def persist(was_running: bool) -> None:
            instance.was_running = was_running
            if instance.name in self._instances:
                self._store.save_instance(instance.record())

        return SupervisorHooks(
            options=lambda: instance.options,
            backend_settings=lambda options: self.settings.backends[options.backend_type],
            claimed_port=lambda: instance.claimed_port,
            crash_policy=lambda: self._policy(instance),
            in_flight=lambda: instance.in_flight,
            persist=persist,
            transitioned=lambda old, new, event: self._transitioned(instance, old, new, event),
        )

    def _find(self, name: str) -> _Instance:
        try:
            return self._instances[name]
        except KeyError:
            raise InstanceNotFound(f"no instance named {echo(name)}", field="name") from None

    async def _stop(self, instance: _Instance, reason: StopReason) -> None:
        """Stop and wait until nothing runs (requests in flight get ``drain_timeout`` to finish)."""
        await self._post_stop(instance, reason)

    def _post_stop(
        self, instance: _Instance, reason: StopReason, detail: str | None = None
    ) -> asyncio.Future[None]:
        """Stop now, in this step (no lease can slip in before it), and a future for when nothing runs."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if instance.phase in (Phase.STOPPED, Phase.FAILED):
            instance.supervisor.post(Stop(reason, detail))
            # No transition to answer them: requests waiting for room are answered here.
            self._fail_stopped_waiters(instance, reason)
            self._schedule()
            done.set_result(None)
            return done
        instance.stop_waiters.append(done)
        instance.supervisor.post(Stop(reason, detail))
        return done

    def _policy(self, instance: _Instance) -> CrashPolicy:
        options, s = instance.options, self.settings
        return CrashPolicy(
            auto_restart=not self._closing
            and (s.default_auto_restart if options.auto_restart is None else options.auto_restart),
            max_restarts=s.default_max_restarts if options.max_restarts is None else options.max_restarts,
            restart_delay=s.default_restart_delay if options.restart_delay is None else options.restart_delay,
        )

    def _on_demand_start(self, instance: _Instance) -> bool:
        configured = instance.options.on_demand_start
        return self.settings.default_on_demand_start if configured is None else configured

    def _idle_timeout(self, instance: _Instance) -> int:
        configured = instance.options.idle_timeout
        return self.settings.default_idle_timeout if configured is None else configured

    def _launch_for(self, instance: _Instance, options: InstanceOptions) -> LaunchCommand:
        """What the options start, on the port they claim (0 for an allocated one)."""
        settings = self.settings.backends[options.backend_type]
        port = claimed_port(options) or 0
        return launch_command(instance.name, options, settings, self.settings.host, port, {})

    def _info(self, instance: _Instance) -> InstanceInfo:
        supervisor = instance.supervisor
        running = supervisor.state.phase is Phase.RUNNING
        running_since = None
        if running and supervisor.ready_since is not None:
            # The supervisor keeps the monotonic clock's reading; clients need the wall clock's.
            running_since = time.time() - (self._clock() - supervisor.ready_since)
        return InstanceInfo(
            id=instance.id,
            name=instance.name,
            status=supervisor.state.status,
            created=int(instance.created),
            options=instance.options,
            served_model=instance.served_model,
            port=supervisor.port,
            pid=supervisor.process.pid if supervisor.process is not None else None,
            declared=instance.declared,
            restarts=supervisor.state.restarts,
            last_error=supervisor.last_error,
            last_log_lines=supervisor.last_log_lines,
            queued=len(instance.queue),
            in_flight=instance.in_flight,
            memory=instance.memory.figures(self._pid(instance)),
            model=instance.memory.profile,
            served_context=supervisor.served_context if running else None,
            running_since=running_since,
        )

    async def _pressure_loop(self, pressure: MemoryPressure) -> None:
        while True:
            await asyncio.sleep(pressure.check_interval)
            try:
                await self.relieve_memory_pressure()
            except Exception:
                logger.exception(
                    "the memory pressure check failed; trying again in %s s", pressure.check_interval
                )

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.idle_check_interval)
            try:
                await self.stop_idle()
            except Exception:
                logger.exception("idle stop failed; trying again in %s s", self.settings.idle_check_interval)


def _cause(old: Lifecycle, event: Event) -> str:
    """What made a transition, as the metrics count it."""
    match event:
        case Start(manual=manual):
            return "api" if manual else "on_demand"
        case Stop(reason=reason):
            return reason.name.lower()
        case Restart():
            return "restart"
        case Ready():
            return "ready"
        case StartFailedEvent():
            return "start_failed"
        case Exited():
            return "crash" if old.phase is Phase.RUNNING else "exit"
    return type(event).__name__.lower()


def _start_reason(event: Event, reason: str) -> str:
    """Why a start happened, for its history entry: the transition's reason names the event."""
    match event:
        case Exited():
            return "restart"  # the old process is gone: this is the start of a restart
        case BackoffElapsed():
            return "restart after a crash"
    return reason


def _log_boot_start(name: str) -> Callable[[asyncio.Future[None]], None]:
    """Nobody awaits a start at boot: its failure is logged here instead of lost."""

    def done(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.warning("%s: not started at boot: %s", name, future.exception())

    return done


def served_model(options: InstanceOptions) -> str | None:
    return get_backend(options.backend_type).served_model_name(options.backend_options)


def memory_of(options: InstanceOptions) -> InstanceMemory:
    return InstanceMemory(get_backend(options.backend_type), options.backend_options)


def claimed_port(options: InstanceOptions) -> int | None:
    return get_backend(options.backend_type).claimed_port(options.backend_options)
