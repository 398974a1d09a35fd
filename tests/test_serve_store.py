"""`llamactl serve` over its database, as a user meets it: grants go with their instance, secrets
stay out of the instance log and ``GET /config``, its files are private, and a database locked by
another program holds up no request."""

from __future__ import annotations

import sqlite3
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.instance.helpers import STANDIN
from tests.serve_process import Serve, ServeProcess, free_port, serve_process, write_config


def standin_backends(port_range: tuple[int, int], args: str = "", environment: str = "{}") -> str:
    """The stand-in as llama-cpp backend, with more ``args`` (flow-sequence members) and ``environment``."""
    return f"""
backends:
  llama-cpp: {{command: {sys.executable}, args: [{STANDIN}{args}], environment: {environment}}}
instances: {{port_range: [{port_range[0]}, {port_range[1]}]}}
"""


def declarations(pids: Path, *names: str) -> str:
    models = "".join(
        f"  {name}:\n    command: STANDIN_PIDS={pids} llama-server -m /m/{name}.gguf\n" for name in names
    )
    return "models:\n" + models if names else ""


def standin_instance(pids: Path, **options: Any) -> dict[str, Any]:
    return {
        "backend_type": "llama_cpp",
        "backend_options": {"model": "/m/tiny.gguf"},
        "environment": {"STANDIN_PIDS": str(pids)},
        **options,
    }


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def create_key(client: httpx.Client, *instances: str) -> tuple[int, str]:
    body = {"name": "app", "permission_mode": "per_instance", "instances": list(instances)}
    created = client.post("/api/v1/auth/keys", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_reload_that_drops_an_instance_drops_its_grants_and_a_namesake_inherits_none(
    tmp_path: Path,
) -> None:
    backends = standin_backends((18700, 18719))
    config, port, pids = tmp_path / "llamactl.yaml", free_port(), tmp_path / "pids"

    def declare(*names: str) -> None:
        write_config(config, tmp_path / "data", port, backends + declarations(pids, *names))

    def reload(client: httpx.Client) -> dict[str, list[str]]:
        answer = client.post("/api/v1/config/reload")
        assert answer.status_code == 200, answer.text
        report: dict[str, list[str]] = answer.json()
        return report

    declare("alpha", "beta")
    with ServeProcess(config, port) as serving:
        client = Serve(serving, pids).client
        key_id, key = create_key(client, "alpha", "beta")
        inference = {"Authorization": f"Bearer {key}"}
        listed = client.get("/v1/models", headers=inference).json()["data"]
        assert sorted(model["id"] for model in listed) == ["alpha", "beta"]

        declare("beta")
        assert reload(client)["removed"] == ["alpha"]
        assert client.get(f"/api/v1/auth/keys/{key_id}").json()["instances"] == ["beta"]

        declare("alpha", "beta")
        assert reload(client)["created"] == ["alpha"]
        assert client.get(f"/api/v1/auth/keys/{key_id}").json()["instances"] == ["beta"]
        denied = client.post("/v1/chat/completions", json=chat("alpha"), headers=inference)
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "permission_denied")
        listed = client.get("/v1/models", headers=inference).json()["data"]
        assert [model["id"] for model in listed] == ["beta"]

        # removed through the API, the same
        assert client.post("/api/v1/instances/gamma", json=standin_instance(pids)).status_code == 201
        other_id, _ = create_key(client, "gamma")
        assert client.delete("/api/v1/instances/gamma").status_code == 204
        assert client.post("/api/v1/instances/gamma", json=standin_instance(pids)).status_code == 201
        assert client.get(f"/api/v1/auth/keys/{other_id}").json()["instances"] == []
        client.close()
        assert serving.stop() == 0

    # and the database agrees: after a restart, the grants are as they were left
    with ServeProcess(config, port) as serving:
        client = Serve(serving, pids).client
        keys = {key["id"]: key["instances"] for key in client.get("/api/v1/auth/keys").json()}
        assert keys == {key_id: ["beta"], other_id: []}
        client.close()
        assert serving.stop() == 0


def test_secrets_stay_out_of_the_instance_log_and_get_config_and_the_files_are_private(
    tmp_path: Path,
) -> None:
    secrets = ["cfg-flag-secret", "cfg-env-secret", "inst-key-1", "inst-key-2", "inst-hf-flag", "inst-hf-env"]
    backends = standin_backends((18720, 18739), ", --api-key, cfg-flag-secret", "{HF_TOKEN: cfg-env-secret}")
    with serve_process(tmp_path, backends) as serve:
        options = standin_instance(
            serve.pids,
            backend_options={"model": "/m/tiny.gguf", "api_key": secrets[2:4], "hf_token": secrets[4]},
            environment={"STANDIN_PIDS": str(serve.pids), "HF_TOKEN": secrets[5]},
        )
        assert serve.client.post("/api/v1/instances/chat", json=options).status_code == 201
        assert serve.client.post("/api/v1/instances/chat/start").status_code == 200
        assert serve.client.post("/api/v1/instances/chat/stop").status_code == 200
        log = serve.client.get("/api/v1/instances/chat/logs").text
        config = serve.client.get("/api/v1/config").text
    starting = next(line for line in log.splitlines() if "=== llamactl: starting:" in line)
    assert "--api-key '***' --api-key '***'" in starting and "'HF_TOKEN=***'" in starting
    assert "standin: listening" in log  # the log is the backend's, only the secrets are gone
    data = tmp_path / "data"
    on_disk = (data / "logs" / "chat.log").read_text()
    for secret in secrets:
        assert secret not in log and secret not in on_disk and secret not in config, secret
    assert '"HF_TOKEN":"***"' in config and '"--api-key","***"' in config
    assert (mode(data), mode(data / "logs")) == (0o700, 0o700)
    files = {path.name: mode(path) for path in data.iterdir() if path.is_file()}
    assert "llamactl.db" in files and set(files.values()) == {0o600}, files
    assert mode(data / "logs" / "chat.log") == 0o600


def test_a_database_locked_by_another_program_holds_up_no_request(tmp_path: Path) -> None:
    """Every request below writes to the database: a new key's first use, an on-demand start."""
    with serve_process(tmp_path, standin_backends((18740, 18759))) as serve:
        client = serve.client
        for name in ("running", "stopped"):
            assert (
                client.post(f"/api/v1/instances/{name}", json=standin_instance(serve.pids)).status_code == 201
            )
        assert client.post("/api/v1/instances/running/start").status_code == 200
        _, key = create_key(client, "running", "stopped")
        inference = {"Authorization": f"Bearer {key}"}
        locker = sqlite3.connect(
            tmp_path / "data" / "llamactl.db", isolation_level=None, check_same_thread=False
        )
        locker.execute("BEGIN IMMEDIATE")  # the write lock, held for 2 s
        released = threading.Timer(2.0, locker.execute, ("COMMIT",))
        released.start()
        try:
            began = time.monotonic()
            first_use = client.post("/v1/chat/completions", json=chat("running"), headers=inference)
            first_use_seconds = time.monotonic() - began
            began = time.monotonic()
            started = client.post("/v1/chat/completions", json=chat("stopped"), headers=inference)
            start_seconds = time.monotonic() - began
            still_locked = released.is_alive()
        finally:
            released.join()
            locker.close()
        assert (first_use.status_code, started.status_code) == (200, 200)
        assert still_locked, "the lock was released before the requests ended: they waited for it"
        assert first_use_seconds < 0.5, f"a key's first use took {first_use_seconds:.2f} s"
        assert start_seconds < 1.5, f"an on-demand start took {start_seconds:.2f} s"
        # what was written while locked is in the database once the lock is gone
        client.post("/api/v1/instances/stopped/stop")
        keys = client.get("/api/v1/auth/keys").json()
        assert keys[0]["last_used_at"] is not None
