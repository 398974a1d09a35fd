"""Swap storm: two models, room for one, clients alternating between them with streamed chats.

    .venv/bin/python -m bench.swap_storm [--clients 6] [--requests 6] [--load-time 0.5]

Each client sends ``--requests`` streamed chats. In the "alternating" pattern
it alternates between the two instances, half the clients starting with each,
so both are wanted at once from the first moment; in the "random" pattern each
request picks one at random, so both are wanted all the time. Each pattern
runs twice against the same stand-in backends:

- llamactl's swap policy (``swap_fairness_window``, 10 s by default): a
  running instance keeps serving until the other's oldest request has waited
  the window or it has nothing left, then the swap serves every queued request;
- FIFO: ``swap_fairness_window: 0``, the running instance closes as soon as the
  other has a request waiting.

Both are compared with strict FIFO on the same arrival order (one swap each
time the next request in line is for the other model), computed from the
requests as they arrived. A "round" is one request from every client; a swap
is a backend start after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from pathlib import Path

import httpx

from bench.server_process import HEADERS, create_standin_instance, start_llamactl

STREAM_CHUNKS = 10
CHUNK_DELAY = 0.02
"""A stream of ten tokens 20 ms apart, as a small model on a CPU."""


class Outcome:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.cut_streams = 0
        self.arrivals: list[tuple[float, str]] = []
        self.latencies: list[float] = []


MODELS = ("alpha", "beta")


async def client_run(
    client: httpx.AsyncClient, pattern: str, first: int, requests: int, outcome: Outcome, rng: random.Random
) -> None:
    for index in range(requests):
        model = MODELS[(first + index) % 2] if pattern == "alternating" else rng.choice(MODELS)
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "chunks": STREAM_CHUNKS,
            "chunk_delay": CHUNK_DELAY,
        }
        began = time.perf_counter()
        outcome.arrivals.append((began, model))
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            text = (await response.aread()).decode()
        outcome.latencies.append(time.perf_counter() - began)
        outcome.statuses.append(response.status_code)
        if response.status_code == 200 and not text.rstrip().endswith("data: [DONE]"):
            outcome.cut_streams += 1
        await asyncio.sleep(rng.uniform(0, 0.05))  # the user reads the answer


async def storm(base: str, pattern: str, clients: int, requests: int, seed: int) -> tuple[Outcome, float]:
    outcome = Outcome()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=300, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(
            *(client_run(client, pattern, i % 2, requests, outcome, rng) for i in range(clients))
        )
        return outcome, time.perf_counter() - began


def starts(pid_file: Path) -> int:
    return len(pid_file.read_text().split()) if pid_file.exists() else 0


def strict_fifo_swaps(arrivals: list[tuple[float, str]]) -> int:
    order = [model for _, model in sorted(arrivals)]
    return sum(1 for before, after in itertools.pairwise(order) if before != after)


def run_policy(pattern: str, label: str, window: float, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        tail = (
            f"max_running_instances: 1, swap_fairness_window: {window}, "
            f"default_restart_delay: 1, on_demand_start_timeout: 300"
        )
        process, base = start_llamactl(workdir, (30200, 30300), instances=tail)
        try:
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as admin:
                for name in MODELS:
                    create_standin_instance(
                        admin, name, f"load_time={args.load_time}", workdir / f"{name}.pids"
                    )
            outcome, seconds = asyncio.run(storm(base, pattern, args.clients, args.requests, args.seed))
        finally:
            process.terminate()
            process.wait(timeout=60)
        backend_starts = starts(workdir / "alpha.pids") + starts(workdir / "beta.pids")
    total = args.clients * args.requests
    failures = sum(1 for status in outcome.statuses if status >= 500)
    swaps_per_round = (backend_starts - 1) / args.requests
    print(
        f"{pattern:<12} {label:<22} {total:>5} {outcome.statuses.count(200):>5} {failures:>5} "
        f"{outcome.cut_streams:>5} {backend_starts:>7} {swaps_per_round:>12.2f} "
        f"{strict_fifo_swaps(outcome.arrivals):>11} {seconds:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--requests", type=int, default=6, help="per client, alternating models")
    parser.add_argument("--load-time", type=float, default=0.5, help="seconds the stand-in takes to load")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"swap storm: 2 instances, max_running_instances 1, {args.clients} clients x {args.requests} "
        f"streamed chats, {STREAM_CHUNKS} chunks {CHUNK_DELAY * 1000:.0f} ms apart, "
        f"model load {args.load_time * 1000:.0f} ms"
    )
    print(
        f"{'pattern':<12} {'policy':<22} {'reqs':>5} {'200':>5} {'5xx':>5} {'cut':>5} {'starts':>7} "
        f"{'swaps/round':>12} {'strict FIFO':>11} {'wall s':>8}"
    )
    for pattern in ("alternating", "random"):
        run_policy(pattern, "llamactl (window 10s)", 10.0, args)
        run_policy(pattern, "FIFO (window 0)", 0.0, args)


if __name__ == "__main__":
    main()
