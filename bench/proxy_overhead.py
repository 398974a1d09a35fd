"""What llamactl's proxy costs, against direct access and nginx, measured in one run.

    .venv/bin/python -m bench.proxy_overhead [--requests N] [--stream-chunks N]

Starts the stand-in backend (tests/standin_backend.py), `llamactl serve` with
an instance on that backend, and nginx (Debian's package, if installed) as a
reverse proxy in front of the same backend, all on loopback. The load
generator, llamactl, nginx and the backend share this machine's cores. It prints:

- small non-streamed requests, one at a time: median and p99 latency, the
  median added over direct access, and each server's CPU time per request.
  ``uvicorn-only`` (``bench/uvicorn_floor.py``) is uvicorn as llamactl runs
  it, answering by itself: the floor under what a Python proxy can add here;
- streamed chunks per second with 1 and 32 concurrent streams, as a ratio of direct,
  and the proxy's own CPU time per relayed chunk (user + system, its whole
  process tree), as a ratio of nginx's: on a machine that runs inference on
  its CPU, the proxy's cycles are the model's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
import httpx
import psutil

from bench.server_process import HEADERS, KEY, STANDIN, free_port, start_llamactl, wait_until_up

ROUNDS = 5
NGINX_CONFIG = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


@contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield child
    finally:
        child.terminate()
        child.wait(timeout=30)


def start_llamactl_instance(stack: ExitStack, workdir: Path, backend_port: int) -> tuple[str, int]:
    """`llamactl serve` with a running instance "bench" on the stand-in; its base URL and PID."""
    server, base = start_llamactl(workdir, (backend_port + 1, backend_port + 50))
    stack.callback(server.wait, 30)
    stack.callback(server.terminate)
    body = {"backend_type": "llama_cpp", "backend_options": {"model": "/m/bench.gguf", "alias": "bench"}}
    httpx.post(base + "/api/v1/instances/bench", json=body, headers=HEADERS).raise_for_status()
    httpx.post(base + "/api/v1/instances/bench/start", headers=HEADERS, timeout=60).raise_for_status()
    return base, server.pid


def start_nginx(stack: ExitStack, workdir: Path, backend_port: int) -> tuple[str, int] | None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(dir=workdir, backend=backend_port, port=port))
    master = stack.enter_context(process([nginx, "-c", str(config), "-g", "daemon off;"]))
    wait_until_up(f"http://127.0.0.1:{port}/health")
    return f"http://127.0.0.1:{port}", master.pid


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its children (nginx's workers), so far.

    llamactl's own tree holds the backends too: only its main process is counted then.
    """
    root = psutil.Process(pid)
    processes = [root] if root.name().startswith("python") else [root, *root.children(recursive=True)]
    total: float = sum(p.cpu_times().user + p.cpu_times().system for p in processes)
    return total


async def latencies(base: str, count: int) -> list[float]:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    times = []
    async with aiohttp.ClientSession() as session:
        for index in range(count + count // 10):
            start = time.perf_counter()
            async with session.post(base + "/v1/chat/completions", json=body, headers=headers) as response:
                await response.read()
                assert response.status == 200
            if index >= count // 10:  # the first tenth warms up
                times.append(time.perf_counter() - start)
    return times


async def chunk_rate(base: str, streams: int, chunks: int) -> float:
    body = {"model": "bench", "messages": [], "stream": True, "chunks": chunks}
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=0)

    async def one(session: aiohttp.ClientSession) -> int:
        received = 0
        async with session.post(base + "/v1/chat/completions", json=body, headers=headers) as response:
            async for line in response.content:
                received += line.startswith(b"data: ")
        return received

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(streams)))  # warm-up
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(session) for _ in range(streams)))
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stream-chunks", type=int, default=400)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        backend_port = free_port()
        stand_in = stack.enter_context(
            process([sys.executable, str(STANDIN), "--port", str(backend_port), "--alias", "bench"])
        )
        direct = f"http://127.0.0.1:{backend_port}"
        wait_until_up(direct + "/health")
        llamactl_base, llamactl_pid = start_llamactl_instance(stack, workdir, backend_port)
        targets = {"direct": direct, "llamactl": llamactl_base}
        proxy_pids = {"llamactl": llamactl_pid}
        nginx = start_nginx(stack, workdir, backend_port)
        if nginx is not None:
            targets["nginx"], proxy_pids["nginx"] = nginx
        floor_port = free_port()
        floor = stack.enter_context(process([sys.executable, "-m", "bench.uvicorn_floor", str(floor_port)]))
        floor_base = f"http://127.0.0.1:{floor_port}"
        wait_until_up(floor_base + "/")

        # Rounds alternate between the targets, so a burst of load elsewhere on the
        # machine hits all of them alike.
        print(f"small requests, one at a time ({args.requests} each in {ROUNDS} rounds, after warm-up)")
        print(f"{'target':13} {'median ms':>10} {'p99 ms':>8} {'added median ms':>16} {'CPU us/request':>15}")
        small = {**targets, "uvicorn-only": floor_base}
        servers = {**proxy_pids, "direct": stand_in.pid, "uvicorn-only": floor.pid}
        per_round = args.requests // ROUNDS
        sent = ROUNDS * (per_round + per_round // 10)  # the warm-up requests cost CPU too
        times: dict[str, list[float]] = {name: [] for name in small}
        busy = dict.fromkeys(small, 0.0)
        for _ in range(ROUNDS):
            for name, base in small.items():
                before = cpu_seconds(servers[name])
                times[name] += asyncio.run(latencies(base, per_round))
                busy[name] += cpu_seconds(servers[name]) - before
        direct_median = statistics.median(times["direct"])
        for name, samples in times.items():
            median = statistics.median(samples)
            p99 = statistics.quantiles(samples, n=100)[-1]
            added = (median - direct_median) * 1000
            per_request = busy[name] / sent * 1e6
            print(f"{name:13} {median * 1000:10.3f} {p99 * 1000:8.3f} {added:16.3f} {per_request:15.0f}")

        for streams in (1, 32):
            print(
                f"\nstreamed chunks per second, {streams} concurrent stream(s) of {args.stream_chunks} chunks"
            )
            print(f"{'target':10} {'chunks/s':>10} {'x direct':>9} {'x nginx':>8} {'CPU us/chunk':>13}")
            rates: dict[str, list[float]] = {name: [] for name in targets}
            cpu = dict.fromkeys(proxy_pids, 0.0)
            relayed = streams * args.stream_chunks * 2 * ROUNDS  # warm-up and measured
            for _ in range(ROUNDS):
                for name, base in targets.items():
                    before = cpu_seconds(proxy_pids[name]) if name in proxy_pids else 0.0
                    rates[name].append(asyncio.run(chunk_rate(base, streams, args.stream_chunks)))
                    if name in proxy_pids:
                        cpu[name] += cpu_seconds(proxy_pids[name]) - before
            direct_rate = statistics.median(rates["direct"])
            nginx_rate = statistics.median(rates["nginx"]) if "nginx" in rates else None
            for name, samples in rates.items():
                rate = statistics.median(samples)
                versus_nginx = f"{rate / nginx_rate:8.2f}" if nginx_rate else f"{'-':>8}"
                per_chunk = f"{cpu[name] / relayed * 1e6:13.1f}" if name in cpu else f"{'-':>13}"
                print(f"{name:10} {rate:10.0f} {rate / direct_rate:9.2f} {versus_nginx} {per_chunk}")
            if "nginx" in cpu and cpu["nginx"] > 0:
                print(f"llamactl's CPU per chunk: {cpu['llamactl'] / cpu['nginx']:.2f}x nginx's")


if __name__ == "__main__":
    main()
