"""A database locked by another program: how long requests that write to it take, locked and not.

    .venv/bin/python -m bench.store_lock [--rounds N] [--hold SECONDS]

Each round holds the write lock of ``llamactl.db`` from another connection
(``BEGIN IMMEDIATE``) for --hold seconds, as a backup tool or a second
``sqlite3`` shell would, and meanwhile times requests: the first use of a
new API key (it writes ``last_used_at``), another client's request at the
same moment (it writes nothing, but shares the event loop), and, under a
second hold, an on-demand start of a stopped instance (it writes
``was_running`` and the process ledger). The same requests without the lock
are the baseline.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from bench.server_process import HEADERS, free_port
from tests.serve_process import MANAGEMENT_KEY, ServeProcess, standin_backends, write_config

T = TypeVar("T")
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def timed(client: httpx.Client, model: str, key: str) -> float:
    began = time.perf_counter()
    answer = client.post(
        "/v1/chat/completions", json={**CHAT, "model": model}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, (model, answer.text)
    return time.perf_counter() - began


def while_locked(database: Path, hold: float | None, measure: Callable[[], T]) -> T:
    """``measure()`` while another connection holds the write lock for ``hold`` seconds (None: no lock)."""
    if hold is None:
        return measure()
    locker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(hold, locker.execute, ("COMMIT",))
    release.start()
    try:
        return measure()
    finally:
        release.join()
        locker.close()


def round_(client: httpx.Client, bystander: httpx.Client, database: Path, hold: float | None) -> list[float]:
    """Seconds taken by: a new key's first use, another client's request meanwhile, an on-demand start."""
    client.post("/api/v1/instances/cold/stop").raise_for_status()
    body = {"name": "bench", "permission_mode": "per_instance", "instances": ["warm", "cold"]}
    key = client.post("/api/v1/auth/keys", json=body).raise_for_status().json()["key"]

    def first_use_and_bystander() -> list[float]:
        meanwhile: list[float] = []
        # another client, on its own connection, with a key used before: its request writes nothing
        other = threading.Timer(0.1, lambda: meanwhile.append(timed(bystander, "warm", MANAGEMENT_KEY)))
        other.start()
        first_use = timed(client, "warm", key)
        other.join()
        return [first_use, *meanwhile]

    timings = while_locked(database, hold, first_use_and_bystander)
    return [*timings, while_locked(database, hold, lambda: timed(client, "cold", key))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold", type=float, default=2.0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        config, port = Path(workdir) / "llamactl.yaml", free_port()
        write_config(config, Path(workdir) / "data", port, standin_backends((18800, 18899)))
        with (
            ServeProcess(config, port) as serving,
            httpx.Client(base_url=serving.base_url, headers=HEADERS, timeout=30) as client,
            httpx.Client(base_url=serving.base_url, timeout=30) as bystander,
        ):
            instance = {"backend_type": "llama_cpp", "backend_options": {"model": "/m/tiny.gguf"}}
            for name in ("warm", "cold"):
                client.post(f"/api/v1/instances/{name}", json=instance).raise_for_status()
            client.post("/api/v1/instances/warm/start").raise_for_status()
            database = Path(workdir) / "data" / "llamactl.db"
            free = [round_(client, bystander, database, None) for _ in range(arguments.rounds)]
            locked = [round_(client, bystander, database, arguments.hold) for _ in range(arguments.rounds)]
            serving.stop()
    print(f"{arguments.rounds} rounds; the write lock held {arguments.hold:.1f} s by another connection")
    print(f"{'request':34} {'unlocked ms':>12} {'locked ms':>10} {'x unlocked':>11}")
    labels = ("first use of a new key", "another client meanwhile", "on-demand start of an instance")
    for index, label in enumerate(labels):
        baseline = statistics.median(times[index] for times in free) * 1000
        measured = statistics.median(times[index] for times in locked) * 1000
        print(f"{label:34} {baseline:12.1f} {measured:10.1f} {measured / baseline:11.2f}")


if __name__ == "__main__":
    main()
