"""``GET /api/v1/events`` over a real `llamactl serve`: transitions with reasons, queue changes, resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.serve_process import MANAGEMENT_KEY, serve_process

HEADERS = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}


Events = list[dict[str, Any]]


async def read_events(
    client: httpx.AsyncClient, enough: Callable[[Events], bool], headers: dict[str, str] | None = None
) -> Events:
    """Events of the stream (with their SSE ids) until ``enough`` says so, within a deadline."""
    events: Events = []
    async with asyncio.timeout(20), client.stream("GET", "/api/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                current["sse_id"] = int(line[4:])
            elif line.startswith("data: "):
                current.update(json.loads(line[6:]))
            elif line == "" and current:
                events.append(current)
                current = {}
                if enough(events):
                    return events
    return events


def statuses(events: Events) -> Events:
    return [event for event in events if event["kind"] == "status"]


def test_transitions_and_queue_changes_stream_with_reasons_and_resume(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        serve.create("alpha", start=False)

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=30) as client:
                listening = asyncio.ensure_future(read_events(client, lambda e: len(statuses(e)) == 2))
                await asyncio.sleep(0.3)  # subscribed: a new subscriber gets events from now on
                started = await client.post("/api/v1/instances/alpha/start")
                assert started.status_code == 200
                first, second = statuses(await listening)
                assert (first["instance"], first["status"], first["reason"]) == (
                    "alpha",
                    "starting",
                    "by API",
                )
                assert (second["status"], second["reason"]) == ("running", "ready")
                assert second["sse_id"] > first["sse_id"] == first["id"]
                # On demand through the proxy, then stopped by the API: resumed from the first id.
                await client.post("/api/v1/instances/alpha/stop")
                chat = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
                assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
                resumed = await read_events(
                    client, lambda e: len(statuses(e)) >= 6, {"Last-Event-ID": str(first["id"])}
                )
                assert resumed[0]["id"] == first["id"] + 1  # nothing missed, nothing repeated
                reasons = [(e["status"], e["reason"]) for e in statuses(resumed)]
                assert reasons[:6] == [
                    ("running", "ready"),
                    ("shutting_down", "by API"),
                    ("shutting_down", "drained"),
                    ("stopped", "exited with code 143"),
                    ("starting", "on demand"),
                    ("running", "ready"),
                ]

        asyncio.run(scenario())


def test_queue_changes_are_published(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        serve.create("alpha", faults="load_time=0.5", start=False)

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=30) as client:
                stopped = asyncio.ensure_future(
                    read_events(client, lambda e: any(x.get("status") == "stopped" for x in e))
                )
                await asyncio.sleep(0.3)
                chat = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
                answers = await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=chat) for _ in range(3))
                )
                assert [a.status_code for a in answers] == [200, 200, 200]
                await client.post("/api/v1/instances/alpha/stop")
                events = await stopped
                queued = [e["queued"] for e in events if e["kind"] == "queue"]
                assert 3 in queued  # all three waited for the start
                assert queued[-1] == 0

        asyncio.run(scenario())


def test_events_need_a_management_key_and_a_numeric_last_event_id(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        assert httpx.get(serve.base_url + "/api/v1/events").status_code == 401
        bad = serve.client.get("/api/v1/events", headers=[(b"Last-Event-ID", "²".encode("latin-1"))])
        assert bad.status_code == 400 and bad.json()["field"] == "Last-Event-ID"
