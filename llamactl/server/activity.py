"""The activity log: one record per proxied request, the last ``activity.retention`` kept in the database.

``record()`` is called on the event loop for every proxied request, so it only
gives the record its id and appends it to a buffer. A task writes the buffer
to the store, in one transaction, every second or as soon as a batch is full;
``close()`` writes what is left. ``GET /api/v1/activity`` answers from the
store and the buffer together, so a client sees its request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from llamactl.server.asgi import number_parameter
from llamactl.server.json_body import json_response
from llamactl.server.request_outcome import RequestOutcome
from llamactl.store import MAX_ACTIVITY_TEXT, ActivityRecord, Store

FLUSH_SECONDS = 1.0
BATCH_SIZE = 100
"""Records that are written at once, without waiting for the second to pass."""
BUFFER_LIMIT = 10_000
"""Records held while none is written (before ``open``, after ``close``): past it the oldest go."""
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ACTIVITY_ID = 2**63 - 1
"""SQLite's largest INTEGER."""


class ActivityList(msgspec.Struct, frozen=True):
    activity: list[ActivityRecord]
    """Oldest first: the last ``limit`` records, or with ``since`` the first ``limit`` after it."""


class ActivityLog:
    """The owner of the activity log: the records not yet written, and when they are written."""

    def __init__(
        self,
        store: Store,
        retention: int,
        flush_seconds: float = FLUSH_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._store = store
        self._retention = retention
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._buffer: deque[ActivityRecord] = deque(maxlen=BUFFER_LIMIT)
        self._batch_full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Start writing the records in batches; called on the event loop."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def close(self) -> None:
        """Stop the batches and hand what is left to the store (``Store.close`` waits for it)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self._flush()

    def observe(self, outcome: RequestOutcome) -> None:
        """The proxy's outcome of one request, as a record (the proxy's observer)."""
        self.record(
            ActivityRecord(
                time=outcome.time,
                instance=outcome.instance,
                model=outcome.model,
                key_name=outcome.key_name,
                endpoint=outcome.endpoint,
                method=outcome.method,
                status=outcome.status,
                queue_wait_seconds=outcome.queue_wait_seconds,
                ttft_seconds=outcome.ttfb_seconds,
                duration_seconds=outcome.duration_seconds,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
            )
        )

    def record(self, record: ActivityRecord) -> None:
        """Keep one request's record, its id given now: on the proxy's hot path, so nothing waits."""
        model = record.model
        self._buffer.append(
            msgspec.structs.replace(
                record,
                id=self._store.allocate_activity_id(),
                model=None if model is None else model[:MAX_ACTIVITY_TEXT],
                endpoint=record.endpoint[:MAX_ACTIVITY_TEXT],
            )
        )
        if len(self._buffer) >= self._batch_size:
            self._batch_full.set()

    async def activity(self, instance: str | None, since_id: int | None, limit: int) -> list[ActivityRecord]:
        """As ``Store.activity`` (oldest first), the records not yet written included."""
        # Taken before the read: a batch written meanwhile is then in both, never in neither.
        buffered = [
            record
            for record in self._buffer
            if (instance is None or record.instance == instance)
            and (since_id is None or record.id > since_id)
        ]
        stored = await asyncio.to_thread(self._store.activity, instance, since_id, limit)
        # A batch is the whole buffer, so the store holds every record up to its newest one.
        newest_stored = stored[-1].id if stored else 0
        records = stored + [record for record in buffered if record.id > newest_stored]
        return records[:limit] if since_id is not None else records[max(0, len(records) - limit) :]

    async def list_activity(self, request: Request) -> Response:
        """``GET /api/v1/activity?instance=&since=&limit=``."""
        query = request.query_params
        records = await self.activity(
            query.get("instance") or None,
            number_parameter(query.get("since"), "since", None, MAX_ACTIVITY_ID),
            number_parameter(query.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT),
        )
        return json_response(ActivityList(records))

    async def _flush_periodically(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._batch_full.wait()
            self._batch_full.clear()
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            batch = list(self._buffer)
            self._buffer.clear()
            self._store.insert_activity(batch, self._retention)
