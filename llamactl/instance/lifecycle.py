"""An instance's lifecycle as a pure transition table: ``transition(state, event, policy)``.

No I/O, no clock, no asyncio: the supervisor (``supervisor.py``) feeds it
events one at a time and performs the effects it returns. Every status
change of an instance goes through here, so start, stop, restart, crash,
eviction and idle stop cannot race each other. ``design.md`` shows the table.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from llamactl.instance.status import InstanceStatus


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    """Spawned (or spawning); the readiness probe has not passed yet."""
    RUNNING = "running"
    DRAINING = "draining"
    """Asked to stop: takes no new requests, waits (bounded) for those in flight."""
    STOPPING = "stopping"
    """Signalled; waiting for the process group to exit."""
    BACKOFF = "backoff"
    """Crashed; waiting out the delay before the restart."""
    FAILED = "failed"


STATUS_OF_PHASE = {
    Phase.STOPPED: InstanceStatus.STOPPED,
    Phase.STARTING: InstanceStatus.STARTING,
    Phase.RUNNING: InstanceStatus.RUNNING,
    Phase.DRAINING: InstanceStatus.SHUTTING_DOWN,
    Phase.STOPPING: InstanceStatus.SHUTTING_DOWN,
    Phase.BACKOFF: InstanceStatus.RESTARTING,
    Phase.FAILED: InstanceStatus.FAILED,
}


class Then(StrEnum):
    """What a stop leads to once the process is gone."""

    STOP = "stop"
    START = "start"
    """A restart: requests waiting across it are served once it is ready again."""
    FAIL = "fail"
    """A start that failed while the process was still alive (timed out)."""


class StopReason(StrEnum):
    API = "by API"
    IDLE = "idle"
    EVICTED = "evicted"
    RELOAD = "by reload"
    SHUTDOWN = "llamactl shutting down"
    """The one stop that keeps ``was_running``, so the next boot starts the instance again."""


class Lifecycle(msgspec.Struct, frozen=True):
    phase: Phase = Phase.STOPPED
    then: Then = Then.STOP
    stop_reason: StopReason | None = None
    restarts: int = 0
    """Crash restarts in a row; reset by a manual start and after a stable period."""

    @property
    def status(self) -> InstanceStatus:
        return STATUS_OF_PHASE[self.phase]


class CrashPolicy(msgspec.Struct, frozen=True):
    auto_restart: bool
    max_restarts: int
    restart_delay: float
    """Seconds before the first restart; later ones back off exponentially."""


# Events -----------------------------------------------------------------------------------------


class Start(msgspec.Struct, frozen=True, tag=True):
    manual: bool = False
    """By API (resets the crash counter) rather than on demand."""


class Stop(msgspec.Struct, frozen=True, tag=True):
    reason: StopReason = StopReason.API
    detail: str | None = None
    """For the events stream: ``evicted for qwen``."""


class Restart(msgspec.Struct, frozen=True, tag=True):
    pass


class Ready(msgspec.Struct, frozen=True, tag=True):
    pass


class StartFailed(msgspec.Struct, frozen=True, tag=True):
    error: str
    timed_out: bool = False
    """Not ready by the start deadline (a 504 for those who wait), rather than failed (a 503)."""


class Exited(msgspec.Struct, frozen=True, tag=True):
    code: int
    stable: bool = False
    """It had been ready for the stable period: the crash counts as the first again."""


class Drained(msgspec.Struct, frozen=True, tag=True):
    """No request in flight any more, or the drain timeout passed."""


class BackoffElapsed(msgspec.Struct, frozen=True, tag=True):
    pass


Event = Start | Stop | Restart | Ready | StartFailed | Exited | Drained | BackoffElapsed


# Effects ----------------------------------------------------------------------------------------


class Spawn(msgspec.Struct, frozen=True, tag=True):
    """Start the process and its readiness probe."""


class CancelProbe(msgspec.Struct, frozen=True, tag=True):
    pass


class AwaitDrain(msgspec.Struct, frozen=True, tag=True):
    """Post Drained once no request is in flight, or after the drain timeout."""


class Terminate(msgspec.Struct, frozen=True, tag=True):
    """SIGTERM the group, SIGKILL it after the grace period; its exit arrives as Exited."""


class Release(msgspec.Struct, frozen=True, tag=True):
    """The process is gone: free its port and its ledger entry."""


class ScheduleRestart(msgspec.Struct, frozen=True, tag=True):
    delay: float


class CancelRestart(msgspec.Struct, frozen=True, tag=True):
    pass


class RecordFailure(msgspec.Struct, frozen=True, tag=True):
    error: str


class Persist(msgspec.Struct, frozen=True, tag=True):
    was_running: bool


Effect = (
    Spawn
    | CancelProbe
    | AwaitDrain
    | Terminate
    | Release
    | ScheduleRestart
    | CancelRestart
    | RecordFailure
    | Persist
)

MAX_RESTART_DELAY = 300.0


def restart_delay(attempt: int, base_seconds: float) -> float:
    """Exponential back-off: base, 2x base, 4x base … capped at five minutes."""
    return float(min(base_seconds * 2 ** (attempt - 1), MAX_RESTART_DELAY))


def transition(state: Lifecycle, event: Event, policy: CrashPolicy) -> tuple[Lifecycle, list[Effect]]:
    """The next state and what to do. An event that does not apply leaves the state as it is."""
    phase = state.phase
    replace = msgspec.structs.replace
    match event:
        case Start(manual=manual):
            restarts = 0 if manual else state.restarts
            if phase in (Phase.STOPPED, Phase.FAILED):
                return Lifecycle(Phase.STARTING, restarts=restarts), [Spawn()]
            if phase is Phase.BACKOFF:
                return Lifecycle(Phase.STARTING, restarts=restarts), [CancelRestart(), Spawn()]
            if phase in (Phase.DRAINING, Phase.STOPPING):
                return replace(state, then=Then.START, restarts=restarts), []
            return replace(state, restarts=restarts), []  # starting or running already
        case Stop(reason=reason):
            was_running = reason is StopReason.SHUTDOWN
            if phase is Phase.STARTING:
                stopping = Lifecycle(Phase.STOPPING, Then.STOP, reason, state.restarts)
                return stopping, [CancelProbe(), Terminate()]
            if phase is Phase.RUNNING:
                return Lifecycle(Phase.DRAINING, Then.STOP, reason, state.restarts), [AwaitDrain()]
            if phase in (Phase.DRAINING, Phase.STOPPING):
                return replace(state, then=Then.STOP, stop_reason=reason), []
            if phase is Phase.BACKOFF:
                stopped = Lifecycle(Phase.STOPPED, stop_reason=reason, restarts=state.restarts)
                return stopped, [CancelRestart(), Persist(was_running)]
            if phase is Phase.STOPPED or reason is StopReason.SHUTDOWN:
                # Nothing runs; a failed instance stays failed across a restart of llamactl.
                return state, []
            stopped = Lifecycle(Phase.STOPPED, stop_reason=reason, restarts=state.restarts)
            return stopped, [Persist(was_running)]
        case Restart():
            if phase is Phase.STARTING:
                return Lifecycle(Phase.STOPPING, Then.START, None, state.restarts), [
                    CancelProbe(),
                    Terminate(),
                ]
            if phase is Phase.RUNNING:
                return Lifecycle(Phase.DRAINING, Then.START, None, state.restarts), [AwaitDrain()]
            if phase in (Phase.DRAINING, Phase.STOPPING):
                return replace(state, then=Then.START), []
            if phase is Phase.BACKOFF:
                return Lifecycle(Phase.STARTING, restarts=0), [CancelRestart(), Spawn()]
            return Lifecycle(Phase.STARTING, restarts=0), [Spawn()]
        case Ready():
            if phase is Phase.STARTING:
                return Lifecycle(Phase.RUNNING, restarts=state.restarts), [Persist(True)]
            return state, []
        case StartFailed(error=error):
            if phase is Phase.STARTING:
                failing = Lifecycle(Phase.STOPPING, Then.FAIL, None, state.restarts)
                return failing, [CancelProbe(), RecordFailure(error), Terminate()]
            return state, []
        case Exited(code=code, stable=stable):
            return _exited(state, code, stable, policy)
        case Drained():
            if phase is Phase.DRAINING:
                return replace(state, phase=Phase.STOPPING), [Terminate()]
            return state, []
        case BackoffElapsed():
            if phase is Phase.BACKOFF:
                return replace(state, phase=Phase.STARTING), [Spawn()]
            return state, []


def _exited(state: Lifecycle, code: int, stable: bool, policy: CrashPolicy) -> tuple[Lifecycle, list[Effect]]:
    phase = state.phase
    if phase is Phase.STARTING:
        error = f"exited with code {code} while starting"
        failed = Lifecycle(Phase.FAILED, restarts=state.restarts)
        return failed, [CancelProbe(), Release(), RecordFailure(error), Persist(False)]
    if phase is Phase.RUNNING:
        restarts = 0 if stable else state.restarts
        failure: list[Effect] = [Release(), RecordFailure(f"exited unexpectedly with code {code}")]
        if not policy.auto_restart or restarts >= policy.max_restarts:
            # Failed stays failed: not started again at the next boot.
            return Lifecycle(Phase.FAILED, restarts=restarts), [*failure, Persist(False)]
        delay = restart_delay(restarts + 1, policy.restart_delay)
        return Lifecycle(Phase.BACKOFF, restarts=restarts + 1), [*failure, ScheduleRestart(delay)]
    if phase in (Phase.DRAINING, Phase.STOPPING):
        if state.then is Then.START:
            return Lifecycle(Phase.STARTING, restarts=state.restarts), [Release(), Spawn()]
        if state.then is Then.FAIL:
            return Lifecycle(Phase.FAILED, restarts=state.restarts), [Release(), Persist(False)]
        reason = state.stop_reason
        was_running = reason is StopReason.SHUTDOWN
        stopped = Lifecycle(Phase.STOPPED, stop_reason=reason, restarts=state.restarts)
        return stopped, [Release(), Persist(was_running)]
    return state, []
