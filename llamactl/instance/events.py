"""What happens to instances, published as it happens: transitions, queue changes, starts and stops.

A bounded ring keeps the latest events, so a subscriber that reconnects with
the last id it saw (SSE's ``Last-Event-ID``) misses nothing the ring still
holds; older ones are gone, and it is told so by a gap in the ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

import msgspec

RING_SIZE = 1000


class EventKind(StrEnum):
    STATUS = "status"
    """An instance changed status; ``reason`` says why (on demand, idle, evicted for X, crashed, …)."""
    QUEUE = "queue"
    """The number of requests waiting for an instance changed (with those in flight then)."""


class InstanceEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    time: float
    """Unix seconds."""
    kind: EventKind
    instance: str
    status: str | None = None
    previous: str | None = None
    reason: str | None = None
    """For people: ``evicted for qwen``, ``exited with code 1 (crashed)``."""
    cause: str | None = None
    """For programs (the metrics): ``on_demand``, ``api``, ``restart``, ``ready``, ``start_failed``,
    ``crash``, ``exit``, or a stop's reason (``api``, ``idle``, ``evicted``, ``reload``, ``shutdown``)."""
    queued: int | None = None
    in_flight: int | None = None
    swap_seconds: float | None = None
    """On the ready of a start that other instances were stopped for: seconds from that decision."""


EventListener = Callable[[InstanceEvent], None]


class EventBus:
    def __init__(self, ring_size: int = RING_SIZE) -> None:
        self._ring: deque[InstanceEvent] = deque(maxlen=ring_size)
        self._next_id = 1
        self._changed = asyncio.Event()
        self._listeners: list[EventListener] = []
        self.ended = False
        """llamactl is stopping: subscribers stop waiting (``end_subscribers``)."""

    def listen(self, listener: EventListener) -> None:
        """Call ``listener`` with every event as it is published, on the event loop (it must not block)."""
        self._listeners.append(listener)

    def publish(
        self,
        kind: EventKind,
        instance: str,
        *,
        status: str | None = None,
        previous: str | None = None,
        reason: str | None = None,
        cause: str | None = None,
        queued: int | None = None,
        in_flight: int | None = None,
        swap_seconds: float | None = None,
    ) -> InstanceEvent:
        event = InstanceEvent(
            id=self._next_id,
            time=time.time(),
            kind=kind,
            instance=instance,
            status=status,
            previous=previous,
            reason=reason,
            cause=cause,
            queued=queued,
            in_flight=in_flight,
            swap_seconds=swap_seconds,
        )
        self._next_id += 1
        self._ring.append(event)
        for listener in self._listeners:
            listener(event)
        # Wake every subscriber, then arm the next wake-up.
        self._changed.set()
        self._changed = asyncio.Event()
        return event

    def end_subscribers(self) -> None:
        """Wake every subscriber for the last time: an endless stream must not hold up a shutdown."""
        self.ended = True
        self._changed.set()

    def since(self, last_id: int) -> list[InstanceEvent]:
        """Events after ``last_id`` that the ring still holds."""
        return [event for event in self._ring if event.id > last_id]

    async def wait_after(self, last_id: int, timeout: float) -> list[InstanceEvent]:
        """Events after ``last_id``; if there are none yet, the first ones within ``timeout`` seconds.

        Safe to cancel or time out: a subscriber loops on it with the id of the
        last event it got.
        """
        events = self.since(last_id)
        if not events and not self.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            events = self.since(last_id)
        return events

    @property
    def last_id(self) -> int:
        return self._next_id - 1
