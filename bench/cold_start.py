"""Cold start: from a request to a stopped instance until its first byte, minus the backend's own start.

    .venv/bin/python -m bench.cold_start [--runs N]

The backend's own time to readiness is measured directly in the same run:
spawn the stand-in and poll its /health every 5 ms until it answers 200. The
difference is what llamactl adds (its watchdog process, readiness polling,
routing). The stand-in's model "loads" for --load-time seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.server_process import (
    HEADERS,
    STANDIN,
    create_standin_instance,
    first_byte_seconds,
    free_port,
    start_llamactl,
)


def direct_ready_seconds(load_time: float) -> float:
    port = free_port()
    began = time.perf_counter()
    backend = subprocess.Popen(
        [sys.executable, str(STANDIN), "--port", str(port)],
        env={**os.environ, "STANDIN_FAULTS": f"load_time={load_time}"},
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1) as client:
            while True:
                try:
                    if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        return time.perf_counter() - began
                except httpx.HTTPError:
                    pass
                time.sleep(0.005)
    finally:
        backend.terminate()
        backend.wait()


def llamactl_first_byte_seconds(client: httpx.Client) -> float:
    client.post("/api/v1/instances/cold/stop").raise_for_status()
    return first_byte_seconds(client, "cold")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--load-time", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        process, base = start_llamactl(Path(scratch), (30000, 30100))
        try:
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
                create_standin_instance(client, "cold", f"load_time={args.load_time}")
                direct, through = [], []
                for _ in range(args.runs):  # alternating, so load elsewhere hits both alike
                    direct.append(direct_ready_seconds(args.load_time))
                    through.append(llamactl_first_byte_seconds(client))
        finally:
            process.terminate()
            process.wait(timeout=30)
    direct_median, through_median = statistics.median(direct), statistics.median(through)
    print(f"cold start, {args.runs} runs, stand-in loading for {args.load_time * 1000:.0f} ms")
    print(f"backend alone, spawn to ready:        median {direct_median * 1000:7.1f} ms")
    print(f"through llamactl, request to 1st byte: median {through_median * 1000:7.1f} ms")
    print(f"llamactl overhead:                     median {(through_median - direct_median) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
