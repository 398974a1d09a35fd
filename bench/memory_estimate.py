"""Memory accuracy: the pre-start estimate and llama-server's own report against its measured memory.

    .venv/bin/python -m bench.memory_estimate

For each case a random-weight f16 llama GGUF is written (the reference's
"mid" shape, 181 MB, and "big", 379 MB), estimated from its header as
llamactl does before a start, then served by the real llama-server at
``--log-verbosity 4``. Its buffer-size lines are parsed from its stderr, and
its memory is measured with the instance probe (RSS and PSS of the process
tree) twice: after a first small completion, and after a prompt that fills
the whole context. Only that one touches every page of the compute buffer:
llama.cpp sizes it for a full KV cache, and without flash attention most of
it is the KQ matrix of all cells in use. The second figure is what a busy
instance holds, so the ratios are against it. Targets (issue 9): estimate
within 15 % of the measured RSS, the post-start figure within 5 %. Two
post-start figures are shown: the logged buffers alone, and what llamactl
shows as ``reported_bytes``: the buffers and the estimate's allowance for
what no buffer line covers (the process itself, a work buffer without flash
attention).
About two minutes, most of it the full-context prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamactl.backends import get_backend
from llamactl.backends.llama_cpp.memory_report import ReportedMemory
from llamactl.instance.memory_probe import MeasuredMemory, measure_process_tree
from llamactl.models.memory_estimate import MemoryEstimate
from llamactl.models.model_memory import estimate_model_memory
from tests.backends.test_llama_cpp_memory_report import running_llama_server, write_random_llama_gguf
from tests.models.gguf_files import BIG, MID, LlamaShape

MIB = 1024 * 1024
LLAMA_CPP = get_backend("llama_cpp")
UBATCH = 512
TRAINING_CONTEXT = 16384
"""Written into each model: llama-server caps a slot at it, and a full-context prompt needs a whole slot."""


@dataclass(frozen=True)
class Case:
    name: str
    shape: LlamaShape
    context: int
    flash_attention: bool = True


_MID = dataclasses.replace(MID, context=TRAINING_CONTEXT)
_BIG = dataclasses.replace(BIG, context=TRAINING_CONTEXT)
CASES = (
    Case("mid, -c 4096", _MID, 4096),
    Case("mid, -c 4096 -fa off", _MID, 4096, flash_attention=False),
    Case("mid, -c 8192", _MID, 8192),
    Case("big, -c 4096", _BIG, 4096),
)


@dataclass(frozen=True)
class Result:
    case: Case
    estimate: MemoryEstimate
    reported: ReportedMemory
    after_small: MeasuredMemory
    after_full: MeasuredMemory


def run_case(case: Case, model: Path) -> Result:
    # One slot: the full-context prompt then has every cell.
    arguments = ["-c", str(case.context), "-ub", str(UBATCH), "-np", "1", "-t", "2"]
    arguments += ["-fa", "on" if case.flash_attention else "off"]
    # As llamactl estimates before a start: the adapter reads the flags, the header gives the rest.
    inputs = LLAMA_CPP.memory_inputs(LLAMA_CPP.options_from_arguments(["-m", str(model), *arguments]))
    assert inputs is not None
    estimate = estimate_model_memory(inputs)
    assert estimate is not None
    with (
        running_llama_server(model, *arguments) as server,
        httpx.Client(base_url=server.base_url, timeout=600) as client,
    ):
        reported = server.parser.report
        if reported is None:
            raise SystemExit(f"{case.name}: llama-server logged no buffer sizes")
        complete(client, "hi")
        after_small = measure_process_tree(server.process.pid)
        # Token ids, so the prompt's length is exact: all cells but a few for the answer.
        token = client.post("/tokenize", json={"content": "a"}).json()["tokens"][0]
        complete(client, [token] * (case.context - 8))
        after_full = measure_process_tree(server.process.pid)
    return Result(case, estimate, reported, after_small, after_full)


def complete(client: httpx.Client, prompt: str | list[int]) -> None:
    body = {"prompt": prompt, "max_tokens": 2, "temperature": 0}
    client.post("/v1/completions", json=body).raise_for_status()


def mib(size: int | None) -> str:
    return "-" if size is None else f"{size / MIB:8.2f}"


def print_results(results: list[Result]) -> None:
    print(f"memory estimate accuracy, llama-server on the CPU, n_ubatch {UBATCH}, one slot (MiB)")
    print(
        f"{'case':<20} {'estimate':>8} {'buffers':>8} {'reported':>8} {'RSS small':>9} {'RSS full':>8}"
        f" {'PSS full':>8}  {'est/RSS':>7} {'buf/RSS':>7} {'rep/RSS':>10}"
    )
    for result in results:
        estimate, full = result.estimate, result.after_full.rss_bytes
        reported = result.reported.total_bytes
        post_start = reported + estimate.extra_bytes  # what llamactl shows as reported_bytes
        print(
            f"{result.case.name:<20} {mib(estimate.total_bytes)} {mib(reported)} {mib(post_start)}"
            f"  {mib(result.after_small.rss_bytes)} {mib(full)} {mib(result.after_full.pss_bytes)}"
            f"  {estimate.total_bytes / full:7.3f} {reported / full:7.3f} {post_start / full:10.3f}"
        )
    print()
    print("by part, estimate / reported (MiB); the last column: the estimate's extra / RSS full - reported")
    print(f"{'case':<20} {'weights':>17} {'KV cache':>17} {'compute':>17} {'output':>8} {'extra':>17}")
    for result in results:
        estimate, buffers = result.estimate, result.reported
        unreported = result.after_full.rss_bytes - buffers.total_bytes
        print(
            f"{result.case.name:<20} {mib(estimate.weights_bytes)}/{mib(buffers.model_bytes)}"
            f" {mib(estimate.kv_cache_bytes)}/{mib(buffers.kv_cache_bytes)}"
            f" {mib(estimate.compute_bytes)}/{mib(buffers.compute_bytes)}"
            f" {mib(buffers.output_bytes)} {mib(estimate.extra_bytes)}/{mib(unreported)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=len(CASES), help="run only the first N cases")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        models: dict[LlamaShape, Path] = {}
        for case in CASES[: args.cases]:
            if case.shape not in models:
                models[case.shape] = Path(scratch) / f"model-{len(models)}.gguf"
                write_random_llama_gguf(models[case.shape], case.shape)
            results.append(run_case(case, models[case.shape]))
    print_results(results)


if __name__ == "__main__":
    main()
