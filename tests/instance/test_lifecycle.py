"""The lifecycle transition table, walked pair by pair: every (phase, event), refused ones included."""

import itertools

import pytest

from llamactl.instance.lifecycle import (
    AwaitDrain,
    BackoffElapsed,
    CancelProbe,
    CancelRestart,
    CrashPolicy,
    Drained,
    Event,
    Exited,
    Lifecycle,
    Persist,
    Phase,
    Ready,
    RecordFailure,
    Release,
    Restart,
    ScheduleRestart,
    Spawn,
    Start,
    StartFailed,
    Stop,
    StopReason,
    Terminate,
    Then,
    transition,
)

RESTART = CrashPolicy(auto_restart=True, max_restarts=3, restart_delay=1.0)
EVENTS: dict[str, Event] = {
    "start": Start(),
    "stop": Stop(StopReason.API),
    "restart": Restart(),
    "ready": Ready(),
    "start_failed": StartFailed("boom"),
    "exited": Exited(1),
    "drained": Drained(),
    "backoff_elapsed": BackoffElapsed(),
}
S, G, R, D, T, B, F = (
    Phase.STOPPED,
    Phase.STARTING,
    Phase.RUNNING,
    Phase.DRAINING,
    Phase.STOPPING,
    Phase.BACKOFF,
    Phase.FAILED,
)
# (phase, event) -> (next phase, effect types). Pairs not listed are refused: no change, no effect.
TABLE: dict[tuple[Phase, str], tuple[Phase, list[type]]] = {
    (S, "start"): (G, [Spawn]),
    (S, "restart"): (G, [Spawn]),
    (G, "stop"): (T, [CancelProbe, Terminate]),
    (G, "restart"): (T, [CancelProbe, Terminate]),
    (G, "ready"): (R, [Persist]),
    (G, "start_failed"): (T, [CancelProbe, RecordFailure, Terminate]),
    (G, "exited"): (F, [CancelProbe, Release, RecordFailure, Persist]),
    (R, "stop"): (D, [AwaitDrain]),
    (R, "restart"): (D, [AwaitDrain]),
    (R, "exited"): (B, [Release, RecordFailure, ScheduleRestart]),
    (D, "exited"): (S, [Release, Persist]),
    (D, "drained"): (T, [Terminate]),
    (T, "exited"): (S, [Release, Persist]),
    (B, "start"): (G, [CancelRestart, Spawn]),
    (B, "stop"): (S, [CancelRestart, Persist]),
    (B, "restart"): (G, [CancelRestart, Spawn]),
    (B, "backoff_elapsed"): (G, [Spawn]),
    (F, "start"): (G, [Spawn]),
    (F, "stop"): (S, [Persist]),
    (F, "restart"): (G, [Spawn]),
}
# Pairs that change only what happens next (``then``), not the phase.
THEN_ONLY = {(D, "start"), (D, "stop"), (D, "restart"), (T, "start"), (T, "stop"), (T, "restart")}


@pytest.mark.parametrize(("phase", "event_name"), list(itertools.product(Phase, EVENTS)))
def test_every_pair_of_phase_and_event(phase: Phase, event_name: str) -> None:
    state = Lifecycle(phase)
    new, effects = transition(state, EVENTS[event_name], RESTART)
    expected = TABLE.get((phase, event_name))
    if expected is None:
        assert new.phase is phase and effects == []
        if (phase, event_name) not in THEN_ONLY:
            assert new == state
        return
    assert (new.phase, [type(e) for e in effects]) == expected


def test_a_restart_is_not_a_stop_it_starts_again_once_the_process_is_gone() -> None:
    state, _ = transition(Lifecycle(R), Restart(), RESTART)
    state, _ = transition(state, Drained(), RESTART)
    state, effects = transition(state, Exited(0), RESTART)
    assert state.phase is G and [type(e) for e in effects] == [Release, Spawn]


def test_a_stop_during_a_restart_wins_and_the_last_word_counts() -> None:
    state, _ = transition(Lifecycle(R), Restart(), RESTART)
    state, _ = transition(state, Stop(StopReason.API), RESTART)
    assert state.then is Then.STOP
    state, _ = transition(state, Start(), RESTART)
    assert state.then is Then.START


def test_a_start_that_timed_out_fails_once_the_process_is_gone() -> None:
    state, _ = transition(Lifecycle(G), StartFailed("not ready in time"), RESTART)
    state, effects = transition(state, Exited(137), RESTART)
    assert state.phase is F and effects == [Release(), Persist(was_running=False)]


def test_crashes_back_off_doubling_then_fail_past_max_restarts() -> None:
    state = Lifecycle(R)
    delays = []
    for _ in range(3):
        state, effects = transition(state, Exited(1), RESTART)
        delays += [e.delay for e in effects if isinstance(e, ScheduleRestart)]
        state = Lifecycle(R, restarts=state.restarts)
    assert delays == [1.0, 2.0, 4.0]
    state, effects = transition(state, Exited(1), RESTART)
    assert state.phase is F and not any(isinstance(e, ScheduleRestart) for e in effects)
    assert Persist(was_running=False) in effects  # failed stays failed: not started at the next boot


def test_a_crash_after_a_stable_period_counts_as_the_first() -> None:
    state, effects = transition(Lifecycle(R, restarts=3), Exited(1, stable=True), RESTART)
    assert state.phase is B and state.restarts == 1
    assert [e.delay for e in effects if isinstance(e, ScheduleRestart)] == [1.0]


def test_no_auto_restart_fails_at_the_first_crash() -> None:
    policy = CrashPolicy(auto_restart=False, max_restarts=3, restart_delay=1.0)
    assert transition(Lifecycle(R), Exited(1), policy)[0].phase is F


def test_a_manual_start_resets_the_crash_counter_an_on_demand_one_does_not() -> None:
    assert transition(Lifecycle(F, restarts=3), Start(manual=True), RESTART)[0].restarts == 0
    assert transition(Lifecycle(F, restarts=3), Start(), RESTART)[0].restarts == 3


def test_only_a_shutdown_keeps_was_running_and_a_failed_instance_stays_failed_across_it() -> None:
    def persisted(state: Lifecycle, reason: StopReason) -> list[bool]:
        state, _ = transition(state, Stop(reason), RESTART)
        state, _ = transition(state, Drained(), RESTART)
        _, effects = transition(state, Exited(0), RESTART)
        return [e.was_running for e in effects if isinstance(e, Persist)]

    assert persisted(Lifecycle(R), StopReason.SHUTDOWN) == [True]
    for reason in (StopReason.API, StopReason.IDLE, StopReason.EVICTED, StopReason.RELOAD):
        assert persisted(Lifecycle(R), reason) == [False]
    assert transition(Lifecycle(F), Stop(StopReason.SHUTDOWN), RESTART)[0].phase is F
