"""The swap policy and the idle rule, without a single process."""

from llamactl.instance.lifecycle import restart_delay
from llamactl.instance.scheduling import (
    Candidate,
    CapacityLimits,
    IdleCandidate,
    Occupancy,
    PressureCandidate,
    SwapPlan,
    idle_instances,
    plan_swaps,
    pressure_victims,
)

WINDOW = 10.0


def running(name: str, last_used: float = 0, **fields: object) -> Candidate:
    return Candidate(name=name, occupancy=Occupancy.HOLDING, running=True, last_used=last_used, **fields)  # type: ignore[arg-type]


def wanting(name: str, arrived: float = 0, queued: int = 1, **fields: object) -> Candidate:
    return Candidate(name=name, occupancy=Occupancy.FREE, queued=queued, oldest_arrival=arrived, **fields)  # type: ignore[arg-type]


def limits(max_running: int = -1, groups: dict[str, int] | None = None, lru: bool = True) -> CapacityLimits:
    return CapacityLimits(max_running=max_running, group_limits=groups or {}, lru_eviction=lru)


def plan(candidates: list[Candidate], limit: CapacityLimits, now: float = 1.0) -> SwapPlan:
    return plan_swaps(candidates, limit, now, WINDOW)


def test_room_to_spare_starts_every_wanted_instance_oldest_first() -> None:
    result = plan([wanting("b", arrived=2), wanting("a", arrived=1)], limits(max_running=2))
    assert result.start == ["a", "b"] and not result.stop and not result.close


def test_a_stopped_instance_nobody_waits_for_is_left_alone() -> None:
    assert plan([Candidate(name="a", occupancy=Occupancy.FREE)], limits()).start == []


def test_an_idle_instance_makes_room_at_once_least_recently_used_first() -> None:
    result = plan([running("a", last_used=5), running("b", last_used=1), wanting("c")], limits(max_running=2))
    assert result.stop == {"b": "c"} and result.start == []


def test_a_busy_instance_keeps_serving_until_the_fairness_window_ends() -> None:
    candidates = [running("a", in_flight=1), wanting("b", arrived=0)]
    early = plan(candidates, limits(max_running=1), now=WINDOW - 1)
    assert not early.stop and not early.close and early.wake_at == WINDOW
    late = plan(candidates, limits(max_running=1), now=WINDOW)
    assert late.close == {"a": "b"} and not late.stop  # drains its request first


def test_past_the_window_an_instance_with_only_queued_requests_is_swapped_out() -> None:
    candidates = [running("a", queued=3, oldest_arrival=1.0), wanting("b", arrived=0)]
    assert plan(candidates, limits(max_running=1), now=WINDOW).stop == {"a": "b"}


def test_an_instance_still_owing_its_own_waiters_is_not_swapped_out_but_waited_for() -> None:
    candidates = [running("a", in_flight=2, owed=1), wanting("b", arrived=0)]
    result = plan(candidates, limits(max_running=1), now=100)
    assert not result.stop and not result.close and not result.refuse


def test_pinned_instances_and_eviction_off_refuse_instead_of_waiting_forever() -> None:
    pinned = plan([running("p", pinned=True), wanting("b")], limits(max_running=1))
    assert "pinned" in pinned.refuse["b"] and not pinned.stop
    off = plan([running("a"), wanting("b")], limits(max_running=1, lru=False))
    assert "LRU eviction is off" in off.refuse["b"]


def test_a_starting_instance_is_never_a_victim_but_waited_for() -> None:
    starting = Candidate(name="s", occupancy=Occupancy.HOLDING)
    result = plan([starting, wanting("b")], limits(max_running=1), now=100)
    assert not result.stop and not result.close and not result.refuse


def test_a_leaving_instance_counts_as_room_for_one_wanted_instance_only() -> None:
    leaving = Candidate(name="a", occupancy=Occupancy.LEAVING)
    candidates = [leaving, running("c", in_flight=1), wanting("b", 0), wanting("d", 1)]
    result = plan(candidates, limits(max_running=2))
    # b waits for a's slot; d, later in line, must not count on it too.
    assert result.start == [] and "a" not in result.stop
    assert result.wake_at == 1 + WINDOW  # d waits for c's fairness window


def test_a_victim_is_chosen_for_one_instance_only() -> None:
    result = plan([running("a"), wanting("b", 0), wanting("c", 1)], limits(max_running=1))
    assert result.stop == {"a": "b"} and "c" not in result.stop.values()


def test_a_restarting_instance_nobody_waits_for_can_go() -> None:
    backoff = Candidate(name="r", occupancy=Occupancy.HOLDING, restarting=True)
    assert plan([backoff, wanting("b")], limits(max_running=1)).stop == {"r": "b"}


def test_group_limit_makes_room_within_the_group_only() -> None:
    candidates = [
        running("a", 1, group="gpu0"),
        running("b", 2, group="gpu1"),
        running("c", 3, group="gpu0"),
        wanting("d", group="gpu0"),
    ]
    assert plan(candidates, limits(groups={"gpu0": 2})).stop == {"a": "d"}
    other_group = [*candidates[:3], wanting("d", group="gpu1")]
    assert plan(other_group, limits(groups={"gpu0": 2})).start == ["d"]


def test_one_victim_can_satisfy_the_group_and_the_global_limit() -> None:
    candidates = [running("a", 1, group="g"), running("b", 2), wanting("c", group="g")]
    assert plan(candidates, limits(max_running=2, groups={"g": 1})).stop == {"a": "c"}
    assert plan(candidates, limits(max_running=1, groups={"g": 1})).stop == {"a": "c", "b": "c"}


def test_unstartable_instances_are_not_started() -> None:
    assert plan([wanting("a", startable=False)], limits()).start == []


def test_idle_rule() -> None:
    candidates = [
        IdleCandidate("old", idle_timeout_minutes=1, busy=False, last_used=0),
        IdleCandidate("busy", idle_timeout_minutes=1, busy=True, last_used=0),
        IdleCandidate("pinned", idle_timeout_minutes=0, busy=False, last_used=0),
        IdleCandidate("recent", idle_timeout_minutes=1, busy=False, last_used=30),
    ]
    assert idle_instances(candidates, now=60) == ["old"]
    assert idle_instances(candidates, now=90) == ["old", "recent"]


def test_restart_backoff_doubles_and_caps() -> None:
    assert [restart_delay(n, 5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert restart_delay(20, 5) == 300


GIB = 1024**3


def budget(gib: float, max_running: int = -1) -> CapacityLimits:
    return CapacityLimits(
        max_running=max_running, group_limits={}, lru_eviction=True, memory_budget=int(gib * GIB)
    )


def test_a_start_that_fits_the_memory_budget_starts_beside_what_runs() -> None:
    result = plan([running("a", memory_bytes=10 * GIB), wanting("b", memory_bytes=10 * GIB)], budget(24))
    assert result.start == ["b"] and not result.stop


def test_a_start_that_does_not_fit_evicts_idle_instances_least_recently_used_first_until_it_does() -> None:
    candidates = [
        running("old", last_used=1, memory_bytes=4 * GIB),
        running("older", last_used=0, memory_bytes=4 * GIB),
        running("recent", last_used=5, memory_bytes=12 * GIB),
        wanting("big", memory_bytes=10 * GIB),
    ]
    # 20 GiB held, 10 wanted, 24 budget: 6 GiB must go; the two least recent (8 GiB) do, the recent one stays.
    result = plan(candidates, budget(24))
    assert result.stop == {"older": "big", "old": "big"} and result.start == []


def test_a_start_larger_than_the_whole_budget_is_refused_with_the_figures_and_evicts_nothing() -> None:
    result = plan([running("a", memory_bytes=1 * GIB), wanting("huge", memory_bytes=30 * GIB)], budget(24))
    assert not result.stop and not result.start
    assert result.refuse["huge"] == (
        "huge needs ~30.0 GiB, more than the whole memory budget of 24.0 GiB (instances.memory_budget)"
    )


def test_a_start_blocked_by_a_busy_instance_waits_with_the_figures_then_swaps_after_the_window() -> None:
    candidates = [
        running("llama", in_flight=1, memory_bytes=14 * GIB),
        wanting("qwen", memory_bytes=int(9.1 * GIB)),
    ]
    early = plan(candidates, budget(16), now=1.0)
    assert not early.stop and not early.close and not early.refuse and early.wake_at == WINDOW
    assert early.waiting["qwen"] == (
        "qwen needs ~9.1 GiB, 2.0 GiB free of the 16.0 GiB memory budget; busy: llama 14.0 GiB"
    )
    late = plan(candidates, budget(16), now=WINDOW)
    assert late.close == {"llama": "qwen"}


def test_instances_whose_memory_is_unknown_free_nothing_so_they_are_not_stopped_for_memory() -> None:
    candidates = [
        running("unknown", memory_bytes=0),
        running("known", memory_bytes=20 * GIB),
        wanting("b", memory_bytes=8 * GIB),
    ]
    assert plan(candidates, budget(24)).stop == {"known": "b"}


def test_pinned_instances_holding_the_memory_refuse_the_start_with_the_figures() -> None:
    candidates = [running("pin", pinned=True, memory_bytes=20 * GIB), wanting("b", memory_bytes=8 * GIB)]
    result = plan(candidates, budget(24))
    assert result.refuse["b"] == (
        "b needs ~8.0 GiB, 4.0 GiB free of the 24.0 GiB memory budget; pinned: pin 20.0 GiB "
        "and the instances that hold it are pinned (idle_timeout 0)"
    )


def test_memory_and_count_limits_are_both_kept() -> None:
    candidates = [
        running("a", last_used=0, memory_bytes=1 * GIB),
        running("b", last_used=1, memory_bytes=20 * GIB),
        wanting("c", memory_bytes=8 * GIB),
    ]
    # max_running 2 alone would stop a (least recent); memory needs b to go as well.
    assert plan(candidates, budget(24, max_running=2)).stop == {"a": "c", "b": "c"}


def idle_running(
    name: str, last_used: float, gib: float, busy: bool = False, pinned: bool = False
) -> PressureCandidate:
    return PressureCandidate(name, busy, pinned, last_used, int(gib * GIB))


def test_under_the_pressure_threshold_nothing_is_stopped() -> None:
    assert (
        pressure_victims(
            [idle_running("a", 0, 4)], used_bytes=7 * GIB, total_bytes=10 * GIB, threshold_percent=75
        )
        == []
    )


def test_past_the_threshold_idle_instances_go_least_recently_used_first_until_under_it() -> None:
    candidates = [idle_running("recent", 9, 2), idle_running("old", 1, 1), idle_running("oldest", 0, 1)]
    # 9 of 10 GiB used, 7.5 allowed: the two oldest free 2 GiB, which is enough.
    assert pressure_victims(candidates, 9 * GIB, 10 * GIB, 75) == ["oldest", "old"]


def test_pressure_never_stops_a_busy_or_pinned_instance_even_when_still_over() -> None:
    candidates = [
        idle_running("busy", 0, 4, busy=True),
        idle_running("pinned", 1, 4, pinned=True),
        idle_running("idle", 2, 1),
    ]
    assert pressure_victims(candidates, 10 * GIB, 10 * GIB, 50) == ["idle"]
