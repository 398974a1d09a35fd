"""Scheduling decisions as pure functions: the swap policy and the idle rule.

No I/O and no clock of their own (``now`` is an argument), so they are tested
without a single process. The manager calls ``plan_swaps`` after anything
that can change the answer and carries out what it returns.

The swap policy, when capacity is full (``max_running_instances``, group
limits): requests for an instance that is not running wait in its queue.
The instance whose oldest request has waited longest goes first. It takes
the place of an instance with nothing in flight and nothing queued at once
(least recently used first). Otherwise, once its oldest request has waited
longer than the fairness window, the running instance stops taking new
requests, lets those in flight finish, and is swapped out. Alternating clients
then cost one swap per round, not one per request, and no request in flight
is ever cut. Pinned instances (``idle_timeout: 0``) are never swapped out.

Memory is one more limit of the same kind, counted in bytes instead of
instances: with a ``memory_budget``, a start whose memory (the estimate, or
what it used when it last ran) would take the instances past the budget makes
room the same way, idle instances first. One that needs more than the whole
budget is refused at once, and nothing is stopped for it; one that waits for
busy instances carries the figures, so its answer can name them.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from llamactl.sizes import format_bytes


class Occupancy(StrEnum):
    """How an instance stands towards capacity."""

    FREE = "free"
    """Stopped or failed: holds no capacity."""
    HOLDING = "holding"
    """Starting, running, or waiting out a crash back-off."""
    LEAVING = "leaving"
    """Being stopped: still holds capacity, frees it soon."""


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """An instance as the swap policy sees it."""

    name: str
    group: str | None = None
    occupancy: Occupancy
    running: bool = False
    """Ready and taking requests (a subset of HOLDING)."""
    restarting: bool = False
    """Waiting out a crash back-off (a subset of HOLDING)."""
    pinned: bool = False
    """idle_timeout 0: never swapped out or idle-stopped."""
    in_flight: int = 0
    queued: int = 0
    oldest_arrival: float | None = None
    """When the oldest queued request arrived."""
    owed: int = 0
    """Requests that waited for this instance's start and are not yet served: it stays until they are."""
    startable: bool = True
    """On-demand start allowed (and llamactl not shutting down)."""
    last_used: float = 0.0
    memory_bytes: int = 0
    """What it holds (measured while it runs) or would hold (estimated); 0 when unknown."""


class CapacityLimits(msgspec.Struct, frozen=True):
    max_running: int
    """-1: unlimited."""
    group_limits: dict[str, int]
    lru_eviction: bool
    memory_budget: int | None = None
    """Bytes all instances may hold together; None: memory is not counted."""


class SwapPlan(msgspec.Struct):
    start: list[str] = []
    stop: dict[str, str] = {}
    """Victim -> the instance it makes room for."""
    close: dict[str, str] = {}
    """Running instances that take no new requests until swapped out -> for whom."""
    refuse: dict[str, str] = {}
    """Instances whose queued requests cannot be served at all -> why."""
    wake_at: float | None = None
    """When the plan changes by itself (a fairness window ends): ask again then."""
    waiting: dict[str, str] = {}
    """Instances that wait for room (memory) -> what they wait for, with the figures."""


class Shortfall(msgspec.Struct, frozen=True):
    """A limit a start would break: who counts towards it, and how much of it must be freed."""

    label: str
    pool: list[str]
    need: int
    in_bytes: bool = False
    """Memory: ``need`` is bytes, and an instance frees its ``memory_bytes``; else a count of instances."""

    def weight(self, candidate: Candidate) -> int:
        """What stopping ``candidate`` frees of this limit."""
        return candidate.memory_bytes if self.in_bytes else 1


def plan_swaps(
    candidates: list[Candidate], limits: CapacityLimits, now: float, fairness_window: float
) -> SwapPlan:
    by_name = {c.name: c for c in candidates}
    holders = {c.name for c in candidates if c.occupancy is not Occupancy.FREE}
    leaving = {c.name for c in candidates if c.occupancy is Occupancy.LEAVING}
    spent: set[str] = set()
    """Instances whose capacity an earlier (longer-waiting) instance of this round counts on."""
    plan = SwapPlan()
    wanted = sorted(
        (c for c in candidates if c.occupancy is Occupancy.FREE and c.queued and c.startable),
        key=lambda c: (c.oldest_arrival or 0.0, c.name),
    )
    for want in wanted:
        budget = limits.memory_budget
        if budget is not None and want.memory_bytes > budget:
            plan.refuse[want.name] = (
                f"{want.name} needs ~{format_bytes(want.memory_bytes)}, more than the whole memory budget "
                f"of {format_bytes(budget)} (instances.memory_budget)"
            )
            continue
        shortfalls = _shortfalls(want, holders, by_name, limits)
        holders.add(want.name)  # reserved: instances later in the round count it as taken
        if not shortfalls:
            plan.start.append(want.name)
        elif not limits.lru_eviction:
            plan.refuse[want.name] = f"{shortfalls[0].label} reached and LRU eviction is off"
        else:
            room = _make_room(want, shortfalls, by_name, leaving, spent, plan, now, fairness_window)
            if room is None:
                holders.discard(want.name)
            else:
                holders -= room  # their places are the wanted instance's now
    return plan


def _make_room(
    want: Candidate,
    shortfalls: list[Shortfall],
    by_name: dict[str, Candidate],
    leaving: set[str],
    spent: set[str],
    plan: SwapPlan,
    now: float,
    fairness_window: float,
) -> set[str] | None:
    """What must go for ``want``: leaving instances, then idle ones, then (past the window) busy ones.

    Returns the instances whose places ``want`` takes, or None when it cannot be served at all.
    """
    mine: set[str] = set()
    stop: dict[str, str] = {}
    close: dict[str, str] = {}
    deadline = (want.oldest_arrival if want.oldest_arrival is not None else now) + fairness_window
    for shortfall in shortfalls:
        weight = shortfall.weight
        need = shortfall.need - sum(weight(by_name[n]) for n in mine.intersection(shortfall.pool))
        for name in [n for n in shortfall.pool if n in leaving and n not in spent and n not in mine]:
            if need <= 0:
                break
            mine.add(name)
            need -= weight(by_name[name])
        idle = sorted(
            (
                by_name[n]
                for n in shortfall.pool
                if n not in spent and n not in mine and _evictable_now(by_name[n]) and weight(by_name[n])
            ),
            key=lambda c: c.last_used,
        )
        for victim in idle:
            if need <= 0:
                break
            stop[victim.name] = want.name
            mine.add(victim.name)
            need -= weight(victim)
        if need <= 0:
            continue
        open_pool = [by_name[n] for n in shortfall.pool if n not in spent and n not in mine]
        if sum(weight(c) for c in open_pool if not c.pinned) < need:
            pinned = [c for c in open_pool if c.pinned]
            plan.refuse[want.name] = (
                f"{_reached(want, shortfall, by_name, pinned, 'pinned')} and the instances that hold it "
                "are pinned (idle_timeout 0)"
            )
            return None
        busy = [c for c in open_pool if _swappable_when_drained(c) and weight(c)]
        if sum(weight(c) for c in busy) < need or now < deadline:
            holding = [c for c in open_pool if not c.pinned]
            plan.waiting[want.name] = _reached(want, shortfall, by_name, holding, "busy")
            if sum(weight(c) for c in busy) >= need:
                plan.wake_at = deadline if plan.wake_at is None else min(plan.wake_at, deadline)
            continue  # wait for their requests, or for the window to end
        # The fewest requests to wait for first, then the least recently used.
        for victim in sorted(busy, key=lambda c: (c.in_flight, c.last_used)):
            if need <= 0:
                break
            (stop if victim.in_flight == 0 else close)[victim.name] = want.name
            mine.add(victim.name)
            need -= weight(victim)
    spent.update(mine)
    plan.stop.update(stop)
    plan.close.update(close)
    return mine


def _reached(
    want: Candidate, shortfall: Shortfall, by_name: dict[str, Candidate], holders: list[Candidate], kind: str
) -> str:
    """The limit in words; for memory with the figures: 'qwen needs ~9.1 GiB, 3.2 GiB free of …'."""
    if not shortfall.in_bytes:
        return f"{shortfall.label} reached"
    held = sum(by_name[n].memory_bytes for n in shortfall.pool)
    budget = held + want.memory_bytes - shortfall.need
    named = ", ".join(f"{c.name} {format_bytes(c.memory_bytes)}" for c in holders)
    return (
        f"{want.name} needs ~{format_bytes(want.memory_bytes)}, {format_bytes(max(budget - held, 0))} free "
        f"of the {format_bytes(budget)} memory budget" + (f"; {kind}: {named}" if named else "")
    )


def _shortfalls(
    want: Candidate, holders: set[str], by_name: dict[str, Candidate], limits: CapacityLimits
) -> list[Shortfall]:
    """Each limit ``want`` would break if it started now."""
    shortfalls = []
    group_limit = limits.group_limits.get(want.group) if want.group is not None else None
    if group_limit is not None:
        in_group = [n for n in holders if by_name[n].group == want.group and n != want.name]
        if len(in_group) + 1 > group_limit:
            label = f"the limit of group {want.group} ({group_limit})"
            shortfalls.append(Shortfall(label, in_group, len(in_group) + 1 - group_limit))
    others = [n for n in holders if n != want.name]
    if limits.max_running >= 0 and len(others) + 1 > limits.max_running:
        label = f"max_running_instances ({limits.max_running})"
        shortfalls.append(Shortfall(label, others, len(others) + 1 - limits.max_running))
    if limits.memory_budget is not None:
        over = sum(by_name[n].memory_bytes for n in others) + want.memory_bytes - limits.memory_budget
        if over > 0:
            shortfalls.append(Shortfall("instances.memory_budget", others, over, in_bytes=True))
    return shortfalls


def _evictable_now(candidate: Candidate) -> bool:
    """Running or restarting after a crash, with nothing in flight, queued or owed: it may go at once."""
    return (
        (candidate.running or candidate.restarting)
        and not candidate.pinned
        and candidate.in_flight == 0
        and candidate.queued == 0
        and candidate.owed == 0
    )


def _swappable_when_drained(candidate: Candidate) -> bool:
    """Running with requests of its own, but none owed from its start: it may be swapped out after them."""
    return candidate.running and not candidate.pinned and candidate.owed == 0


class IdleCandidate(msgspec.Struct, frozen=True):
    name: str
    idle_timeout_minutes: int
    busy: bool
    """A request in flight or queued."""
    last_used: float
    """When the last request ended (or the instance became ready)."""


def idle_instances(candidates: list[IdleCandidate], now: float) -> list[str]:
    """Running instances past their idle timeout; 0 never idles, a busy instance never idles."""
    return [
        c.name
        for c in candidates
        if c.idle_timeout_minutes > 0 and not c.busy and now - c.last_used >= c.idle_timeout_minutes * 60
    ]


class PressureCandidate(msgspec.Struct, frozen=True):
    """A running instance as the pressure rule sees it."""

    name: str
    busy: bool
    """A request in flight or queued: never stopped for pressure."""
    pinned: bool
    last_used: float
    memory_bytes: int
    """What stopping it frees (0 when unknown: it is stopped all the same, freeing what it does)."""


def pressure_victims(
    candidates: list[PressureCandidate], used_bytes: int, total_bytes: int, threshold_percent: float
) -> list[str]:
    """Idle instances to stop, least recently used first, until memory use is back under the threshold."""
    limit = total_bytes * threshold_percent / 100
    victims = []
    for candidate in sorted(candidates, key=lambda c: c.last_used):
        if used_bytes <= limit:
            break
        if candidate.busy or candidate.pinned:
            continue
        victims.append(candidate.name)
        used_bytes -= candidate.memory_bytes
    return victims
