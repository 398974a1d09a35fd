"""``GET /metrics`` through a real `llamactl serve` over the stand-in: exact counts after real traffic.

The traffic: plain and streamed chats, an eviction (one instance may run at a
time), a queue (one request at a time per instance), a crash mid-stream. The
scrape is parsed with prometheus_client's own parser, and promtool (Debian's
prometheus package) checks the format.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve_process import Serve, serve_process, standin_backends
from tests.standin_backend import PROMPT_TOKENS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CHAT = "/v1/chat/completions"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    tail = standin_backends(instances="max_running_instances: 1, swap_fairness_window: 0.2")
    with serve_process(tmp_path, tail) as running:
        yield running


def scrape(serve: Serve) -> Samples:
    answer = serve.client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def create(serve: Serve, name: str, faults: str = "", **options: object) -> None:
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": "/m/tiny.gguf", "alias": "tiny"},
        "environment": {"STANDIN_PIDS": str(serve.pids), "STANDIN_FAULTS": faults},
        **options,
    }
    assert serve.client.post(f"/api/v1/instances/{name}", json=body).status_code == 201


def chat(serve: Serve, name: str, **body: object) -> httpx.Response:
    return serve.client.post(CHAT, json={"model": name, "messages": [], **body}, timeout=30)


def test_the_counts_after_requests_a_queue_an_eviction_and_a_crash(serve: Serve) -> None:
    create(serve, "a", max_concurrent=1)
    create(serve, "b")
    create(serve, "crashy", "crash_mid_stream")
    before = scrape(serve)

    for _ in range(3):
        assert chat(serve, "a").status_code == 200
    usage = {"stream_options": {"include_usage": True}}
    for _ in range(2):
        assert chat(serve, "a", stream=True, **usage).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # one of the two waits for the other
        slow = [pool.submit(chat, serve, "a", stream=True, chunks=5, chunk_delay=0.1) for _ in range(2)]
        assert [future.result().status_code for future in slow] == [200, 200]
    assert chat(serve, "b").status_code == 200  # evicts a
    cut = chat(serve, "crashy", stream=True)  # evicts b; its backend dies after two chunks
    assert cut.status_code == 200 and "backend stream ended" in cut.text
    deadline = time.monotonic() + 10  # the stream ends as the process dies; its exit is seen after
    while serve.client.get("/api/v1/instances/crashy").json()["status"] == "running":
        assert time.monotonic() < deadline, "the crash was not noticed"
        time.sleep(0.05)

    after = scrape(serve)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    a = {"instance": "a", "backend": "llama_cpp"}
    assert delta("llamactl_requests_total", **a, endpoint=CHAT, status="200") == 7
    assert (
        delta("llamactl_requests_total", instance="b", backend="llama_cpp", endpoint=CHAT, status="200") == 1
    )
    # The streams: 2 with usage, 2 slow ones, the cut one; TTFT is counted for streams only.
    streamed = delta("llamactl_time_to_first_byte_seconds_count", **a, endpoint=CHAT)
    assert streamed == 4
    crashy = {"instance": "crashy", "backend": "llama_cpp", "endpoint": CHAT}
    assert delta("llamactl_time_to_first_byte_seconds_count", **crashy) == 1
    assert delta("llamactl_request_duration_seconds_count", **a, endpoint=CHAT) == 7
    assert delta("llamactl_queue_wait_seconds_count", **a) == 7
    # The queued one waited for the other's five chunks 0.1 s apart.
    assert delta("llamactl_queue_wait_seconds_bucket", **a, le="0.25") <= 6
    # Every answer's usage is counted (the stand-in's: 7 prompt tokens each), the slow streams' too:
    # llamactl asked for it on their behalf, and kept it from them.
    assert delta("llamactl_prompt_tokens_total", **a) == 7 * PROMPT_TOKENS
    assert delta("llamactl_completion_tokens_total", **a) == 3 * 1 + 4 * 5
    assert delta("llamactl_instance_starts_total", instance="a", cause="on_demand") == 1
    assert delta("llamactl_instance_stops_total", instance="a", reason="evicted") == 1
    assert delta("llamactl_instance_stops_total", instance="b", reason="evicted") == 1
    assert delta("llamactl_instance_crashes_total", instance="crashy", kind="crash") == 1
    # b was swapped in for a, crashy for b; a started with room to spare.
    assert [delta("llamactl_swaps_total", instance=name) for name in ("a", "b", "crashy")] == [0, 1, 1]
    assert delta("llamactl_swap_seconds_count", instance="b") == 1
    assert 0 < delta("llamactl_swap_seconds_sum", instance="b") < 10
    assert value(after, "llamactl_instance_state", instance="a", state="stopped") == 1
    assert ("llamactl_instance_state", frozenset({("instance", "a"), ("state", "running")})) not in after
    assert value(after, "llamactl_instances", state="stopped") == 2  # a and b; crashy restarts
    assert value(after, "process_resident_memory_bytes") > 0


def test_metrics_need_the_management_key(serve: Serve) -> None:
    assert httpx.get(serve.base_url + "/metrics").status_code == 401
    inference = httpx.get(serve.base_url + "/metrics", headers={"Authorization": "Bearer nope"})
    assert inference.status_code == 401


def test_promtool_accepts_the_exposition(serve: Serve) -> None:
    # scripts/test.sh installs it (Debian's prometheus package).
    assert shutil.which("promtool") is not None, "promtool is missing: run scripts/test.sh"
    create(serve, "a")
    assert chat(serve, "a", stream=True).status_code == 200
    text = serve.client.get("/metrics").text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_proxied_request_is_in_the_activity_log_without_its_prompt_or_answer(serve: Serve) -> None:
    create(serve, "a")
    assert chat(serve, "a", messages=[{"role": "user", "content": "a secret prompt"}]).status_code == 200
    assert chat(serve, "a/nothing").status_code == 404  # refused before it reached an instance
    [record] = serve.client.get("/api/v1/activity").json()["activity"]
    assert (record["instance"], record["model"], record["endpoint"], record["status"]) == (
        "a",
        "a",
        CHAT,
        200,
    )
    assert (record["key_name"], record["method"], record["prompt_tokens"]) == (
        "management",
        "POST",
        PROMPT_TOKENS,
    )
    assert record["queue_wait_seconds"] > 0 and record["duration_seconds"] >= record["queue_wait_seconds"]
    assert "secret" not in serve.client.get("/api/v1/activity").text


def test_a_stream_the_client_leaves_keeps_its_time_to_first_byte(serve: Serve) -> None:
    """The Stop of a playground: the record says 499, and when the first token came."""
    create(serve, "a")
    before = scrape(serve)
    body = {"model": "a", "messages": [], "stream": True, "chunks": 100, "chunk_delay": 0.05}
    with serve.client.stream("POST", CHAT, json=body) as answer:
        assert next(answer.iter_raw()).startswith(b"data: ")
    deadline = time.monotonic() + 10
    while not (records := serve.client.get("/api/v1/activity").json()["activity"]):
        assert time.monotonic() < deadline, "the cut stream was never recorded"
        time.sleep(0.05)
    [record] = records
    assert record["status"] == 499
    assert 0 < record["ttft_seconds"] <= record["duration_seconds"]
    after = scrape(serve)
    labels = {"instance": "a", "backend": "llama_cpp", "endpoint": CHAT}
    ttfts = "llamactl_time_to_first_byte_seconds_count"
    assert value(after, ttfts, **labels) - value(before, ttfts, **labels) == 1


def test_healthz_answers_without_a_key_and_readyz_once_booted(serve: Serve) -> None:
    assert httpx.get(serve.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(serve.base_url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


def test_a_deleted_instances_series_go_with_it(serve: Serve) -> None:
    create(serve, "before")
    create(serve, "gone")
    assert chat(serve, "before").status_code == 200
    assert chat(serve, "gone").status_code == 200  # swapped in for "before": swap series too
    assert value(scrape(serve), "llamactl_swaps_total", instance="gone") == 1
    assert (
        value(
            scrape(serve),
            "llamactl_requests_total",
            instance="gone",
            backend="llama_cpp",
            endpoint=CHAT,
            status="200",
        )
        == 1
    )
    assert serve.client.post("/api/v1/instances/gone/stop").status_code == 200
    assert serve.client.delete("/api/v1/instances/gone").status_code == 204
    left = [labels for (_, labels) in scrape(serve) if ("instance", "gone") in labels]
    assert left == []


def test_a_stream_gets_its_usage_event_only_when_it_asked_but_its_tokens_are_counted_either_way(
    serve: Serve,
) -> None:
    create(serve, "a")
    tokens = {"instance": "a", "backend": "llama_cpp"}
    before = value(scrape(serve), "llamactl_completion_tokens_total", **tokens)
    plain = chat(serve, "a", stream=True, chunks=3)
    assert (
        plain.status_code == 200 and '"usage"' not in plain.text and plain.text.endswith("data: [DONE]\n\n")
    )
    assert plain.text.count("data: {") == 3
    asked = chat(serve, "a", stream=True, chunks=3, stream_options={"include_usage": True})
    assert '"usage"' in asked.text and asked.text.count("data: {") == 4
    assert value(scrape(serve), "llamactl_completion_tokens_total", **tokens) - before == 6


def test_per_key_counts_carry_the_keys_name_only_when_asked(tmp_path: Path) -> None:
    tail = standin_backends() + "metrics: {per_key: true}\n"
    with serve_process(tmp_path, tail) as serve:
        create(serve, "a")
        made = serve.client.post("/api/v1/auth/keys", json={"name": "app", "permission_mode": "allow_all"})
        key = made.json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "a", "messages": []}
        for _ in range(2):
            assert (
                httpx.post(serve.base_url + CHAT, json=body, headers=headers, timeout=30).status_code == 200
            )
        assert chat(serve, "a").status_code == 200  # the management key
        samples = scrape(serve)
        assert value(samples, "llamactl_key_requests_total", key="app", instance="a") == 2
        assert value(samples, "llamactl_key_requests_total", key="management", instance="a") == 1
        assert (
            value(samples, "llamactl_key_tokens_total", key="app", instance="a", kind="prompt")
            == 2 * PROMPT_TOKENS
        )
        assert key not in serve.client.get("/metrics").text


def test_without_per_key_no_series_names_a_key(serve: Serve) -> None:
    create(serve, "a")
    assert chat(serve, "a").status_code == 200
    assert not [name for (name, _) in scrape(serve) if name.startswith("llamactl_key_")]
