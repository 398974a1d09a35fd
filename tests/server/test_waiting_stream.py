"""Streamed requests that wait for their instance stay alive, over a real `llamactl serve`.

A client with a 5 s read timeout survives a 7 s model load: it gets the
head and an SSE comment every few seconds, then the backend's stream. A start
that fails after the head went out ends the stream with an error event. A
client that leaves while queued leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process, standin_backends

HEADERS = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
READ_TIMEOUT = httpx.Timeout(30, read=5)
"""A client that gives up after 5 s of silence, as many do."""


def create(serve: Serve, name: str, faults: str, **options: object) -> None:
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": f"/m/{name}.gguf"},
        "environment": {"STANDIN_FAULTS": faults, "STANDIN_PIDS": str(serve.pids)},
        **options,
    }
    assert serve.client.post(f"/api/v1/instances/{name}", json=body).status_code == 201


def stream_lines(serve: Serve, model: str) -> tuple[int, list[str], float]:
    """Status, every line of the stream, and when the head arrived (seconds after sending)."""
    began = time.monotonic()
    with (
        httpx.Client(base_url=serve.base_url, headers=HEADERS, timeout=READ_TIMEOUT) as client,
        client.stream("POST", "/v1/chat/completions", json={"model": model, **CHAT}) as response,
    ):
        head_after = time.monotonic() - began
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.status_code, list(response.iter_lines()), head_after


def test_a_client_with_a_read_timeout_survives_a_long_load(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=7")
        status, lines, head_after = stream_lines(serve, "slow")
        assert status == 200 and head_after < 5
        comments = [line for line in lines if line.startswith(": llamactl: ")]
        assert comments and comments[0].startswith(": llamactl: starting slow (")
        data = [line for line in lines if line.startswith("data: ")]
        assert data[-1] == "data: [DONE]" and all("reasoning_content" not in line for line in data)


def test_send_loading_state_adds_reasoning_content_deltas(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=4", send_loading_state=True)
        status, lines, _ = stream_lines(serve, "slow")
        assert status == 200
        chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        loading = chunks[0]["choices"][0]["delta"]
        assert loading["reasoning_content"].startswith("starting slow (")
        assert chunks[0]["object"] == "chat.completion.chunk"
        assert "data: [DONE]" in lines


def test_a_start_that_fails_after_the_head_ends_the_stream_with_an_error_event(tmp_path: Path) -> None:
    config = standin_backends(instances="on_demand_start_timeout: 5")
    with serve_process(tmp_path, config) as serve:
        create(serve, "never", "never_healthy")
        status, lines, _ = stream_lines(serve, "never")
        assert status == 200  # the head went out while it waited
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert events[-1]["error"]["code"] in ("instance_start_timeout", "instance_start_failed")
        assert "data: [DONE]" not in lines


def test_a_client_that_leaves_while_queued_leaves_the_queue_at_once(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=6")

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=30) as client:
                body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
                leaving = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
                await asyncio.sleep(1)
                assert (await client.get("/api/v1/instances/slow")).json()["queued"] == 1
                leaving.cancel()  # the client hangs up
                async with asyncio.timeout(2):
                    while (await client.get("/api/v1/instances/slow")).json().get("queued", 0):
                        await asyncio.sleep(0.05)

        asyncio.run(scenario())
        assert "Exception in ASGI application" not in serve.serving.stderr_text()
