"""The models API as a user meets it: a real `llamactl serve`, a local stand-in for the Hugging Face hub.

The flow a user follows: download a GGUF, find it in the catalogue, make an
instance of it, chat with it (the stand-in backend serves it), delete it.
Bad requests get a 4xx naming the field; memory admission answers 503 with
the figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.tiny_models import write_tiny_gguf
from tests.models.gguf_files import LlamaShape, write_llama_gguf
from tests.models.standin_hub import StandinHub
from tests.serve_process import Serve, serve_process, standin_backends

REPO = "org/tiny-GGUF"
DEADLINE = 30.0


@pytest.fixture
def hub() -> Iterator[StandinHub]:
    with StandinHub() as running:
        yield running


def environment(tmp_path: Path, hub: StandinHub) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "OLLAMA_MODELS": str(tmp_path / "no-ollama"),
    }


@pytest.fixture
def serve(tmp_path: Path, hub: StandinHub) -> Iterator[Serve]:
    tail = standin_backends(instances="memory_budget: '50%'")
    with serve_process(tmp_path, tail, environment=environment(tmp_path, hub)) as running:
        yield running


def finished_job(serve: Serve, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        job: dict[str, Any] = serve.client.get(f"/api/v1/models/jobs/{job_id}").json()
        if job["status"] not in ("queued", "downloading"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {DEADLINE} s")


def test_download_list_make_an_instance_chat_and_delete(
    serve: Serve, hub: StandinHub, tmp_path: Path
) -> None:
    weights = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    hub.add_commit(REPO, {"tiny-Q8_0.gguf": weights, "tiny-Q4_K_M.gguf": weights, "README.md": b"# tiny"})

    started = serve.client.post("/api/v1/models/download", json={"repo": f"{REPO}:Q8_0"})
    assert started.status_code == 202
    assert {k: v for k, v in started.json().items() if k != "job_id"} == {"repo": REPO, "tag": "Q8_0"}
    job = finished_job(serve, started.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["progress"]["bytes_downloaded"] == job["progress"]["total_bytes"] == len(weights)
    assert [j["id"] for j in serve.client.get("/api/v1/models/jobs").json()["jobs"]] == [job["id"]]

    entries = {e["id"]: e for e in serve.client.get("/api/v1/models").json()}
    assert list(entries) == [f"hf:{REPO}:tiny-Q8_0"]  # the other quant was not fetched
    model_id = f"hf:{REPO}:tiny-Q8_0"
    assert entries[model_id]["source"] == "huggingface" and entries[model_id]["context_length"] == 512

    created = serve.client.post("/api/v1/instances/tiny", json={"model": model_id})
    assert created.status_code == 201, created.text
    assert created.json()["options"]["backend_options"]["model"] == job["model_path"]
    chat = serve.client.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert chat.status_code == 200
    [listed] = serve.client.get("/v1/models").json()["data"]
    assert (listed["id"], listed["status"], listed["context_length"]) == ("tiny", "running", 512)
    assert listed["meta"]["architecture"] == "llama" and listed["meta"]["size"] == len(weights)

    assert serve.client.delete("/api/v1/models", params={"repo": REPO}).status_code == 204
    assert serve.client.get("/api/v1/models").json() == []
    again = serve.client.delete("/api/v1/models", params={"repo": REPO})
    assert again.status_code == 404 and again.json()["error"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo": "../../etc"}, "repo"),
        ({"repo": "org/model", "format": "zip"}, "format"),
        ({"format": "gguf"}, "repo"),
        ({"repo": "org/model", "extra": 1}, "extra"),
    ],
)
def test_a_bad_download_request_is_a_400_naming_the_field(
    serve: Serve, body: dict[str, Any], field: str
) -> None:
    answer = serve.client.post("/api/v1/models/download", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["details"]
    assert serve.client.get("/api/v1/models/jobs").json() == {"jobs": []}


def test_a_download_that_fails_ends_failed_naming_the_repo_and_unknown_jobs_are_404(serve: Serve) -> None:
    started = serve.client.post("/api/v1/models/download", json={"repo": "org/missing"})
    job = finished_job(serve, started.json()["job_id"])
    assert job["status"] == "failed" and "org/missing" in job["error"]
    assert serve.client.get("/api/v1/models/jobs/nope").status_code == 404
    assert serve.client.delete("/api/v1/models/jobs/nope").status_code == 404
    assert serve.client.delete(f"/api/v1/models/jobs/{job['id']}").status_code == 204
    assert serve.client.get(f"/api/v1/models/jobs/{job['id']}").status_code == 404


def test_the_system_shows_the_machines_memory_and_the_budget(serve: Serve) -> None:
    system = serve.client.get("/api/v1/system").json()
    memory = system["memory"]
    assert 0 < memory["available_bytes"] <= memory["total_bytes"] and 0 < memory["used_percent"] < 100
    assert system["memory_budget_bytes"] == memory["total_bytes"] // 2
    assert system["gpus"] == []  # no nvidia-ml-py, no GPU here
    assert httpx.get(serve.base_url + "/api/v1/system").status_code == 401


def test_a_model_larger_than_the_budget_is_a_503_with_the_figures_and_nothing_is_stopped(
    serve: Serve, tmp_path: Path
) -> None:
    serve.create("small")
    # Declared 64 layers of 8192-wide f16 matrices: far more than half of any test machine's RAM.
    huge = write_llama_gguf(tmp_path / "huge.gguf", LlamaShape(embedding=8192, feed_forward=28672, layers=64))
    body = {"backend_type": "llama_cpp", "backend_options": {"model": str(huge)}}
    assert serve.client.post("/api/v1/instances/huge", json=body).status_code == 201
    answer = serve.client.post("/v1/chat/completions", json={"model": "huge", "messages": []})
    assert answer.status_code == 503
    message = answer.json()["error"]["message"]
    assert message.startswith("huge needs ~") and "more than the whole memory budget" in message
    assert "retry-after" in answer.headers
    statuses = {i["name"]: i["status"] for i in serve.client.get("/api/v1/instances").json()}
    assert statuses == {"small": "running", "huge": "stopped"}
