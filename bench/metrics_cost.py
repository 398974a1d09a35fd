"""What the metrics and the activity log add to each proxied request, measured in this process.

    .venv/bin/python -m bench.metrics_cost [--requests N]

The proxy builds one ``RequestOutcome`` per request and hands it to its
observers (``Metrics.observe``, ``ActivityLog.observe``), on the event loop,
on the request's path. This times that whole step (the outcome built as the
proxy builds it, then both observers) against the same loop with no observer,
as the baseline. Issue 10's budget: at most 0.02 ms added per request.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from llamactl.server.activity import ActivityLog
from llamactl.server.metrics import Metrics
from llamactl.server.request_outcome import RequestOutcome
from llamactl.store import Store
from tests.instance.helpers import manager

ROUNDS = 7


def outcome(index: int) -> RequestOutcome:
    return RequestOutcome(
        time=time.time(),
        instance=f"model-{index % 8}",
        backend="llama_cpp",
        endpoint="/v1/chat/completions",
        method="POST",
        model=f"model-{index % 8}",
        key_name="management",
        status=200,
        queue_wait_seconds=0.0004,
        ttfb_seconds=0.003,
        streamed=index % 2 == 0,
        duration_seconds=0.004,
        prompt_tokens=12,
        completion_tokens=30,
    )


async def per_request(requests: int, observers: list[object]) -> float:
    """Seconds per request of building the outcome and telling ``observers``."""
    calls = [observer for observer in observers if callable(observer)]
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.perf_counter()
        for index in range(requests):
            record = outcome(index)
            for observe in calls:
                observe(record)
        best = min(best, (time.perf_counter() - began) / requests)
        await asyncio.sleep(0)  # the activity log's flush task runs between rounds
    return best


async def measure(requests: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        instances = manager(Path(scratch))
        metrics = Metrics(instances)
        store = Store(Path(scratch) / "activity.db")
        activity = ActivityLog(store, retention=1000)
        activity.open()
        try:
            baseline = await per_request(requests, [])
            observed = await per_request(requests, [metrics.observe, activity.observe])
        finally:
            await activity.close()
            store.close()
    return baseline, observed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    baseline, observed = asyncio.run(measure(args.requests))
    added = observed - baseline
    print(f"{args.requests} outcomes per round, best of {ROUNDS} rounds")
    print(f"{'case':40} {'us/request':>10}")
    print(f"{'outcome built, no observer (baseline)':40} {baseline * 1e6:10.2f}")
    print(f"{'metrics and activity log':40} {observed * 1e6:10.2f}")
    verdict = "met" if added <= 20e-6 else "NOT met"
    print(f"added per request: {added * 1e3:.4f} ms (budget 0.02 ms): {verdict}")


if __name__ == "__main__":
    main()
