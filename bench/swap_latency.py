"""Swap latency: a request for B while A runs (room for one), to B's first byte, less the backends' times.

    .venv/bin/python -m bench.swap_latency [--runs N] [--load-time S]

Through llamactl, each run: A is running and idle, a streamed chat names B,
and the time to its first byte is taken. Measured directly in the same run,
alternating: the stand-in's own stop (SIGTERM until it has exited) and its own
start (spawn until /health answers 200). What is left is llamactl's share of
a swap: scheduling, the watchdog, noticing the exit, readiness polling and
the proxy.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.cold_start import direct_ready_seconds
from bench.server_process import (
    HEADERS,
    STANDIN,
    create_standin_instance,
    first_byte_seconds,
    free_port,
    start_llamactl,
)


def direct_stop_seconds() -> float:
    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(STANDIN), "--port", str(port)], stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    with httpx.Client(timeout=1) as client:
        while True:
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.005)
    began = time.perf_counter()
    backend.send_signal(signal.SIGTERM)
    backend.wait()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--load-time", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        process, base = start_llamactl(Path(scratch), (30400, 30500), instances="max_running_instances: 1")
        try:
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
                for name in ("a", "b"):
                    create_standin_instance(client, name, f"load_time={args.load_time}")
                client.post("/api/v1/instances/a/start").raise_for_status()
                swaps, stops, readies = [], [], []
                models = ["b", "a"] * args.runs
                for model in models[: args.runs]:  # each run swaps the other one out
                    stops.append(direct_stop_seconds())
                    readies.append(direct_ready_seconds(args.load_time))
                    swaps.append(first_byte_seconds(client, model))
        finally:
            process.terminate()
            process.wait(timeout=30)
    swap, stop, ready = statistics.median(swaps), statistics.median(stops), statistics.median(readies)
    print(f"swap latency, {args.runs} runs, stand-in loading for {args.load_time * 1000:.0f} ms")
    print(f"backend alone, SIGTERM to exit:         median {stop * 1000:7.1f} ms")
    print(f"backend alone, spawn to ready:          median {ready * 1000:7.1f} ms")
    print(f"through llamactl, request to 1st byte:  median {swap * 1000:7.1f} ms")
    print(f"llamactl overhead (swap - stop - ready): median {(swap - stop - ready) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
