"""Eviction, idle and back-off decisions, without a single process."""

import pytest

from llamactl.instance.errors import LimitReached
from llamactl.instance.scheduling import (
    ActiveInstance,
    CapacityLimits,
    IdleCandidate,
    idle_instances,
    plan_evictions,
    restart_delay,
)


def active(name: str, last_used: float, group: str | None = None, evictable: bool = True) -> ActiveInstance:
    return ActiveInstance(name=name, group=group, evictable=evictable, last_used=last_used)


def limits(max_running: int = -1, groups: dict[str, int] | None = None, lru: bool = True) -> CapacityLimits:
    return CapacityLimits(max_running=max_running, group_limits=groups or {}, lru_eviction=lru)


def test_no_limit_evicts_nothing() -> None:
    assert plan_evictions("c", None, [active("a", 1), active("b", 2)], limits()) == []


def test_global_limit_evicts_the_least_recently_used() -> None:
    running = [active("a", 5), active("b", 1), active("c", 3)]
    assert plan_evictions("d", None, running, limits(max_running=3)) == ["b"]
    assert plan_evictions("d", None, running, limits(max_running=2)) == ["b", "c"]


def test_pinned_busy_and_starting_instances_are_never_evicted() -> None:
    running = [active("pinned", 0, evictable=False), active("idle", 9)]
    assert plan_evictions("new", None, running, limits(max_running=2)) == ["idle"]
    with pytest.raises(LimitReached, match="pinned"):
        plan_evictions("new", None, [active("pinned", 0, evictable=False)], limits(max_running=1))


def test_group_limit_evicts_within_the_group_only() -> None:
    running = [active("a", 1, group="gpu0"), active("b", 2, group="gpu1"), active("c", 3, group="gpu0")]
    assert plan_evictions("d", "gpu0", running, limits(groups={"gpu0": 2})) == ["a"]
    assert plan_evictions("d", "gpu1", running, limits(groups={"gpu0": 2})) == []


def test_group_and_global_limits_together() -> None:
    running = [active("a", 1, group="g"), active("b", 2)]
    # the group eviction already frees the global slot
    assert plan_evictions("c", "g", running, limits(max_running=2, groups={"g": 1})) == ["a"]
    assert plan_evictions("c", "g", running, limits(max_running=1, groups={"g": 1})) == ["a", "b"]


def test_eviction_off_refuses() -> None:
    with pytest.raises(LimitReached, match="LRU eviction is off"):
        plan_evictions("b", None, [active("a", 1)], limits(max_running=1, lru=False))


def test_restarting_the_same_instance_does_not_count_itself() -> None:
    assert plan_evictions("a", None, [active("a", 1)], limits(max_running=1)) == []


def test_idle_rule() -> None:
    candidates = [
        IdleCandidate("old", idle_timeout_minutes=1, in_flight=0, last_used=0),
        IdleCandidate("busy", idle_timeout_minutes=1, in_flight=1, last_used=0),
        IdleCandidate("pinned", idle_timeout_minutes=0, in_flight=0, last_used=0),
        IdleCandidate("recent", idle_timeout_minutes=1, in_flight=0, last_used=30),
    ]
    assert idle_instances(candidates, now=60) == ["old"]
    assert idle_instances(candidates, now=90) == ["old", "recent"]


def test_restart_backoff_doubles_and_caps() -> None:
    assert [restart_delay(n, 5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert restart_delay(20, 5) == 300
