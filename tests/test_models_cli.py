"""`llamactl models …` and `llamactl stats` against a running `llamactl serve`, as a user types them.

The server finds synthetic stores (tests/models/stores.py) and downloads from
the stand-in hub (tests/models/standin_hub.py) into the same hub cache, so
nothing of this machine's models is listed and nothing reaches the internet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from tests.e2e.tiny_models import write_tiny_gguf
from tests.models.standin_hub import StandinHub
from tests.models.stores import GGUF_REPO, ServedStores, build_served_stores
from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process

HF_GGUF_ID = f"hf:{GGUF_REPO}:tiny-F32"
OLLAMA_ID = "ollama:tiny:latest"
CLI_DEADLINE = 60.0


@dataclass
class Running:
    serve: Serve
    hub: StandinHub
    stores: ServedStores
    tiny_gguf: bytes

    def environment(self) -> dict[str, str]:
        return {**os.environ, "LLAMACTL_URL": self.serve.base_url, "LLAMACTL_API_KEY": MANAGEMENT_KEY}

    def llamactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llamactl", *args],
            capture_output=True,
            text=True,
            timeout=CLI_DEADLINE,
            env=self.environment(),
        )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    stores = build_served_stores(tmp_path_factory.mktemp("stores"))
    tiny_gguf = write_tiny_gguf(tmp_path_factory.mktemp("hub-files") / "tiny.gguf").read_bytes()
    with StandinHub() as hub:
        environment = {**stores.environment, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
        with serve_process(tmp_path_factory.mktemp("serve"), environment=environment) as serve:
            yield Running(serve, hub, stores, tiny_gguf)


def wait_until(condition: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    ends = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError(f"no {what} within {deadline} s")
        time.sleep(0.05)


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_models_list_shows_every_model_and_a_filter_narrows_it(running: Running) -> None:
    listed = running.llamactl("models", "list")
    assert listed.returncode == 0, listed.stderr
    [header, *rows] = table(listed.stdout)
    assert header == ["ID", "FORMAT", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE", "EST.", "MEMORY"]
    by_id = {row[0]: row for row in rows}
    assert {HF_GGUF_ID, f"hf:{GGUF_REPO}:tiny-F16", "hf:test-org/tiny-llama", OLLAMA_ID} <= set(by_id)
    assert by_id[HF_GGUF_ID][1:6] == ["gguf", "llama", "96K", "F32", "512"]
    assert by_id[f"hf:{GGUF_REPO}:tiny-F16"][1:6] == ["gguf", "llama", "86K", "F16", "4096"]
    assert by_id["hf:test-org/tiny-llama"][1:3] == ["safetensors", "llama"]
    # sizes and estimates as people read them: "526 KiB", "26 MiB"
    assert by_id[HF_GGUF_ID][7] == "KiB" and by_id[HF_GGUF_ID][9] == "MiB"

    narrowed = running.llamactl("models", "list", "TINY-gguf")
    assert narrowed.returncode == 0, narrowed.stderr
    assert {row[0] for row in table(narrowed.stdout)[1:]} == {HF_GGUF_ID, f"hf:{GGUF_REPO}:tiny-F16"}
    nothing = running.llamactl("models", "list", "no-such-model")
    assert table(nothing.stdout)[1:] == []


def test_models_show_prints_the_facts_then_the_details(running: Running) -> None:
    shown = running.llamactl("models", "show", OLLAMA_ID)
    assert shown.returncode == 0, shown.stderr
    facts, _, details = shown.stdout.partition("\n\n")
    lines = dict(line.split(maxsplit=1) for line in facts.splitlines() if not line.startswith("chat"))
    assert lines["id"] == OLLAMA_ID
    assert lines["format"] == "gguf" and lines["architecture"] == "llama"
    assert lines["context"] == "512" and lines["quantization"] == "F32"
    assert lines["adapter"] == str(running.stores.ollama.adapter_blobs[0])
    assert "chat template  yes" in facts
    assert '"block_count": 2' in details and '"system_prompt": "You are a tiny test model."' in details


def test_models_show_of_an_unknown_id_names_it(running: Running) -> None:
    missing = running.llamactl("models", "show", "hf:nobody/nothing:Q4")
    assert missing.returncode == 2 and "404" in missing.stderr and "hf:nobody/nothing:Q4" in missing.stderr
    # a dot segment would be resolved by httpx into another route: refused before any request
    escaped = running.llamactl("models", "show", "../instances/x")
    assert escaped.returncode == 2 and "is not a catalogue id" in escaped.stderr


def test_pull_shows_progress_then_the_model_is_listed_and_rm_removes_it(running: Running) -> None:
    running.hub.add_commit("pulled-org/pulled-GGUF", {"pulled-Q4_K_M.gguf": running.tiny_gguf})
    pulled = running.llamactl("models", "pull", "pulled-org/pulled-GGUF:Q4_K_M")
    assert pulled.returncode == 0, pulled.stderr
    model_path = Path(pulled.stdout.strip())
    assert model_path.name == "pulled-Q4_K_M.gguf" and model_path.read_bytes() == running.tiny_gguf
    assert model_path.is_relative_to(running.stores.hf.root)
    # stderr is not a terminal here: plain lines, the last one the whole file
    assert "100%" in pulled.stderr.splitlines()[-1] and "pulled-Q4_K_M.gguf" in pulled.stderr
    assert "\r" not in pulled.stderr

    listed = running.llamactl("models", "list", "pulled")
    assert [row[:2] for row in table(listed.stdout)[1:]] == [
        ["hf:pulled-org/pulled-GGUF:pulled-Q4_K_M", "gguf"]
    ]
    removed = running.llamactl("models", "rm", "pulled-org/pulled-GGUF")
    assert (removed.returncode, removed.stdout) == (0, "removed pulled-org/pulled-GGUF\n")
    assert table(running.llamactl("models", "list", "pulled").stdout)[1:] == []
    again = running.llamactl("models", "rm", "pulled-org/pulled-GGUF")
    assert again.returncode == 2 and "model not found: pulled-org/pulled-GGUF" in again.stderr


def test_a_pull_of_a_missing_repo_fails_naming_it(running: Running) -> None:
    missing = running.llamactl("models", "pull", "nobody-org/absent-GGUF")
    assert missing.returncode == 2
    assert "the download of nobody-org/absent-GGUF failed" in missing.stderr
    assert "repository not found" in missing.stderr
    malformed = running.llamactl("models", "pull", "not a repo")
    assert malformed.returncode == 2 and "400: repo: must be 'org/model'" in malformed.stderr


def test_ctrl_c_cancels_the_pull(running: Running) -> None:
    file_name = "slow-Q4_K_M.gguf"
    running.hub.add_commit("slow-org/slow-GGUF", {file_name: os.urandom(4 * DOWNLOAD_CHUNK_SIZE)})
    running.hub.throttle(1.5 * DOWNLOAD_CHUNK_SIZE)  # about 3 s for the file: time to press Ctrl-C
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "llamactl", "models", "pull", "slow-org/slow-GGUF"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=running.environment(),
        ) as pulling:
            wait_until(
                lambda: any(r.bytes_sent for r in running.hub.file_requests(file_name)), "transfer under way"
            )
            pulling.send_signal(signal.SIGINT)
            _, stderr = pulling.communicate(timeout=CLI_DEADLINE)
    finally:
        running.hub.throttle(None)
    assert pulling.returncode == 130, stderr
    assert "cancelled the download of slow-org/slow-GGUF" in stderr
    jobs = running.serve.client.get("/api/v1/models/jobs").json()["jobs"]
    assert [job["status"] for job in jobs if job["repo"] == "slow-org/slow-GGUF"] == ["cancelled"]
    wait_until(lambda: running.hub.transfers_in_flight() == 0, "end of the transfer")


def test_stats_shows_the_running_instances_and_the_system_memory(running: Running) -> None:
    client = running.serve.client
    pids = {"STANDIN_PIDS": str(running.serve.pids)}
    body = {"model": HF_GGUF_ID, "environment": pids}
    assert client.post("/api/v1/instances/model-context", json=body).status_code == 201
    sized = {**body, "backend_options": {"ctx_size": 256, "parallel": 2}}
    assert client.post("/api/v1/instances/own-context", json=sized).status_code == 201
    assert client.post("/api/v1/instances/idle", json=body).status_code == 201
    try:
        for name in ("model-context", "own-context"):
            assert client.post(f"/api/v1/instances/{name}/start").json()["status"] == "running"
        stats = running.llamactl("stats")
        assert stats.returncode == 0, stats.stderr
        [header, *rows, system] = stats.stdout.splitlines()
        assert header.split()[:3] == ["NAME", "BACKEND", "STATUS"]
        assert "CONTEXT  SLOTS  QUEUED  IN FLIGHT  EST. MEMORY  REPORTED  MEASURED" in header
        by_name = {row.split()[0]: row.split() for row in rows}
        assert set(by_name) == {"model-context", "own-context"}  # the stopped one holds no memory
        # the model's own context (512) with llama-server's automatic 4 slots; then the options' own
        assert by_name["model-context"][1:7] == ["llama_cpp", "running", "512", "4", "0", "0"]
        assert by_name["own-context"][1:7] == ["llama_cpp", "running", "256", "2", "0", "0"]
        estimated, estimated_unit, *_, measured, measured_unit = by_name["model-context"][7:]
        assert estimated_unit == "MiB" and float(estimated) > 0
        assert measured_unit in ("MiB", "GiB") and float(measured) > 0
        assert system.startswith("system memory: ") and " total, " in system and "% used)" in system
        assert system.endswith("; no memory budget")
    finally:
        for name in ("model-context", "own-context", "idle"):
            client.post(f"/api/v1/instances/{name}/stop")
            client.delete(f"/api/v1/instances/{name}")
    assert running.llamactl("stats").stdout.startswith("no instance is running\nsystem memory: ")
