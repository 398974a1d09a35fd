"""Scheduling decisions as pure functions: what to evict, what is idle, how long to back off.

No I/O and no clock of their own, so they are tested without a single process.
"""

from __future__ import annotations

import msgspec

from llamactl.instance.errors import LimitReached

MAX_RESTART_DELAY = 300.0


class ActiveInstance(msgspec.Struct, frozen=True):
    """An instance that holds capacity: running, or starting (which is never evicted)."""

    name: str
    group: str | None
    evictable: bool
    """Running, idle_timeout > 0 (0 pins it) and no request in flight."""
    last_used: float


class CapacityLimits(msgspec.Struct, frozen=True):
    max_running: int
    """-1: unlimited."""
    group_limits: dict[str, int]
    lru_eviction: bool


def plan_evictions(
    name: str, group: str | None, active: list[ActiveInstance], limits: CapacityLimits
) -> list[str]:
    """The instances to stop, least recently used first, so that ``name`` may start.

    Raises LimitReached when the limits cannot be met: eviction is off, or
    everything that would have to go is pinned, busy or still starting.
    """
    others = [instance for instance in active if instance.name != name]
    candidates = sorted((i for i in others if i.evictable), key=lambda i: i.last_used)
    chosen: list[str] = []

    def evict(pool: list[ActiveInstance], count: int, limit_name: str, limit: int) -> None:
        if count <= 0:
            return
        available = [i.name for i in pool if i.name not in chosen]
        if not limits.lru_eviction:
            raise LimitReached(f"{limit_name} ({limit}) reached and LRU eviction is off")
        if len(available) < count:
            raise LimitReached(
                f"{limit_name} ({limit}) reached and every running instance is pinned "
                "(idle_timeout 0), serving requests or starting"
            )
        chosen.extend(available[:count])

    group_limit = limits.group_limits.get(group) if group is not None else None
    if group_limit is not None:
        in_group = [i for i in others if i.group == group]
        evict(
            [i for i in candidates if i.group == group],
            len(in_group) + 1 - group_limit,
            f"the limit of group {group}",
            group_limit,
        )
    if limits.max_running >= 0:
        remaining = len(others) - len(chosen)
        evict(candidates, remaining + 1 - limits.max_running, "max_running_instances", limits.max_running)
    return chosen


class IdleCandidate(msgspec.Struct, frozen=True):
    name: str
    idle_timeout_minutes: int
    in_flight: int
    last_used: float
    """When the last request ended (or the instance became ready)."""


def idle_instances(candidates: list[IdleCandidate], now: float) -> list[str]:
    """Running instances past their idle timeout; 0 never idles, a request in flight never idles."""
    return [
        c.name
        for c in candidates
        if c.idle_timeout_minutes > 0
        and c.in_flight == 0
        and now - c.last_used >= c.idle_timeout_minutes * 60
    ]


def restart_delay(attempt: int, base_seconds: float) -> float:
    """Exponential back-off: base, 2x base, 4x base … capped at five minutes."""
    return float(min(base_seconds * 2 ** (attempt - 1), MAX_RESTART_DELAY))
