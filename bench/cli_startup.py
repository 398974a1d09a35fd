"""How long `llamactl parse` takes to answer, against the interpreter's own start-up.

    .venv/bin/python -m bench.cli_startup [--runs N]

Runs each command N times in a fresh process and prints the median and p90
wall times, and each as a ratio of the baseline run in the same process:
``python -c pass``. The second line isolates what the dependencies cost:
bashlex builds its parser tables when imported, so llamactl imports it only
for commands with quotes, expansions or operators.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMAND = "CUDA_VISIBLE_DEVICES=0 llama-server -m /models/qwen.gguf -ngl 99 -c 8192 -fa on --jinja"
# Quotes send a command through bashlex, whose import builds its parser tables.
QUOTED_COMMAND = COMMAND + " --chat-template-kwargs '{\"enable_thinking\": false}'"

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import msgspec, bashlex'": [sys.executable, "-c", "import msgspec, bashlex"],
    "llamactl parse llama-cpp '<plain command>'": [
        sys.executable,
        "-m",
        "llamactl",
        "parse",
        "llama-cpp",
        COMMAND,
    ],
    "llamactl parse llama-cpp '<quoted command>'": [
        *(sys.executable, "-m", "llamactl", "parse", "llama-cpp", QUOTED_COMMAND)
    ],
    "llamactl --help": [sys.executable, "-m", "llamactl", "--help"],
}


def time_runs(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    results = {name: time_runs(argv, runs) for name, argv in CASES.items()}
    baseline = statistics.median(results["python -c pass (baseline)"])
    print(f"{runs} runs each; wall time of a fresh process")
    print(f"{'case':46} {'median ms':>10} {'p90 ms':>8} {'x baseline':>11}")
    for name, times in results.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{name:46} {median * 1000:10.1f} {p90 * 1000:8.1f} {median / baseline:11.2f}")


if __name__ == "__main__":
    main()
