"""The InstanceManager owns every instance, its state and its process. See design.md."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec

from llamactl.backends import BackendType, get_backend
from llamactl.instance.errors import (
    InstanceConflict,
    InstanceError,
    InstanceNotFound,
    NotStartable,
    StartFailed,
)
from llamactl.instance.launch import BackendSettings, launch_command
from llamactl.instance.log_file import InstanceLog
from llamactl.instance.options import InstanceOptions, check_instance_name
from llamactl.instance.ports import PortAllocator, port_is_free
from llamactl.instance.process import BackendProcess, kill_leftover_group, start_ticks
from llamactl.instance.readiness import wait_until_ready
from llamactl.instance.scheduling import (
    ActiveInstance,
    CapacityLimits,
    IdleCandidate,
    idle_instances,
    plan_evictions,
    restart_delay,
)
from llamactl.instance.status import InstanceStatus
from llamactl.instance.store import InstanceRecord, InstanceStore, ProcessRecord

FAILURE_LOG_LINES = 50


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
    idle_check_interval: float
    logs_dir: Path
    log_max_bytes: int
    log_backups: int
    backends: dict[BackendType, BackendSettings]
    host: str = "127.0.0.1"
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    drain_timeout: float = 30.0
    """Seconds a stop waits for requests in flight."""
    stable_period: float = 60.0
    """Seconds ready after which a crash counts as the first again."""


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
    """For people: ``starting qwen (12 s)``, ``queued behind 3 requests for qwen (4 s)``."""


ProgressCallback = Callable[[WaitProgress], Awaitable[None]]


class ReconcileReport(msgspec.Struct):
    created: list[str] = []
    updated: list[str] = []
    removed: list[str] = []


class _Instance:
    """Mutable state of one instance; touched only by the manager, on its event loop."""

    def __init__(self, record: InstanceRecord, log: InstanceLog, now: float) -> None:
        self.id = record.id
        self.name = record.name
        self.created = record.created
        self.options = record.options
        self.served_model = served_model(record.options)
        self.declared = record.declared
        self.was_running = record.was_running
        self.log = log
        self.status = InstanceStatus.STOPPED
        self.process: BackendProcess | None = None
        self.port: int | None = None
        self.claimed_port: int | None = record.options.backend_options.get("port")
        self.lock = asyncio.Lock()
        self.start_task: asyncio.Task[None] | None = None
        self.restart_task: asyncio.Task[None] | None = None
        self.watch_task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.ready_since: float | None = None
        self.last_used = now
        self.in_flight = 0
        self.last_error: str | None = None
        self.last_log_lines: list[str] = []

    def record(self) -> InstanceRecord:
        return InstanceRecord(self.name, self.created, self.options, self.was_running, self.declared, self.id)


class InstanceManager:
    def __init__(
        self,
        settings: ManagerSettings,
        store: InstanceStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` drives the idle and least-recently-used decisions; deadlines use real time."""
        self.settings = settings
        self._store = store
        self._clock = clock
        self._ports = PortAllocator(*settings.port_range)
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self._instances: dict[str, _Instance] = {}
        self._idle_task: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ boot and shutdown

    async def open(self) -> None:
        """Clean up what a previous llamactl left running, load instances, start those that ran."""
        for leftover in self._store.load_processes():
            kill_leftover_group(leftover.pgid, leftover.start_ticks)
            self._store.forget_process(leftover.name)
        for record in self._store.load_instances():
            self._add(record)
        for instance in list(self._instances.values()):
            if instance.was_running and self._effective(instance).auto_restart:
                instance.start_task = asyncio.create_task(self._start(instance))
        self._idle_task = asyncio.create_task(self._idle_loop())

    async def close(self, timeout: float | None = None) -> None:
        """Stop every backend (bounded), keeping which ones ran for the next boot."""
        self._closing = True
        if self._idle_task is not None:
            self._idle_task.cancel()
        stops = [self._stop(instance, keep_was_running=True) for instance in self._instances.values()]
        if stops:
            # Past the timeout llamactl exits anyway, and the watchdogs take down what is left.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), timeout)
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
        return self._info(instance)

    async def update(self, name: str, options: InstanceOptions, from_config: bool = False) -> InstanceInfo:
        """Replace the options; a running instance restarts only if its command changed."""
        instance = self._find(name)
        if instance.declared and not from_config:
            raise InstanceConflict(
                f"{name} is declared in the config file (models.{name}); edit it there and reload",
                field="name",
            )
        new_port = options.backend_options.get("port")
        if new_port != instance.claimed_port:
            if new_port is not None:
                self._ports.claim(new_port, name)
            if instance.claimed_port is not None:
                self._ports.release(instance.claimed_port)
            instance.claimed_port = new_port
        changed = self._launch_for(instance, options) != self._launch_for(instance, instance.options)
        instance.options = options
        instance.served_model = served_model(options)
        self._store.save_instance(instance.record())
        if changed and instance.status in (InstanceStatus.RUNNING, InstanceStatus.STARTING):
            await self.restart(name)
        return self._info(instance)

    async def delete(self, name: str, from_config: bool = False) -> None:
        instance = self._find(name)
        if instance.declared and not from_config:
            raise InstanceConflict(
                f"{name} is declared in the config file (models.{name}); remove it there and reload",
                field="name",
            )
        if from_config:
            await self._stop(instance, keep_was_running=False)
        elif instance.status not in (InstanceStatus.STOPPED, InstanceStatus.FAILED):
            raise InstanceConflict(
                f"{name} is {instance.status.value}; stop it before deleting it", field="name"
            )
        if instance.claimed_port is not None:
            self._ports.release(instance.claimed_port)
        instance.log.close()
        del self._instances[name]
        self._store.delete_instance(name)

    async def reconcile_declared(self, declared: dict[str, InstanceOptions]) -> ReconcileReport:
        """Make the declared instances match the config file's ``models:``.

        Creates what is new, updates what changed (a running instance restarts
        only if its command changed), stops and removes what the file no longer
        declares, and never touches instances created through the API. Conflicts
        are found before anything changes.
        """
        clashes = [n for n in declared if n in self._instances and not self._instances[n].declared]
        if clashes:
            raise InstanceConflict(
                f"models.{clashes[0]}: an instance of that name was created through the API; "
                "rename one of them",
                field="name",
            )
        new = [name for name in declared if name not in self._instances]
        limit = self.settings.max_instances
        if 0 <= limit < len(self._instances) + len(new):
            raise InstanceConflict(f"instances.max_instances ({limit}) is too low for the declared instances")
        report = ReconcileReport()
        for name, options in declared.items():
            if name in new:
                self.create(name, options, declared=True)
                report.created.append(name)
            elif self._instances[name].options != options:
                await self.update(name, options, from_config=True)
                report.updated.append(name)
        for name in [n for n, i in self._instances.items() if i.declared and n not in declared]:
            await self.delete(name, from_config=True)
            report.removed.append(name)
        return report

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str) -> InstanceInfo:
        instance = self._find(name)
        instance.restarts = 0
        await self._ensure_started(instance)
        return self._info(instance)

    async def stop(self, name: str) -> InstanceInfo:
        instance = self._find(name)
        await self._stop(instance, keep_was_running=False)
        return self._info(instance)

    async def restart(self, name: str) -> InstanceInfo:
        instance = self._find(name)
        await self._stop(instance, keep_was_running=False)
        return await self.start(name)

    @contextlib.asynccontextmanager
    async def lease(
        self, name: str, on_demand: bool = True, progress: ProgressCallback | None = None
    ) -> AsyncIterator[Leased]:
        """Hold a ready instance for one request: started on demand, never stopped while held.

        ``on_demand=False`` never starts it (the instance proxy). ``progress`` is
        called every few seconds while the request waits. The idle clock restarts
        when the last lease is released.
        """
        instance = self._find(name)
        while instance.status is not InstanceStatus.RUNNING:
            if instance.status is InstanceStatus.SHUTTING_DOWN:
                raise NotStartable(f"{name} is shutting down")
            if not on_demand:
                raise NotStartable(f"{name} is {instance.status.value}; start it first")
            if not self._effective(instance).on_demand_start:
                raise NotStartable(f"{name} is {instance.status.value} and on_demand_start is off")
            await self._ensure_started(instance, on_demand=True)
        # Checked and taken with no await in between: a stop cannot slip in.
        instance.in_flight += 1
        assert instance.port is not None  # running
        try:
            yield Leased(self._info(instance), self.settings.host, instance.port)
        finally:
            instance.in_flight -= 1
            instance.last_used = self._clock()

    def log_tail(self, name: str, lines: int) -> list[str]:
        return self._find(name).log.tail(lines)

    def follow_log(self, name: str) -> AsyncIterator[str]:
        return self._find(name).log.follow()

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
        self._instances[record.name] = instance
        return instance

    def _find(self, name: str) -> _Instance:
        try:
            return self._instances[name]
        except KeyError:
            raise InstanceNotFound(f"no instance named {name!r}", field="name") from None

    def _effective(self, instance: _Instance) -> _Effective:
        options, s = instance.options, self.settings
        return _Effective(
            auto_restart=s.default_auto_restart if options.auto_restart is None else options.auto_restart,
            max_restarts=s.default_max_restarts if options.max_restarts is None else options.max_restarts,
            restart_delay=s.default_restart_delay if options.restart_delay is None else options.restart_delay,
            on_demand_start=s.default_on_demand_start
            if options.on_demand_start is None
            else options.on_demand_start,
            idle_timeout=s.default_idle_timeout if options.idle_timeout is None else options.idle_timeout,
        )

    def _launch_for(self, instance: _Instance, options: InstanceOptions) -> list[str]:
        settings = self.settings.backends[options.backend_type]
        return launch_command(instance.name, options, settings, self.settings.host, 0, {}).argv

    def _info(self, instance: _Instance) -> InstanceInfo:
        return InstanceInfo(
            id=instance.id,
            name=instance.name,
            status=instance.status,
            created=int(instance.created),
            options=instance.options,
            served_model=instance.served_model,
            port=instance.port,
            pid=instance.process.pid if instance.process is not None else None,
            declared=instance.declared,
            restarts=instance.restarts,
            last_error=instance.last_error,
            last_log_lines=instance.last_log_lines,
        )

    async def _ensure_started(self, instance: _Instance, on_demand: bool = False) -> None:
        """Start once however many callers ask at the same time; all wait for the same outcome."""
        if instance.status is InstanceStatus.RUNNING:
            return
        if instance.start_task is None or instance.start_task.done():
            if instance.restart_task is not None:
                instance.restart_task.cancel()  # an explicit start replaces a pending restart
            instance.start_task = asyncio.create_task(self._start(instance))
        await asyncio.shield(instance.start_task)

    def _active(self) -> list[ActiveInstance]:
        active = []
        for instance in self._instances.values():
            if instance.status in (InstanceStatus.RUNNING, InstanceStatus.STARTING):
                evictable = (
                    instance.status is InstanceStatus.RUNNING
                    and instance.in_flight == 0
                    and self._effective(instance).idle_timeout > 0
                )
                active.append(
                    ActiveInstance(instance.name, instance.options.group, evictable, instance.last_used)
                )
        return active

    async def _start(self, instance: _Instance) -> None:
        async with instance.lock:
            if instance.status is InstanceStatus.RUNNING:
                return
            if self._closing:
                raise NotStartable("llamactl is shutting down")
            # Decided and reserved with no await in between, so two starts cannot both take the last slot.
            victims = plan_evictions(
                instance.name, instance.options.group, self._active(), self.settings.limits
            )
            for victim in victims:
                self._instances[victim].status = InstanceStatus.SHUTTING_DOWN
            instance.status = InstanceStatus.STARTING
            instance.last_error = None
            try:
                # Shielded: cancelling this start must not leave a victim half-stopped.
                await asyncio.shield(
                    asyncio.gather(*(self._stop(self._instances[v], keep_was_running=False) for v in victims))
                )
                await self._spawn_and_wait(instance)
            except BaseException as error:
                await self._abandon_start(instance, error)
                raise
            instance.status = InstanceStatus.RUNNING
            instance.ready_since = instance.last_used = self._clock()
            instance.was_running = True
            self._store.save_instance(instance.record())

    async def _spawn_and_wait(self, instance: _Instance) -> None:
        port = instance.claimed_port
        if port is None:
            port = self._ports.allocate(instance.name)
        elif not port_is_free(port, self.settings.host):
            raise StartFailed(f"port {port} of {instance.name} is in use by another program")
        instance.port = port
        settings = self.settings.backends[instance.options.backend_type]
        command = launch_command(instance.name, instance.options, settings, self.settings.host, port)
        process = await BackendProcess.spawn(
            command.argv, command.environment, instance.log, self.settings.stop_grace, command.stop_argv
        )
        instance.process = process
        ticks = start_ticks(process.pid)
        if ticks is not None:
            self._store.record_process(ProcessRecord(instance.name, process.pid, ticks))
        instance.watch_task = asyncio.create_task(self._watch(instance, process))
        probe = get_backend(instance.options.backend_type).readiness_probe
        deadline = time.monotonic() + self.settings.start_timeout
        await wait_until_ready(
            probe, f"http://{self.settings.host}:{port}", process.exited, deadline, instance.name
        )

    async def _abandon_start(self, instance: _Instance, error: BaseException) -> None:
        """A start that failed, timed out or was cancelled leaves nothing running."""
        await self._release_process(instance)
        if isinstance(error, asyncio.CancelledError):
            instance.status = InstanceStatus.STOPPED
            return
        instance.status = InstanceStatus.FAILED
        instance.last_error = error.message if isinstance(error, InstanceError) else repr(error)
        instance.last_log_lines = instance.log.tail(FAILURE_LOG_LINES)

    async def _release_process(self, instance: _Instance) -> None:
        process, instance.process = instance.process, None
        if process is not None:
            await process.stop(self.settings.stop_grace)
            self._store.forget_process(instance.name)
        if instance.port is not None and instance.port != instance.claimed_port:
            self._ports.release(instance.port)
        instance.port = None

    async def _stop(self, instance: _Instance, keep_was_running: bool) -> None:
        if instance.restart_task is not None:
            instance.restart_task.cancel()  # a stop during back-off cancels the pending restart
        if instance.start_task is not None and not instance.start_task.done():
            instance.start_task.cancel()
            await asyncio.wait([instance.start_task])
        async with instance.lock:
            if instance.process is not None:
                instance.status = InstanceStatus.SHUTTING_DOWN
                deadline = time.monotonic() + self.settings.drain_timeout
                while instance.in_flight and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await self._release_process(instance)
            if instance.status is not InstanceStatus.FAILED or not keep_was_running:
                instance.status = InstanceStatus.STOPPED
            if not keep_was_running:
                instance.was_running = False
                self._store.save_instance(instance.record())

    async def _watch(self, instance: _Instance, process: BackendProcess) -> None:
        """React to a backend's exit that nobody asked for."""
        code = await process.exited
        if instance.process is not process or instance.status is not InstanceStatus.RUNNING:
            return  # a stop, or a start that is failing, handles it
        await self._release_process(instance)
        effective = self._effective(instance)
        if (
            instance.ready_since is not None
            and self._clock() - instance.ready_since >= self.settings.stable_period
        ):
            instance.restarts = 0
        instance.last_log_lines = instance.log.tail(FAILURE_LOG_LINES)
        instance.last_error = f"exited unexpectedly with code {code}"
        if self._closing or not effective.auto_restart or instance.restarts >= effective.max_restarts:
            instance.status = InstanceStatus.FAILED
            return
        instance.restarts += 1
        instance.status = InstanceStatus.RESTARTING
        delay = restart_delay(instance.restarts, effective.restart_delay)
        instance.restart_task = asyncio.create_task(self._restart_after(instance, delay))

    async def _restart_after(self, instance: _Instance, delay: float) -> None:
        await asyncio.sleep(delay)
        instance.restart_task = None
        instance.start_task = asyncio.create_task(self._start(instance))
        with contextlib.suppress(InstanceError):
            await instance.start_task

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.idle_check_interval)
            await self.stop_idle()

    async def stop_idle(self) -> list[str]:
        """Stop every running instance past its idle timeout; returns their names."""
        candidates = [
            IdleCandidate(i.name, self._effective(i).idle_timeout, i.in_flight, i.last_used)
            for i in self._instances.values()
            if i.status is InstanceStatus.RUNNING
        ]
        names = idle_instances(candidates, self._clock())
        for name in names:
            self._instances[name].status = InstanceStatus.SHUTTING_DOWN  # no lease can start now
        await asyncio.gather(*(self._stop(self._instances[n], keep_was_running=False) for n in names))
        return names


def served_model(options: InstanceOptions) -> str | None:
    return get_backend(options.backend_type).served_model_name(options.typed_backend_options())


class _Effective(msgspec.Struct, frozen=True):
    """An instance's options with the configured defaults filled in."""

    auto_restart: bool
    max_restarts: int
    restart_delay: float
    on_demand_start: bool
    idle_timeout: int
