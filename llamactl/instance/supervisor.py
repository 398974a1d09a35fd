"""One supervisor per instance: it applies lifecycle events and performs their effects.

``post(event)`` applies the pure transition at once, so the state the
manager reads is always current and no decision waits on another; the
effects go, in order, to the supervisor's task, which performs them one at a
time (spawn, probe, drain, terminate, back-off timers, persistence). Events
from the process (ready, exited) carry the generation of the process they
concern, so a late event from an earlier process changes nothing. An effect
that fails is logged with the instance's name and the task goes on: a
supervisor never dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from llamactl.backends import get_backend
from llamactl.errors import LlamactlError
from llamactl.instance import errors
from llamactl.instance.launch import BackendSettings, launch_command
from llamactl.instance.lifecycle import (
    AwaitDrain,
    BackoffElapsed,
    CancelProbe,
    CancelRestart,
    CrashPolicy,
    Drained,
    Effect,
    Event,
    Exited,
    Lifecycle,
    Persist,
    Ready,
    RecordFailure,
    Release,
    ScheduleRestart,
    Spawn,
    StartFailed,
    Terminate,
    transition,
)
from llamactl.instance.log_file import InstanceLog
from llamactl.instance.options import InstanceOptions
from llamactl.instance.ports import PortAllocator, port_is_free
from llamactl.instance.process import BackendProcess, start_ticks
from llamactl.instance.readiness import served_context, wait_until_ready
from llamactl.store import ProcessRecord, Store

logger = logging.getLogger("llamactl.instance")

FAILURE_LOG_LINES = 50


@dataclass(frozen=True)
class ProcessSettings:
    """What the supervisor needs to run a backend, from the manager's settings."""

    host: str
    stop_grace: float
    start_timeout: float
    drain_timeout: float
    stable_period: float


@dataclass(frozen=True)
class SupervisorHooks:
    """What the supervisor asks of, and tells, the manager that owns the instance."""

    options: Callable[[], InstanceOptions]
    backend_settings: Callable[[InstanceOptions], BackendSettings]
    claimed_port: Callable[[], int | None]
    crash_policy: Callable[[], CrashPolicy]
    in_flight: Callable[[], int]
    persist: Callable[[bool], None]
    transitioned: Callable[[Lifecycle, Lifecycle, Event], None]


class Supervisor:
    def __init__(
        self,
        name: str,
        settings: ProcessSettings,
        hooks: SupervisorHooks,
        log: InstanceLog,
        ports: PortAllocator,
        store: Store,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.state = Lifecycle()
        self.process: BackendProcess | None = None
        self.port: int | None = None
        self.generation = 0
        self.last_error: str | None = None
        self.last_log_lines: list[str] = []
        self.ready_since: float | None = None
        self._settings = settings
        self._hooks = hooks
        self._log = log
        self._ports = ports
        self._store = store
        self._clock = clock
        self._effects: asyncio.Queue[Effect] = asyncio.Queue()
        self._probe: asyncio.Task[None] | None = None
        self.served_context: int | None = None
        """The context the running backend says it has (``Backend.context_probe``); None until it says."""
        self._drain_timer: asyncio.Task[None] | None = None
        self._restart_timer: asyncio.Task[None] | None = None
        self._children: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._run(), name=f"supervisor {name}")

    def post(self, event: Event, generation: int | None = None) -> None:
        """Apply ``event`` now; its effects run in order on the supervisor's task."""
        if generation is not None and generation != self.generation:
            return  # from a process that is already gone
        old = self.state
        new, effects = transition(old, event, self._hooks.crash_policy())
        self.state = new
        if isinstance(event, Ready):
            self.ready_since = self._clock()
        for effect in effects:
            if isinstance(effect, RecordFailure):
                self._record_failure(effect.error)  # now: whoever waits is answered with it below
            else:
                self._effects.put_nowait(effect)
        if new != old:
            self._hooks.transitioned(old, new, event)

    async def idle(self) -> None:
        """Wait until every queued effect has been performed (tests and shutdown)."""
        await self._effects.join()

    async def close(self) -> None:
        """Stop the task and any timers; the process, if any, is the caller's to have stopped."""
        self._task.cancel()
        for task in [self._probe, self._drain_timer, self._restart_timer, *self._children]:
            if task is not None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            effect = await self._effects.get()
            try:
                await self._perform(effect)
            except Exception:
                logger.exception("%s: performing %s failed", self.name, type(effect).__name__)
            finally:
                self._effects.task_done()

    async def _perform(self, effect: Effect) -> None:
        match effect:
            case Spawn():
                await self._spawn()
            case CancelProbe():
                _cancel(self._probe)
            case AwaitDrain():
                if self._hooks.in_flight() == 0:
                    self.post(Drained(), self.generation)
                else:
                    self._drain_timer = self._after(self._settings.drain_timeout, Drained(), self.generation)
            case Terminate():
                self._terminate()
            case Release():
                self._release()
            case ScheduleRestart(delay=delay):
                self._restart_timer = self._after(delay, BackoffElapsed(), None)
            case CancelRestart():
                _cancel(self._restart_timer)
            case RecordFailure(error=error):
                self._record_failure(error)
            case Persist(was_running=was_running):
                self._hooks.persist(was_running)

    def _record_failure(self, error: str) -> None:
        self.last_error = error
        self.last_log_lines = self._log.tail(FAILURE_LOG_LINES)
        logger.warning("%s: %s", self.name, error)

    async def _spawn(self) -> None:
        self.generation += 1
        generation = self.generation
        self.last_error = None
        self.ready_since = None
        options = self._hooks.options()
        try:
            port = self._take_port()
            command = launch_command(
                self.name, options, self._hooks.backend_settings(options), self._settings.host, port
            )
            process = await BackendProcess.spawn(command, self._log, self._settings.stop_grace)
        except Exception as error:  # whatever it is, the start failed and the waiters must hear so
            self._release()
            message = error.message if isinstance(error, LlamactlError) else f"cannot start: {error!r}"
            self.post(StartFailed(message), generation)
            return
        self.process = process
        self.served_context = None
        ticks = start_ticks(process.pid)
        if ticks is not None:
            self._store.record_process(ProcessRecord(self.name, process.pid, ticks))
        self._child(self._watch(process, generation))
        self._probe = self._child(self._wait_ready(process, port, options, generation))

    def _take_port(self) -> int:
        claimed = self._hooks.claimed_port()
        if claimed is None:
            self.port = self._ports.allocate(self.name)
        elif not port_is_free(claimed, self._settings.host):
            raise errors.StartFailed(f"port {claimed} of {self.name} is in use by another program")
        else:
            self.port = claimed
        return self.port

    async def _wait_ready(
        self, process: BackendProcess, port: int, options: InstanceOptions, generation: int
    ) -> None:
        backend = get_backend(options.backend_type)
        base_url = f"http://{self._settings.host}:{port}"
        deadline = time.monotonic() + self._settings.start_timeout
        try:
            listener = process.pid if process.native else None
            await wait_until_ready(
                backend.readiness_probe, base_url, process.exited, deadline, self.name, listener
            )
        except LlamactlError as error:
            self.post(StartFailed(error.message, isinstance(error, errors.StartTimedOut)), generation)
            return
        self.post(Ready(), generation)
        # After Ready, so that requests do not wait for it.
        self.served_context = await served_context(backend, base_url)

    async def _watch(self, process: BackendProcess, generation: int) -> None:
        code = await process.exited
        ready_since = self.ready_since
        stable = ready_since is not None and self._clock() - ready_since >= self._settings.stable_period
        self.post(Exited(code, stable), generation)

    def _terminate(self) -> None:
        process = self.process
        if process is None or not process.running:
            # Nothing left to signal: the exit is known, or the spawn never happened.
            code = process.exited.result() if process is not None else 0
            self.post(Exited(code), self.generation)
            return
        self._child(_stop(process, self._settings.stop_grace))

    def _release(self) -> None:
        _cancel(self._drain_timer)
        if self.process is not None:
            self._store.forget_process(self.name)
        self.process = None
        if self.port is not None and self.port != self._hooks.claimed_port():
            self._ports.release(self.port)
        self.port = None
        self.ready_since = None

    def _after(self, delay: float, event: Event, generation: int | None) -> asyncio.Task[None]:
        async def later() -> None:
            await asyncio.sleep(delay)
            self.post(event, generation)

        return asyncio.create_task(later())

    def _child(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[None]) -> None:
        self._children.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", self.name, exc_info=task.exception())


async def _stop(process: BackendProcess, grace: float) -> None:
    await process.stop(grace)  # the watcher posts the exit


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
