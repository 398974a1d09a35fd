"""``POST /api/v1/instances/{name}/smoke`` and ``GET …/history`` against a real ``llamactl serve``.

The stand-in is llama-server; its faults (``STANDIN_FAULTS``, in the
instance's environment) make the smoke run's copy misbehave as the instance's
own would. Every stand-in notes its pid (and its grandchild's) in the pids
file, and ``serve_process`` checks that none is left at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamactl.service import HTTP_GRACE
from llamactl.store import SmokeEntry, Store
from tests.instance.helpers import alive, recorded_pids
from tests.serve_process import Serve, serve_process, standin_backends

DEADLINE = 30.0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    pids = tmp_path / "pids"
    config = standin_backends((18490, 18499))
    with serve_process(tmp_path, config, environment={"STANDIN_PIDS": str(pids)}) as running:
        yield running


def smoke(serve: Serve, name: str, **body: Any) -> dict[str, Any]:
    answer = serve.client.post(f"/api/v1/instances/{name}/smoke", json=body, timeout=DEADLINE + 30)
    assert answer.status_code == 200, answer.text
    entry: dict[str, Any] = answer.json()
    return entry


def history(serve: Serve, name: str) -> list[dict[str, Any]]:
    answer = serve.client.get(f"/api/v1/instances/{name}/history")
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["history"]
    return entries


def history_with(serve: Serve, name: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """The history once it holds ``count`` entries of ``kind``: a start's is written when its
    ``--version`` has answered."""
    deadline = time.monotonic() + DEADLINE
    while True:
        entries = history(serve, name)
        if len([entry for entry in entries if entry["kind"] == kind]) >= count:
            return entries
        assert time.monotonic() < deadline, f"no {count} {kind} entries in {entries}"
        time.sleep(0.05)


def test_a_passing_check_records_the_answer_and_timings_and_leaves_the_instance_alone(serve: Serve) -> None:
    serve.create("tiny")
    before = serve.client.get("/api/v1/instances/tiny").json()
    answer = serve.client.post("/api/v1/instances/tiny/smoke", timeout=DEADLINE)  # a bare POST: defaults
    assert answer.status_code == 200, answer.text
    entry = answer.json()
    assert entry["kind"] == "smoke" and entry["ok"] is True
    assert entry["model"] == "tiny"  # the served name (--alias), as the chat named it
    assert entry["first_line"] == "hello"
    assert entry["reason"] is None and entry["log_tail"] == []
    timings = entry["timings"]
    assert 0 < timings["ready_seconds"] <= timings["listed_seconds"] < timings["total_seconds"]
    assert 0 < timings["chat_seconds"] < timings["total_seconds"]
    # The running instance is untouched: same process, same port, and it still answers.
    after = serve.client.get("/api/v1/instances/tiny").json()
    assert (after["status"], after["pid"], after["port"]) == ("running", before["pid"], before["port"])
    chat = serve.client.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert chat.status_code == 200
    instance_pid, smoke_pid = recorded_pids(serve.pids)
    assert alive(instance_pid) and not alive(smoke_pid)  # the run's process is gone when it answers
    entries = history_with(serve, "tiny", "start")
    assert [e["kind"] for e in entries] == ["start", "smoke"] and entries[-1] == entry


def test_each_start_records_the_executable_and_its_version(serve: Serve) -> None:
    serve.create("tiny")
    (started,) = history_with(serve, "tiny", "start")
    assert started["reason"] == "by API"
    assert started["executable"] == sys.executable  # the configured command, resolved
    assert started["version"].startswith("Python 3.")  # what `python --version` says
    assert started["version_error"] is None and started["image"] is None
    assert serve.client.post("/api/v1/instances/tiny/restart").status_code == 200
    first, again = history_with(serve, "tiny", "start", count=2)
    assert first == started
    assert again["reason"] == "restart"
    assert again["time"] > started["time"] and again["version"] == started["version"]


def test_a_failing_check_says_why_with_the_log_tail(serve: Serve) -> None:
    serve.create("broken", faults="exit_at_start=3", start=False)
    entry = smoke(serve, "broken", timeout=DEADLINE)
    assert entry["ok"] is False and entry["first_line"] is None
    assert entry["reason"] == "the smoke run exited with code 3 while starting"
    assert "standin: exiting at start as asked" in entry["log_tail"]
    assert entry["timings"]["ready_seconds"] is None and entry["timings"]["total_seconds"] > 0
    assert history(serve, "broken") == [entry]  # it never started: no start entry
    assert serve.client.get("/api/v1/instances/broken").json()["status"] == "stopped"


def test_a_check_past_its_deadline_kills_the_whole_process_group(serve: Serve) -> None:
    serve.create("hung", faults="never_healthy,fork_grandchild", start=False)
    entry = smoke(serve, "hung", timeout=1.5)
    assert entry["ok"] is False
    assert entry["reason"] == "not done within 1.5 s: stopped while waiting for the readiness probe"
    assert 1.5 <= entry["timings"]["total_seconds"] < DEADLINE
    pids = recorded_pids(serve.pids)
    assert len(pids) == 2  # the stand-in and its grandchild
    assert [pid for pid in pids if alive(pid)] == []  # both gone by the time it answers


def test_a_second_check_of_the_same_instance_is_refused_while_the_first_runs(serve: Serve) -> None:
    serve.create("slow", faults="load_time=2", start=False)
    first: list[dict[str, Any]] = []
    running = threading.Thread(target=lambda: first.append(smoke(serve, "slow")))
    running.start()
    deadline = time.monotonic() + DEADLINE
    while not recorded_pids(serve.pids):  # the first run's backend is up, loading
        assert time.monotonic() < deadline
        time.sleep(0.02)
    refused = serve.client.post("/api/v1/instances/slow/smoke", json={})
    assert refused.status_code == 409, refused.text
    assert "already running" in refused.json()["details"]
    running.join(DEADLINE)
    assert not running.is_alive() and first[0]["ok"] is True
    assert [entry["ok"] for entry in history(serve, "slow")] == [True]  # the refused one left nothing


def test_an_unknown_instance_is_404_and_a_bad_body_400(serve: Serve) -> None:
    for answer in (
        serve.client.post("/api/v1/instances/missing/smoke", json={}),
        serve.client.get("/api/v1/instances/missing/history"),
    ):
        assert answer.status_code == 404 and "missing" in answer.json()["details"]
    serve.create("tiny", start=False)
    for body, field in (
        ({"timeout": 0}, "timeout"),
        ({"timeout": 1e6}, "timeout"),
        ({"timout": 5}, "timout"),
    ):
        answer = serve.client.post("/api/v1/instances/tiny/smoke", json=body)
        assert answer.status_code == 400 and field in answer.json()["details"], answer.text
    text = serve.client.post(
        "/api/v1/instances/tiny/smoke", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    assert history(serve, "tiny") == []


def test_the_history_goes_with_its_instance(serve: Serve) -> None:
    serve.create("gone")
    assert smoke(serve, "gone")["ok"] is True
    history_with(serve, "gone", "start")
    assert serve.client.post("/api/v1/instances/gone/stop").status_code == 200
    assert serve.client.delete("/api/v1/instances/gone").status_code == 204
    assert serve.client.get("/api/v1/instances/gone/history").status_code == 404
    serve.create("gone", start=False)  # a namesake inherits nothing
    assert history(serve, "gone") == []


def test_the_api_document_describes_both_routes(serve: Serve) -> None:
    document = httpx.get(serve.base_url + "/api/v1/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    smoke_route = paths["/api/v1/instances/{name}/smoke"]["post"]
    assert {"200", "400", "404", "409"} <= set(smoke_route["responses"])
    assert set(schemas["SmokeRequest"]["properties"]) == {"timeout"}
    assert {"ok", "model", "first_line", "timings", "reason", "log_tail"} <= set(
        schemas["SmokeEntry"]["properties"]
    )
    history_route = paths["/api/v1/instances/{name}/history"]["get"]
    assert {"200", "404"} <= set(history_route["responses"])
    assert {"executable", "version", "image"} <= set(schemas["StartEntry"]["properties"])


def test_a_check_under_way_when_llamactl_stops_is_ended_at_once_and_recorded_as_cancelled(
    serve: Serve, tmp_path: Path
) -> None:
    serve.create("hung", faults="never_healthy", start=False)
    instance_id = serve.client.get("/api/v1/instances/hung").json()["id"]
    answers: list[dict[str, Any]] = []
    asking = threading.Thread(target=lambda: answers.append(smoke(serve, "hung")))
    asking.start()
    deadline = time.monotonic() + DEADLINE
    while not recorded_pids(serve.pids):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stopping = time.monotonic()
    assert serve.serving.stop(timeout=DEADLINE) == 0  # SIGTERM, as a service manager stops it
    assert time.monotonic() - stopping < HTTP_GRACE  # not held for the requests' grace
    asking.join(DEADLINE)
    assert [pid for pid in recorded_pids(serve.pids) if alive(pid)] == []
    (answered,) = answers
    assert answered["ok"] is False
    assert answered["reason"] == "cancelled while waiting for the readiness probe: llamactl is stopping"
    store = Store(tmp_path / "data" / "llamactl.db")  # as the next llamactl shows it
    try:
        (recorded,) = store.history(instance_id)
    finally:
        store.close()
    assert isinstance(recorded, SmokeEntry) and recorded.reason == answered["reason"]
