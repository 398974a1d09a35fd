"""llamactl with 200 configured (stopped) instances: list latency and idle memory.

    .venv/bin/python -m bench.scale [--instances N] [--requests N]

Prints the median and p99 latency of `GET /api/v1/instances`, `GET /v1/models` and a
`GET /metrics` scrape (issue 10: under 20 ms with 200 instances),
each as a ratio of `GET /api/v1/version` (the same server doing almost nothing),
and llamactl's resident memory before and after creating the instances.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.server_process import HEADERS, rss_megabytes, start_llamactl


def timed(client: httpx.Client, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        process, base = start_llamactl(Path(scratch), (20000, 29999))
        try:
            with httpx.Client(base_url=base, headers=HEADERS) as client:
                time.sleep(1)
                empty_rss = rss_megabytes(process.pid)
                body = {
                    "backend_type": "llama_cpp",
                    "backend_options": {"model": "/m/q.gguf", "ctx_size": 4096},
                }
                for index in range(args.instances):
                    client.post(f"/api/v1/instances/model-{index:03d}", json=body).raise_for_status()
                time.sleep(1)
                full_rss = rss_megabytes(process.pid)
                results = {
                    path: timed(client, path, args.requests)
                    for path in ("/api/v1/version", "/api/v1/instances", "/v1/models", "/metrics")
                }
        finally:
            process.terminate()
            process.wait(timeout=30)
    baseline = statistics.median(results["/api/v1/version"])
    print(f"{args.instances} stopped instances, {args.requests} sequential requests each")
    print(f"{'request':22} {'median ms':>10} {'p99 ms':>8} {'x version':>10}")
    for path, samples in results.items():
        median = statistics.median(samples)
        p99 = statistics.quantiles(samples, n=100)[-1]
        print(f"GET {path:18} {median * 1000:10.2f} {p99 * 1000:8.2f} {median / baseline:10.2f}")
    print(f"\nllamactl RSS: {empty_rss:.1f} MB with no instance, {full_rss:.1f} MB with {args.instances}")


if __name__ == "__main__":
    main()
