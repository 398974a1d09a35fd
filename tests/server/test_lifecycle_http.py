"""Stop, restart, update and delete while requests wait for a start, a swap or a stream, over real sockets.

A real `llamactl serve` and the stand-in backend. Every request ends with a
200 or a shaped JSON error (503 or 504 with Retry-After, 429), never a 500 or
a cut stream; a restart is not a stop, so requests waiting across it are
served once it is ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.serve_process import MANAGEMENT_KEY, Serve, free_port, serve_process, standin_backends

HEADERS = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}


class Answer:
    def __init__(self, status: int, body: str, headers: httpx.Headers) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def complete_stream(self) -> bool:
        return self.body.rstrip().endswith("data: [DONE]")

    def error_code(self) -> str:
        code: str = httpx.Response(self.status, content=self.body).json()["error"]["code"]
        return code


async def chat(base: str, model: str, **body: Any) -> Answer:
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as client:
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True, **body}
        async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
            text = (await response.aread()).decode()
            return Answer(response.status_code, text, response.headers)


def create(serve: Serve, name: str, faults: str = "", **options: Any) -> None:
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": f"/m/{name}.gguf", **options.pop("backend_options", {})},
        "environment": {"STANDIN_PIDS": str(serve.pids), "STANDIN_FAULTS": faults},
        **options,
    }
    response = serve.client.post(f"/api/v1/instances/{name}", json=body)
    assert response.status_code == 201, response.text


async def while_waiting(
    serve: Serve,
    requests: Sequence[Awaitable[Answer]],
    action: Callable[[httpx.AsyncClient], Awaitable[Any]],
) -> tuple[list[Answer], Any]:
    """Send ``requests``, let them start waiting, do ``action`` through the management API."""
    tasks = [asyncio.ensure_future(request) for request in requests]
    await asyncio.sleep(0.5)
    assert not any(task.done() for task in tasks), "the requests should still be waiting"
    async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=60) as admin:
        outcome = await action(admin)
    async with asyncio.timeout(60):
        answers = await asyncio.gather(*tasks)
    return answers, outcome


def assert_shaped_unavailable(answer: Answer, code: str) -> None:
    assert answer.status == 503 and answer.error_code() == code, answer.body
    assert answer.headers["content-type"] == "application/json" and "retry-after" in answer.headers


def test_a_stop_during_an_on_demand_start_answers_every_waiter_503_with_retry_after(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=2")

        async def scenario() -> None:
            requests = [chat(serve.base_url, "slow") for _ in range(3)]
            answers, stopped = await while_waiting(
                serve, requests, lambda a: a.post("/api/v1/instances/slow/stop")
            )
            assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
            for answer in answers:
                assert_shaped_unavailable(answer, "instance_stopped")

        asyncio.run(scenario())
        assert "Exception in ASGI application" not in serve.serving.stderr_text()


def test_a_restart_or_a_changed_update_during_a_start_serves_the_waiters(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=1")

        async def restart(admin: httpx.AsyncClient) -> httpx.Response:
            return await admin.post("/api/v1/instances/slow/restart")

        async def update(admin: httpx.AsyncClient) -> httpx.Response:
            current = (await admin.get("/api/v1/instances/slow")).json()["options"]
            changed = {**current, "backend_options": {**current["backend_options"], "ctx_size": 64}}
            return await admin.put("/api/v1/instances/slow", json=changed)

        async def scenario() -> None:
            for action in (restart, update):
                await await_stopped(serve, "slow")
                requests = [chat(serve.base_url, "slow") for _ in range(3)]
                answers, response = await while_waiting(serve, requests, action)
                assert response.status_code == 200 and response.json()["status"] == "running", response.text
                assert [a.status for a in answers] == [200, 200, 200]
                assert all(a.complete_stream for a in answers)

        asyncio.run(scenario())


async def await_stopped(serve: Serve, name: str) -> None:
    async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=60) as admin:
        await admin.post(f"/api/v1/instances/{name}/stop")


def test_a_delete_during_a_start_is_refused_and_the_waiters_are_served(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "slow", "load_time=1")

        async def scenario() -> None:
            requests = [chat(serve.base_url, "slow") for _ in range(2)]
            answers, deleted = await while_waiting(
                serve, requests, lambda a: a.delete("/api/v1/instances/slow")
            )
            assert deleted.status_code == 409 and deleted.json()["error"] == "conflict"
            assert [a.status for a in answers] == [200, 200]

        asyncio.run(scenario())


def test_stop_and_restart_during_a_stream_let_it_finish(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "talker")
        serve.client.post("/api/v1/instances/talker/start").raise_for_status()

        async def scenario() -> None:
            for verb in ("restart", "stop"):
                streaming = asyncio.ensure_future(chat(serve.base_url, "talker", chunks=15, chunk_delay=0.1))
                await asyncio.sleep(0.4)
                async with httpx.AsyncClient(base_url=serve.base_url, headers=HEADERS, timeout=60) as admin:
                    response = await admin.post(f"/api/v1/instances/talker/{verb}")
                    assert response.status_code == 200, response.text
                    after = asyncio.ensure_future(chat(serve.base_url, "talker"))
                answer = await streaming
                assert answer.status == 200 and answer.complete_stream, answer.body  # drained, not cut
                followed = await after
                if verb == "restart":
                    assert followed.status == 200 and followed.complete_stream
                else:
                    # Sent during the stop: it started the instance again on demand once stopped.
                    assert followed.status == 200 or followed.error_code() == "instance_stopped"

        asyncio.run(scenario())


def test_a_swap_serves_every_queued_request_and_a_stop_of_the_incoming_instance_is_shaped(
    tmp_path: Path,
) -> None:
    with serve_process(tmp_path, standin_backends(instances="max_running_instances: 1")) as serve:
        create(serve, "a")
        create(serve, "b", "load_time=1")
        serve.client.post("/api/v1/instances/a/start").raise_for_status()

        async def scenario() -> None:
            # a streams while b's requests queue: a finishes, is swapped out, b serves them all.
            a_stream = asyncio.ensure_future(chat(serve.base_url, "a", chunks=10, chunk_delay=0.05))
            await asyncio.sleep(0.1)
            b_answers = await asyncio.gather(*(chat(serve.base_url, "b") for _ in range(4)))
            assert (await a_stream).complete_stream
            assert [answer.status for answer in b_answers] == [200] * 4
            statuses = {i["name"]: i["status"] for i in serve.client.get("/api/v1/instances").json()}
            assert statuses == {"a": "stopped", "b": "running"}
            # Now a is wanted while b streams (inside the fairness window, so a's requests wait);
            # b is stopped by the API: its stream drains, then a gets the room and serves them.
            b_stream = asyncio.ensure_future(chat(serve.base_url, "b", chunks=30, chunk_delay=0.05))
            await asyncio.sleep(0.1)
            a_requests = [chat(serve.base_url, "a") for _ in range(2)]
            answers, stopped = await while_waiting(
                serve, a_requests, lambda admin: admin.post("/api/v1/instances/b/stop")
            )
            assert stopped.status_code == 200 and (await b_stream).complete_stream
            assert [answer.status for answer in answers] == [200, 200]

        asyncio.run(scenario())


def test_a_port_only_update_moves_the_running_backend(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    with serve_process(tmp_path, standin_backends((min(first, second), max(first, second)))) as serve:
        create(serve, "moving", backend_options={"port": first})
        serve.client.post("/api/v1/instances/moving/start").raise_for_status()
        options = serve.client.get("/api/v1/instances/moving").json()["options"]
        moved = {**options, "backend_options": {**options["backend_options"], "port": second}}
        response = serve.client.put("/api/v1/instances/moving", json=moved)
        assert response.status_code == 200 and response.json()["port"] == second, response.text
        assert httpx.get(f"http://127.0.0.1:{second}/health").status_code == 200
        try:
            httpx.get(f"http://127.0.0.1:{first}/health", timeout=2)
            raise AssertionError("the old port still answers")
        except httpx.ConnectError:
            pass
        assert asyncio.run(chat(serve.base_url, "moving")).status == 200


def test_full_queues_answer_429_with_retry_after_and_an_openai_body(tmp_path: Path) -> None:
    with serve_process(tmp_path, standin_backends(instances="max_queue: 3")) as serve:
        create(serve, "small", "load_time=1.5", max_queue=1)
        create(serve, "other", "load_time=1.5")

        async def scenario() -> None:
            waiting = asyncio.ensure_future(chat(serve.base_url, "small"))
            await asyncio.sleep(0.5)
            refused = await chat(serve.base_url, "small")  # the instance's own queue holds one
            assert refused.status == 429 and refused.error_code() == "queue_full", refused.body
            assert "max_queue 1" in refused.body and refused.headers["retry-after"] == "1"
            others = [asyncio.ensure_future(chat(serve.base_url, "other")) for _ in range(2)]
            await asyncio.sleep(0.5)
            overall = await chat(serve.base_url, "other")  # three wait in all: instances.max_queue
            assert overall.status == 429 and "instances.max_queue (3)" in overall.body
            assert [a.status for a in await asyncio.gather(waiting, *others)] == [200, 200, 200]

        asyncio.run(scenario())


def test_max_concurrent_queues_what_is_over_it_and_serves_it_next(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        create(serve, "single", max_concurrent=1)
        serve.client.post("/api/v1/instances/single/start").raise_for_status()

        async def scenario() -> None:
            long_stream = asyncio.ensure_future(chat(serve.base_url, "single", chunks=10, chunk_delay=0.1))
            await asyncio.sleep(0.3)
            began = asyncio.get_running_loop().time()
            second = await chat(serve.base_url, "single")
            waited = asyncio.get_running_loop().time() - began
            first = await long_stream
            assert first.complete_stream and second.complete_stream
            assert waited > 0.4  # it waited for the first to finish (about 0.7 s left of it)

        asyncio.run(scenario())
