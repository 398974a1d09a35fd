"""Streaming through a real `llamactl serve` process: no buffering, disconnects, dying backends, shutdown."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve_process import Serve, serve_process


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with serve_process(tmp_path) as running:
        yield running


def stream_body(**extra: object) -> dict[str, object]:
    return {"model": "alpha", "messages": [], "stream": True, **extra}


def test_chunks_arrive_as_the_backend_sends_them(serve: Serve) -> None:
    serve.create("alpha")
    arrivals = []
    began = time.monotonic()
    with serve.client.stream(
        "POST", "/v1/chat/completions", json=stream_body(chunks=4, chunk_delay=0.4)
    ) as response:
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - began, line))
    assert arrivals[-1][1] == "data: [DONE]"
    # the first token is forwarded long before the stream ends: nothing is buffered
    assert arrivals[0][0] < 0.6  # the stream lasts 1.6 s: buffered, its first token would come at the end
    assert arrivals[-1][0] > 1.2
    assert json.loads(arrivals[0][1].removeprefix("data: "))["model"] == "tiny"


def test_a_client_disconnect_cancels_the_upstream_request(serve: Serve) -> None:
    serve.create("alpha")
    with serve.client.stream(
        "POST", "/v1/chat/completions", json=stream_body(chunks=200, chunk_delay=0.05)
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 5
    log = ""
    while "stream cancelled by the client" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = serve.client.get("/api/v1/instances/alpha/logs?lines=20").text
    assert "stream cancelled by the client" in log
    chunks_sent = int(log.split("stream cancelled by the client after ")[1].split()[0])
    assert chunks_sent < 100  # it stopped at once, not at the end of the 10 s stream


def test_a_backend_dying_mid_stream_ends_the_stream_without_done(serve: Serve) -> None:
    serve.create("alpha", faults="crash_mid_stream")
    began = time.monotonic()
    with serve.client.stream("POST", "/v1/chat/completions", json=stream_body(chunks=10)) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert time.monotonic() - began < 5
    assert "data: [DONE]" not in events
    assert len(events) == 3 and '"error"' in events[-1]


def test_a_backend_dying_mid_answer_is_a_cut_answer_not_a_short_complete_one(serve: Serve) -> None:
    serve.create("alpha", faults="crash_mid_body")
    body = {"model": "alpha", "messages": []}
    with pytest.raises(httpx.RemoteProtocolError):  # the client sees the answer cut, as it was
        serve.client.post("/v1/chat/completions", json=body)


def test_sigterm_lets_the_request_in_flight_finish_then_stops_every_backend(serve: Serve) -> None:
    serve.create("alpha")
    with serve.client.stream(
        "POST", "/v1/chat/completions", json=stream_body(chunks=6, chunk_delay=0.3)
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        serve.process.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]" and len(rest) == 6
    assert serve.process.wait(timeout=30) == 0


def test_logs_follow_streams_new_lines_live(serve: Serve) -> None:
    serve.create("alpha")
    with serve.client.stream(
        "GET", "/api/v1/instances/alpha/logs", params={"lines": 2, "follow": "true"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        tail = [next(lines) for _ in range(4)]  # two events, each followed by a blank line
        assert [line for line in tail if line] and all(line.startswith("data: ") for line in tail if line)
        assert serve.client.post("/api/v1/instances/alpha/restart").status_code == 200
        live = ""
        while "standin: listening" not in live:
            live = next(lines)
    assert live.startswith("data: ")
